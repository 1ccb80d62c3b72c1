#pragma once
// The tokenizer's loaded state, shared by tokenizer.cpp (load, encode, decode), bpe.cpp and
// pretok.cpp. Immutable after load.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace helix {

// A compiled PCRE2 pattern (UTF + UCP, JIT when the library has it).
struct Regex {
  std::unique_ptr<pcre2_code, void (*)(pcre2_code*)> code{nullptr, pcre2_code_free};
  explicit Regex(const std::string& pattern);
};

// Per-call matching state: match data and a JIT stack large enough for long inputs.
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  MatchState();
  ~MatchState();
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};

// One step of the pre-tokenizer Sequence that splits pieces by a regex.
struct SplitStep {
  enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };
  std::unique_ptr<Regex> re;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
};

// Byte trie over the added tokens' texts, for leftmost-longest matching.
struct Trie {
  struct Node {
    std::unordered_map<uint8_t, int> next;
    int id = -1;  // token ending here
  };
  std::vector<Node> nodes{1};
  void insert(const std::string& s, int id);
  // Longest token starting at text[pos]: {length, id}, or {0, -1}.
  std::pair<size_t, int> longest(std::string_view text, size_t pos) const;
  bool empty() const { return nodes.size() == 1; }
};

struct Tokenizer::Impl {
  std::unordered_map<std::string, int> token_to_id;  // model vocab and added tokens
  std::vector<std::string> id_to_token;              // "" for unused ids
  std::vector<uint8_t> added, special;               // per id
  std::array<std::string, 256> byte_to_char;         // ByteLevel: byte -> UTF-8 of its char
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  std::array<int, 256> byte_id{};  // id of the one-byte token, -1 if absent
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int, int>> merges;
  bool ignore_merges = false;
  std::vector<SplitStep> splits;
  Trie added_raw, added_normalized;  // added tokens with normalized false / true

  int bos = -1, eos = -1;
  std::string bos_text, eos_text;
  bool add_bos = false, add_eos = false;

  // BPE of one pre-tokenized word (raw bytes) appended to out.
  void bpe(std::string_view word, std::vector<int>& out) const;
  // The pre-tokenizer: pieces [begin, end) of text (byte offsets into it).
  void pretokenize(std::string_view text, size_t begin, size_t end, MatchState& ms,
                   std::vector<std::pair<size_t, size_t>>& pieces) const;
};

}  // namespace helix
