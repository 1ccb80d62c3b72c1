#pragma once
// Token sampling from one row of logits on the host: greedy when temperature == 0, else
// temperature + top-k + nucleus (top-p) sampling with a seeded generator. The CPU engine draws
// with it (one mt19937_64 per batch, in the order the ids are sampled); the CUDA engine samples
// on the GPU instead (ops/sample.h: the same distribution, counter-based draws per request).
#include <cstdint>
#include <random>

namespace helix {

struct SamplingConfig {
  int max_new_tokens = 16;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;  // 0: no limit; else only the top_k most probable tokens (before top_p)
  uint64_t seed = 0;
  bool ignore_eos = false;
};

// Throws helix::Error unless temperature is finite in [0, 1000], top_p finite in [0, 1] and
// top_k >= 0
// (a NaN would compare false everywhere and silently change what is drawn).
void sampling_validate(const SamplingConfig& cfg);

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {
    sampling_validate(cfg);
  }
  // logits [vocab]
  int sample(const float* logits, int vocab);
  const SamplingConfig& config() const { return cfg_; }

 private:
  SamplingConfig cfg_;
  std::mt19937_64 rng_;
};

// Index of the largest value; the first one on ties (as torch.argmax).
int argmax(const float* x, int n);

}  // namespace helix
