#include "server/codec.h"

#include "server/api.h"

namespace helix::server {

namespace {

class NoText : public TextStream {
 public:
  std::string push(int) override { return {}; }
  std::string flush() override { return {}; }
};

class IdCodec : public TextCodec {
 public:
  bool has_text() const override { return false; }
  std::vector<int> encode(const std::string&) const override {
    throw ApiError(422, "this model has no tokenizer (tokenizer.json): give the prompt as ids",
                   "prompt", "no_tokenizer");
  }
  std::vector<int> encode_chat(
      const std::vector<std::pair<std::string, std::string>>&) const override {
    throw ApiError(422, "this model has no tokenizer (tokenizer.json): chat needs one", "messages",
                   "no_tokenizer");
  }
  std::unique_ptr<TextStream> stream() const override { return std::make_unique<NoText>(); }
};

}  // namespace

std::shared_ptr<TextCodec> codec_load(const std::string& model_dir) {
  return std::make_shared<IdCodec>();
}

}  // namespace helix::server
