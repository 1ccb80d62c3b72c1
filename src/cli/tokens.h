#pragma once
// Parsing of `--tokens 1,2,3`.
#include <string>
#include <vector>

#include "core/error.h"

namespace helix::cli {

inline std::vector<int> parse_tokens(const std::string& s) {
  std::vector<int> out;
  size_t pos = 0;
  if (s.find_first_not_of(" ,") == std::string::npos)
    fail("--tokens is empty: give ids like 1,2,3");
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    std::string tok = s.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    const auto b = tok.find_first_not_of(' '), e = tok.find_last_not_of(' ');
    if (b == std::string::npos) fail("--tokens '{}': empty entry", s);
    tok = tok.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used != tok.size() || v < 0 || v > 0x7fffffff)
      fail("--tokens: '{}' is not a token id (non-negative integer)", tok);
    out.push_back(static_cast<int>(v));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  return out;
}

}  // namespace helix::cli
