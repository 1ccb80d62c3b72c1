#include "server/codec.h"

#include <filesystem>

#include "core/error.h"
#include "server/api.h"
#include "tokenizer/tokenizer.h"

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

class TokStream : public TextStream {
 public:
  explicit TokStream(const Tokenizer& t) : dec_(t, /*skip_special=*/true) {}
  std::string push(int id) override { return dec_.push(id); }
  std::string flush() override { return dec_.finish(); }

 private:
  StreamDecoder dec_;
};

// The model directory's tokenizer.json: text prompts, chat, and text completions.
class TokenizerCodec : public TextCodec {
 public:
  explicit TokenizerCodec(Tokenizer t) : tok_(std::move(t)) {}
  bool has_text() const override { return true; }
  std::vector<int> encode(const std::string& text) const override {
    try {
      return tok_.encode(text, /*add_special=*/true);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "prompt", "invalid_text");
    }
  }
  std::vector<int> encode_chat(
      const std::vector<std::pair<std::string, std::string>>& messages) const override {
    std::vector<ChatMessage> m;
    for (const auto& [role, content] : messages) {
      ChatMessage c;
      c.role = role;
      c.content = content;
      m.push_back(std::move(c));
    }
    try {
      // The rendered prompt starts with bos already.
      return tok_.encode(tok_.render_chat(m, /*add_generation_prompt=*/true), false);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages", "invalid_text");
    }
  }
  std::unique_ptr<TextStream> stream() const override { return std::make_unique<TokStream>(tok_); }

 private:
  Tokenizer tok_;
};

}  // namespace

std::shared_ptr<TextCodec> codec_load(const std::string& model_dir) {
  if (std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json"))
    return std::make_shared<TokenizerCodec>(Tokenizer::load(model_dir));
  return std::make_shared<IdCodec>();
}

}  // namespace helix::server
