// UTF-8 validation and lossy conversion (Unicode's "maximal subpart" substitution, as Rust's
// String::from_utf8_lossy does it, which is what HF tokenizers' decode returns), and the
// streaming decoder built on it.
#include <cstdint>

#include "tokenizer/tokenizer.h"

namespace helix {

namespace {

// Length of the valid UTF-8 prefix of s (0 when s[0] starts no valid sequence), and whether the
// sequence could still become valid with more bytes (s ends inside it).
struct Step {
  size_t valid = 0;         // > 0: a whole valid character of this many bytes
  size_t bad = 0;           // > 0: a maximal invalid subpart of this many bytes
  bool incomplete = false;  // a valid prefix that runs to the end of s
};

Step step(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t c = b(0);
  if (c < 0x80) return {1, 0, false};
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlongs
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return {0, 1, false};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= s.size()) return {0, 0, true};
    const uint8_t x = b(i);
    const bool ok = i == 1 ? (x >= lo && x <= hi) : (x >= 0x80 && x <= 0xBF);
    if (!ok) return {0, i, false};
  }
  return {need, 0, false};
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

}  // namespace

size_t utf8_lossy_append(std::string_view src, std::string& out, bool at_end) {
  size_t i = 0;
  while (i < src.size()) {
    const Step st = step(src.substr(i));
    if (st.valid) {
      out.append(src.substr(i, st.valid));
      i += st.valid;
    } else if (st.incomplete) {
      if (!at_end) return i;
      out.append(kReplacement);  // a truncated sequence at the end is one subpart
      return src.size();
    } else {
      out.append(kReplacement);
      i += st.bad;
    }
  }
  return i;
}

size_t utf8_invalid_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const Step st = step(s.substr(i));
    if (!st.valid) return i;
    i += st.valid;
  }
  return std::string_view::npos;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  std::string out;
  const size_t used = utf8_lossy_append(pending_, out, false);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out;
  utf8_lossy_append(pending_, out, true);
  pending_.clear();
  return out;
}

}  // namespace helix
