#pragma once
// Text <-> token ids for Hugging Face byte-level BPE tokenizers (DeepSeek-V3's tokenizer.json):
// added/special tokens matched first (leftmost-longest), then the pre-tokenizer's Split regexes
// (PCRE2, UTF + UCP), ByteLevel byte->char mapping, BPE by merge rank, ByteLevel decoding.
// Also the streaming decoder (never emits half a UTF-8 character) and DeepSeek-V3's chat format.
//
// Input text must be valid UTF-8: encode() throws helix::Error otherwise (the CLI reports it as
// a bad-input error). decode() of ids whose bytes are not valid UTF-8 replaces each maximal
// invalid subsequence by U+FFFD, like HF tokenizers (Rust's from_utf8_lossy).
// Supported: normalizer none (or an empty Sequence), pre_tokenizer Sequence/Split/ByteLevel
// (add_prefix_space false), model BPE (merges "a b" or ["a", "b"], ignore_merges), decoder
// ByteLevel, added tokens without lstrip/rstrip/single_word; anything else fails to load with
// a message naming it rather than giving different ids.
// A Tokenizer is cheap to copy (shared, immutable state) and safe to use from several threads.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace helix {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, inserted verbatim
};

struct ChatMessage {
  std::string role;                    // "system", "user", "assistant" or "tool"
  std::optional<std::string> content;  // none only for an assistant turn with tool_calls
  std::vector<ToolCall> tool_calls;
};

// OpenAI-style messages: [{"role": ..., "content": "..." | null, "tool_calls": [{"type":
// "function", "function": {"name": ..., "arguments": "..."}}]}]. Throws helix::Error on a wrong
// shape or type.
std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& messages);

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos tokens,
  // add_bos_token). Throws helix::Error naming the file on a missing file or malformed JSON.
  static Tokenizer load(const std::string& dir);

  // add_special: prepend bos when the config says add_bos_token (and eos for add_eos_token).
  // Special tokens written in the text are always recognised.
  std::vector<int> encode(std::string_view text, bool add_special = true) const;
  // skip_special: leave out tokens marked special (bos, eos, ...).
  std::string decode(const std::vector<int>& ids, bool skip_special = false) const;

  int bos_id() const;  // -1 when the tokenizer has none
  int eos_id() const;
  bool add_bos() const;
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  int vocab_size() const;  // 1 + the largest id (model vocab and added tokens)
  bool is_special(int id) const;
  // The raw bytes id stands for (added tokens: their text). Throws on an unknown id.
  std::string token_bytes(int id) const;
  // The id of one token string as it appears in tokenizer.json, or -1.
  int token_id(const std::string& token) const;

  // DeepSeek-V3's chat template (tokenizer_config.json of deepseek-ai/DeepSeek-V3), rendered
  // exactly as its Jinja does, with this tokenizer's bos text. The result is text that
  // encode(..., add_special=false) turns into ids (it starts with bos already).
  std::string render_chat(const std::vector<ChatMessage>& messages,
                          bool add_generation_prompt) const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// Incremental detokenisation for streaming: push() returns the text that became complete; a
// UTF-8 character split over tokens comes out whole once its last byte arrives. The
// concatenation of every push() and finish() equals decode() of all ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  std::string push(int id);
  std::string finish();  // flushes bytes that can no longer complete (as U+FFFD)

 private:
  Tokenizer tok_;
  bool skip_special_;
  std::string pending_;
};

// Appends src to out with every maximal invalid UTF-8 subsequence replaced by U+FFFD. When
// at_end is false, an incomplete but so far valid sequence at the end is not consumed: the
// return value is the number of bytes of src consumed.
size_t utf8_lossy_append(std::string_view src, std::string& out, bool at_end);
// Offset of the first byte that is not valid UTF-8, or npos.
size_t utf8_invalid_at(std::string_view s);

}  // namespace helix
