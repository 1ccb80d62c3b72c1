#pragma once
// Token sampling from one row of logits: greedy when temperature == 0, else temperature +
// nucleus (top-p) sampling with a seeded generator.
#include <cstdint>
#include <random>

namespace helix {

struct SamplingConfig {
  int max_new_tokens = 16;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool ignore_eos = false;
};

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {}
  // logits [vocab]
  int sample(const float* logits, int vocab);

 private:
  SamplingConfig cfg_;
  std::mt19937_64 rng_;
};

// Index of the largest value; the first one on ties (as torch.argmax).
int argmax(const float* x, int n);

}  // namespace helix
