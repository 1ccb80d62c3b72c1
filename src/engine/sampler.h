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

// Throws helix::Error unless temperature is finite in [0, 1000] and top_p finite in [0, 1]
// (a NaN would compare false everywhere and silently change what is drawn).
void sampling_validate(const SamplingConfig& cfg);

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {
    sampling_validate(cfg);
  }
  // logits [vocab]
  int sample(const float* logits, int vocab);

 private:
  SamplingConfig cfg_;
  std::mt19937_64 rng_;
};

// Index of the largest value; the first one on ties (as torch.argmax).
int argmax(const float* x, int n);

}  // namespace helix
