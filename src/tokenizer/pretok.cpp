// The pre-tokenizer (Split steps on PCRE2 regexes), the added-token trie and BPE merging.
#include <queue>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace helix {

Regex::Regex(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                           PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr));
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("tokenizer: bad regex '{}' at offset {}: {}", pattern, off, reinterpret_cast<char*>(msg));
  }
  // JIT is an optimisation only: without it (or where it is not built in) the interpreter runs.
  pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE);
}

MatchState::MatchState() {
  md = pcre2_match_data_create(16, nullptr);
  mc = pcre2_match_context_create(nullptr);
  js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
  if (js) pcre2_jit_stack_assign(mc, nullptr, js);
  HELIX_CHECK(md && mc, "tokenizer: out of memory for PCRE2 match data");
}

MatchState::~MatchState() {
  if (js) pcre2_jit_stack_free(js);
  pcre2_match_context_free(mc);
  pcre2_match_data_free(md);
}

void Trie::insert(const std::string& s, int id) {
  int n = 0;
  for (unsigned char c : s) {
    auto it = nodes[n].next.find(c);
    if (it == nodes[n].next.end()) {
      nodes.emplace_back();
      const int k = static_cast<int>(nodes.size()) - 1;
      nodes[n].next[c] = k;
      n = k;
    } else {
      n = it->second;
    }
  }
  nodes[n].id = id;
}

std::pair<size_t, int> Trie::longest(std::string_view text, size_t pos) const {
  std::pair<size_t, int> best{0, -1};
  int n = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = nodes[n].next.find(static_cast<uint8_t>(text[i]));
    if (it == nodes[n].next.end()) break;
    n = it->second;
    if (nodes[n].id >= 0) best = {i + 1 - pos, nodes[n].id};
  }
  return best;
}

namespace {

using Span = std::pair<size_t, size_t>;

// Matches of re in text[begin, end) (the regex sees only that piece, as HF's find_iter does),
// as (span, is_match) covering the piece.
void find_matches(const Regex& re, std::string_view text, size_t begin, size_t end, MatchState& ms,
                  std::vector<std::pair<Span, bool>>& out) {
  out.clear();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + begin);
  const size_t len = end - begin;
  size_t pos = 0, last = 0;
  while (pos <= len) {
    const int rc = pcre2_match(re.code.get(), subject, len, pos, PCRE2_NO_UTF_CHECK, ms.md, ms.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("tokenizer: regex match failed: {}", reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.md);
    const size_t s = ov[0], e = ov[1];
    if (e == s) {  // empty match: not a piece; step over one character
      if (s >= len) break;
      pos = s + 1;
      while (pos < len && (static_cast<uint8_t>(subject[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (s > last) out.push_back({{begin + last, begin + s}, false});
    out.push_back({{begin + s, begin + e}, true});
    last = pos = e;
  }
  if (last < len) out.push_back({{begin + last, end}, false});
}

}  // namespace

void Tokenizer::Impl::pretokenize(std::string_view text, size_t begin, size_t end, MatchState& ms,
                                  std::vector<Span>& pieces) const {
  pieces.assign(1, {begin, end});
  std::vector<Span> next;
  std::vector<std::pair<Span, bool>> m;
  for (const SplitStep& st : splits) {
    next.clear();
    for (const Span& p : pieces) {
      find_matches(*st.re, text, p.first, p.second, ms, m);
      if (st.invert)
        for (auto& x : m) x.second = !x.second;
      using B = SplitStep::Behavior;
      switch (st.behavior) {
        case B::Isolated:
          for (const auto& x : m) next.push_back(x.first);
          break;
        case B::Removed:
          for (const auto& x : m)
            if (!x.second) next.push_back(x.first);
          break;
        case B::MergedWithPrevious: {
          bool prev_match = false;
          const size_t first = next.size();
          for (const auto& x : m) {
            if (x.second && !prev_match && next.size() > first)
              next.back().second = x.first.second;
            else
              next.push_back(x.first);
            prev_match = x.second;
          }
          break;
        }
        case B::MergedWithNext: {
          bool prev_match = false;
          std::vector<Span> tmp;
          for (auto it = m.rbegin(); it != m.rend(); ++it) {
            if (it->second && !prev_match && !tmp.empty())
              tmp.back().first = it->first.first;
            else
              tmp.push_back(it->first);
            prev_match = it->second;
          }
          next.insert(next.end(), tmp.rbegin(), tmp.rend());
          break;
        }
        case B::Contiguous: {
          bool prev_match = false;
          const size_t first = next.size();
          for (const auto& x : m) {
            if (x.second && prev_match && next.size() > first)
              next.back().second = x.first.second;
            else
              next.push_back(x.first);
            prev_match = x.second;
          }
          break;
        }
      }
    }
    pieces.swap(next);
  }
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    std::string mapped;
    for (unsigned char c : word) mapped += byte_to_char[c];
    auto it = token_to_id.find(mapped);
    if (it != token_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols in a doubly linked list; candidate merges in a min-heap by (rank, position). A
  // popped candidate is stale when its left symbol was merged away or its right neighbour
  // changed since it was pushed: then the pair no longer gives the recorded id.
  struct Sym {
    int id, prev, next;
    bool alive;
  };
  std::vector<Sym> sym;
  sym.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const int id = byte_id[static_cast<uint8_t>(word[i])];
    if (id < 0) continue;  // a byte the vocab lacks: dropped, as BPE without unk_token does
    const int k = static_cast<int>(sym.size());
    sym.push_back({id, k - 1, k + 1, true});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  struct Cand {
    int rank, pos, right, new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int l) {
    if (l < 0) return;
    const int r = sym[l].next;
    if (r < 0) return;
    auto it = merges.find(uint64_t(uint32_t(sym[l].id)) << 32 | uint32_t(sym[r].id));
    if (it != merges.end()) heap.push({it->second.first, l, r, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = sym[c.pos];
    if (!l.alive || l.next != c.right || !sym[c.right].alive) continue;
    auto it = merges.find(uint64_t(uint32_t(l.id)) << 32 | uint32_t(sym[c.right].id));
    if (it == merges.end() || it->second.second != c.new_id) continue;
    Sym& r = sym[c.right];
    l.id = c.new_id;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.pos;
    r.alive = false;
    push(l.prev);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace helix
