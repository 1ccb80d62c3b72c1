#pragma once
// Access to the HF transformers fixtures in tests/fixtures (made by tools/make_fixtures.py).
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/npy.h"

namespace helix::test {

inline std::string fixture_dir(const std::string& name) {
  return std::string(HELIX_SOURCE_DIR) + "/tests/fixtures/" + name;
}

struct FixtureRef {
  std::vector<std::vector<int>> prompts;
  std::vector<std::vector<int>> greedy;
  std::vector<std::string> score, gen_logits;
  std::string dtype;
};

inline FixtureRef fixture_ref(const std::string& name) {
  std::ifstream f(fixture_dir(name) + "/ref.json");
  nlohmann::json j = nlohmann::json::parse(f);
  FixtureRef r;
  r.prompts = j["prompts"].get<std::vector<std::vector<int>>>();
  r.greedy = j["greedy"].get<std::vector<std::vector<int>>>();
  r.score = j["score"].get<std::vector<std::string>>();
  r.gen_logits = j["gen_logits"].get<std::vector<std::string>>();
  r.dtype = j["dtype"].get<std::string>();
  return r;
}

// ||a - b|| / ||b|| in float64.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return std::sqrt(num / den);
}

inline const std::vector<std::string>& all_fixtures() {
  static const std::vector<std::string> names = {"fp32_qnull",
                                                 "fp32_qlora_yarn_legacy",
                                                 "fp32_qlora_yarn_v5",
                                                 "bf16_qlora",
                                                 "bf16_qnull_legacy",
                                                 "fp32_skewed",
                                                 "fp16_bias_noshared_legacy",
                                                 "fp32_wide",
                                                 "tiny_kjv"};
  return names;
}

// Tolerance of the acceptance criteria: 1e-4 for fp32 checkpoints, 2e-3 for bf16 ones.
inline double score_tolerance(const std::string& dtype) {
  return dtype == "bfloat16" ? 2e-3 : 1e-4;
}

}  // namespace helix::test
