// Loading tokenizer.json / tokenizer_config.json, encode and decode.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "tokenizer/tokenizer_impl.h"

namespace helix {

namespace {

using json = nlohmann::json;

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's byte -> printable character table that ByteLevel uses: printable Latin-1 bytes map
// to themselves, the others to U+0100 onwards in byte order.
void byte_level_table(Tokenizer::Impl& t) {
  uint32_t n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const uint32_t cp = keep ? b : 256 + n++;
    t.byte_to_char[b] = utf8_of(cp);
    t.char_to_byte[cp] = static_cast<uint8_t>(b);
  }
}

json read_json(const std::filesystem::path& p) {
  // Regular files only (a FIFO would block in open); errors name the file.
  const std::string text = file_read_text(p.string());
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("tokenizer: {}: malformed JSON: {}", p.string(), printable(e.what()));
  }
}

// Where `what` in file is not what we support: one message naming both.
[[noreturn]] void unsupported(const std::string& file, const std::string& what) {
  fail("tokenizer: {}: unsupported {}", file, what);
}

// GPT-2's own split, used when a ByteLevel pre-tokenizer has use_regex true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void add_pretokenizer(Tokenizer::Impl& t, const json& pt, const std::string& file) {
  if (pt.is_null()) return;
  const std::string type = pt.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : pt.at("pretokenizers")) add_pretokenizer(t, p, file);
  } else if (type == "Split") {
    SplitStep st;
    const json& pat = pt.at("pattern");
    std::string re;
    if (pat.contains("Regex")) {
      re = pat["Regex"].get<std::string>();
    } else if (pat.contains("String")) {
      re = "\\Q" + pat["String"].get<std::string>() + "\\E";
    } else {
      unsupported(file, "Split pattern " + pat.dump());
    }
    st.re = std::make_unique<Regex>(re);
    const std::string b = pt.value("behavior", "Isolated");
    using B = SplitStep::Behavior;
    if (b == "Isolated")
      st.behavior = B::Isolated;
    else if (b == "Removed")
      st.behavior = B::Removed;
    else if (b == "MergedWithPrevious")
      st.behavior = B::MergedWithPrevious;
    else if (b == "MergedWithNext")
      st.behavior = B::MergedWithNext;
    else if (b == "Contiguous")
      st.behavior = B::Contiguous;
    else
      unsupported(file, "Split behavior " + b);
    st.invert = pt.value("invert", false);
    t.splits.push_back(std::move(st));
  } else if (type == "ByteLevel") {
    if (pt.value("add_prefix_space", false)) unsupported(file, "ByteLevel add_prefix_space true");
    if (pt.value("use_regex", true)) {
      SplitStep st;
      st.re = std::make_unique<Regex>(kGpt2Pattern);
      t.splits.push_back(std::move(st));
    }
  } else {
    unsupported(file, "pre_tokenizer type '" + type + "'");
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  auto t = std::make_shared<Impl>();
  const fs::path tj_path = fs::path(dir) / "tokenizer.json";
  const std::string file = tj_path.string();
  const json tj = read_json(tj_path);
  try {
    const json& model = tj.at("model");
    if (model.value("type", "BPE") != "BPE") unsupported(file, "model type");
    if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() &&
        model["byte_fallback"].get<bool>())
      unsupported(file, "BPE byte_fallback");
    const json& norm = tj.value("normalizer", json());
    if (!norm.is_null() &&
        !(norm.value("type", "") == "Sequence" && norm.value("normalizers", json::array()).empty()))
      unsupported(file, "normalizer " + norm.dump());
    const json& dec = tj.value("decoder", json());
    if (!dec.is_null() && dec.value("type", "") != "ByteLevel")
      unsupported(file, "decoder " + dec.dump());
    t->ignore_merges = model.value("ignore_merges", false);
    byte_level_table(*t);

    auto set_token = [&](const std::string& s, int id) {
      HELIX_CHECK(id >= 0 && id < (1 << 24), "tokenizer: {}: token id {} out of range", file, id);
      if (static_cast<size_t>(id) >= t->id_to_token.size()) {
        t->id_to_token.resize(id + 1);
        t->added.resize(id + 1, 0);
        t->special.resize(id + 1, 0);
      }
      t->id_to_token[id] = s;
      t->token_to_id[s] = id;
    };
    for (const auto& [s, id] : model.at("vocab").items()) set_token(s, id.get<int>());
    for (int b = 0; b < 256; ++b) {
      auto it = t->token_to_id.find(t->byte_to_char[b]);
      t->byte_id[b] = it == t->token_to_id.end() ? -1 : it->second;
    }
    const json& merges = model.at("merges");
    int rank = 0;
    for (const auto& m : merges) {
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("tokenizer: {}: merge '{}' is not two tokens", file, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {  // ["a", "b"]
        if (!m.is_array() || m.size() != 2) fail("tokenizer: {}: bad merge {}", file, m.dump());
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      }
      auto ia = t->token_to_id.find(a), ib = t->token_to_id.find(b),
           iab = t->token_to_id.find(a + b);
      if (ia == t->token_to_id.end() || ib == t->token_to_id.end() || iab == t->token_to_id.end())
        fail("tokenizer: {}: merge '{} {}' names a token not in the vocab", file, a, b);
      const uint64_t key = uint64_t(uint32_t(ia->second)) << 32 | uint32_t(ib->second);
      t->merges.emplace(key, std::make_pair(rank++, iab->second));  // first (lowest) rank wins
    }
    for (const auto& at : tj.value("added_tokens", json::array())) {
      const std::string content = at.at("content").get<std::string>();
      const int id = at.at("id").get<int>();
      for (const char* k : {"lstrip", "rstrip", "single_word"})  // matching rules not implemented
        if (at.value(k, false)) unsupported(file, std::string("added token with ") + k + " true");
      set_token(content, id);
      t->added[id] = 1;
      t->special[id] = at.value("special", false) ? 1 : 0;
      (at.value("normalized", false) ? t->added_normalized : t->added_raw).insert(content, id);
    }
    add_pretokenizer(*t, tj.value("pre_tokenizer", json()), file);
  } catch (const json::exception& e) {
    fail("tokenizer: {}: {}", file, e.what());
  }

  const fs::path cfg_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    const json cfg = read_json(cfg_path);
    auto token_text = [&](const char* key) -> std::string {
      if (!cfg.contains(key) || cfg[key].is_null()) return "";
      if (cfg[key].is_string()) return cfg[key].get<std::string>();
      if (cfg[key].is_object() && cfg[key].contains("content") && cfg[key]["content"].is_string())
        return cfg[key]["content"].get<std::string>();
      fail("tokenizer: {}: '{}' is neither a string nor a token object", cfg_path.string(), key);
    };
    t->bos_text = token_text("bos_token");
    t->eos_text = token_text("eos_token");
    auto flag = [&](const char* key) {
      if (!cfg.contains(key) || cfg[key].is_null()) return false;
      if (!cfg[key].is_boolean())
        fail("tokenizer: {}: '{}' is not a boolean", cfg_path.string(), key);
      return cfg[key].get<bool>();
    };
    t->add_bos = flag("add_bos_token");
    t->add_eos = flag("add_eos_token");
    for (auto [text, id] : {std::pair{&t->bos_text, &t->bos}, std::pair{&t->eos_text, &t->eos}}) {
      if (text->empty()) continue;
      auto it = t->token_to_id.find(*text);
      if (it == t->token_to_id.end())
        fail("tokenizer: {}: token '{}' is not in the vocab", cfg_path.string(), *text);
      *id = it->second;
    }
    if (t->add_bos && t->bos < 0)
      fail("tokenizer: {}: add_bos_token without bos_token", cfg_path.string());
  }
  Tokenizer tok;
  tok.impl_ = std::move(t);
  return tok;
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& t = *impl_;
  const size_t bad = utf8_invalid_at(text);
  if (bad != std::string_view::npos) fail("text is not valid UTF-8 (byte {})", bad);
  std::vector<int> out;
  if (add_special && t.add_bos) out.push_back(t.bos);

  // Added tokens first: the non-normalized ones over the whole text, then the normalized ones
  // over what is left (the two passes of HF's AddedVocabulary; without a normalizer they
  // differ only in priority).
  struct Seg {
    size_t b, e;
    int id;  // >= 0: an added token
  };
  std::vector<Seg> segs{{0, text.size(), -1}};
  for (const Trie* trie : {&t.added_raw, &t.added_normalized}) {
    if (trie->empty()) continue;
    std::vector<Seg> next;
    for (const Seg& s : segs) {
      if (s.id >= 0) {
        next.push_back(s);
        continue;
      }
      size_t last = s.b;
      for (size_t i = s.b; i < s.e;) {
        auto [len, id] = trie->longest(text.substr(0, s.e), i);
        if (id < 0) {
          ++i;
          continue;
        }
        if (i > last) next.push_back({last, i, -1});
        next.push_back({i, i + len, id});
        i += len;
        last = i;
      }
      if (last < s.e) next.push_back({last, s.e, -1});
    }
    segs.swap(next);
  }

  MatchState ms;
  std::vector<std::pair<size_t, size_t>> pieces;
  std::unordered_map<std::string_view, std::vector<int>> cache;  // per call: words repeat
  for (const Seg& s : segs) {
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    t.pretokenize(text, s.b, s.e, ms, pieces);
    for (auto [b, e] : pieces) {
      const std::string_view w = text.substr(b, e - b);
      if (w.size() > 64) {  // long words are rare; not worth keeping
        t.bpe(w, out);
        continue;
      }
      auto it = cache.find(w);
      if (it == cache.end()) {
        std::vector<int> ids;
        t.bpe(w, ids);
        it = cache.emplace(w, std::move(ids)).first;
      }
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
  }
  if (add_special && t.add_eos && t.eos >= 0) out.push_back(t.eos);
  return out;
}

