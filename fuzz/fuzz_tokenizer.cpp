// libFuzzer target for the tokenizer (models/tiny's tokenizer.json: DeepSeek-V3's pre-tokenizer
// regexes, byte-level BPE, special tokens). Arbitrary bytes: valid UTF-8 must round-trip,
// decode(encode(s)) == s, and the streaming decoder must emit the same text in valid UTF-8
// pieces; anything else must be rejected with helix::Error. The bytes read as token ids must
// decode to valid UTF-8 (lossy). Anything else escaping, or a sanitizer report, is a crash.
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {

const helix::Tokenizer& tok() {
  static const helix::Tokenizer t = helix::Tokenizer::load(HELIX_FUZZ_TOKENIZER_DIR);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const helix::Tokenizer& t = tok();
  if (helix::utf8_invalid_at(s) == std::string::npos) {
    const std::vector<int> ids = t.encode(s, false);
    if (t.decode(ids) != s) __builtin_trap();
    helix::StreamDecoder sd(t);
    std::string streamed;
    for (int id : ids) {
      const std::string piece = sd.push(id);
      if (helix::utf8_invalid_at(piece) != std::string::npos) __builtin_trap();
      streamed += piece;
    }
    streamed += sd.finish();
    if (streamed != s) __builtin_trap();
    const std::vector<int> with_bos = t.encode(s, true);
    if (with_bos.size() != ids.size() + 1 || with_bos[0] != t.bos_id()) __builtin_trap();
    const std::string chat = t.render_chat({{"user", s, {}}}, true);
    if (t.decode(t.encode(chat, false)) != chat) __builtin_trap();
  } else {
    bool threw = false;
    try {
      t.encode(s, true);
    } catch (const helix::Error&) {
      threw = true;
    }
    if (!threw) __builtin_trap();
  }
  // The bytes as ids (2 bytes each, within the vocab): lossy decode is always valid UTF-8.
  std::vector<int> ids;
  for (size_t i = 0; i + 1 < size; i += 2)
    ids.push_back((data[i] | data[i + 1] << 8) % t.vocab_size());
  const std::string text = t.decode(ids);
  if (helix::utf8_invalid_at(text) != std::string::npos) __builtin_trap();
  return 0;
}
