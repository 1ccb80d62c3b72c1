#pragma once
// What the server needs from a tokenizer: text -> ids, a chat prompt from messages, and ids ->
// text streamed without ever splitting a UTF-8 character. A model directory without tokenizer
// files gets the id-only codec: prompts as token ids, completions as ids (the `token_ids`
// field every choice carries) with empty text.
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace helix::server {

// Incremental detokenizer of one completion.
class TextStream {
 public:
  virtual ~TextStream() = default;
  // Text that became complete with this id (may be empty).
  virtual std::string push(int id) = 0;
  // What is left at the end (an incomplete character comes out as U+FFFD).
  virtual std::string flush() = 0;
};

class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual bool has_text() const = 0;
  // The prompt ids of a completion prompt (bos as the tokenizer's config says).
  virtual std::vector<int> encode(const std::string& text) const = 0;
  // The prompt ids of a conversation, with the assistant's turn opened.
  virtual std::vector<int> encode_chat(
      const std::vector<std::pair<std::string, std::string>>& messages) const = 0;
  virtual std::unique_ptr<TextStream> stream() const = 0;
};

// Loads the tokenizer of a model directory when there is one, else the id-only codec.
std::shared_ptr<TextCodec> codec_load(const std::string& model_dir);

}  // namespace helix::server