std::string Tokenizer::token_bytes(int id) const {
  const Impl& t = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= t.id_to_token.size() ||
      (t.id_to_token[id].empty() && !t.added[id]))
    fail("token id {} is not in the tokenizer's vocab (size {})", id, t.id_to_token.size());
  const std::string& s = t.id_to_token[id];
  // ByteLevel decoding: every character maps back to a byte; a token with any other character
  // (added tokens' text) stands for its own UTF-8, as HF's ByteLevel decoder does.
  std::string bytes;
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80)
      cp = c, n = 1;
    else if ((c >> 5) == 6 && i + 1 < s.size())
      cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F), n = 2;
    else
      return s;
    auto it = t.char_to_byte.find(cp);
    if (it == t.char_to_byte.end()) return s;
    bytes += static_cast<char>(it->second);
    i += n;
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool skip_special) const {
  std::string bytes;
  for (int id : ids) {
    if (skip_special && is_special(id)) continue;
    bytes += token_bytes(id);
  }
  std::string out;
  utf8_lossy_append(bytes, out, true);
  return out;
}

int Tokenizer::bos_id() const {
  return impl_->bos;
}
int Tokenizer::eos_id() const {
  return impl_->eos;
}
bool Tokenizer::add_bos() const {
  return impl_->add_bos;
}
const std::string& Tokenizer::bos_token() const {
  return impl_->bos_text;
}
const std::string& Tokenizer::eos_token() const {
  return impl_->eos_text;
}
int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->id_to_token.size());
}
bool Tokenizer::is_special(int id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}
int Tokenizer::token_id(const std::string& token) const {
  auto it = impl_->token_to_id.find(token);
  return it == impl_->token_to_id.end() ? -1 : it->second;
}

}  // namespace helix
