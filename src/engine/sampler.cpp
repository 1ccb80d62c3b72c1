#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace helix {

void sampling_validate(const SamplingConfig& c) {
  if (!std::isfinite(c.temperature) || c.temperature < 0 || c.temperature > 1000)
    fail("--temperature must be a finite number in [0, 1000], got {}", c.temperature);
  if (!std::isfinite(c.top_p) || c.top_p < 0 || c.top_p > 1)
    fail("--top-p must be a finite number in [0, 1], got {}", c.top_p);
  if (c.top_k < 0) fail("--top-k must be >= 0, got {}", c.top_k);
}

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

int Sampler::sample(const float* logits, int vocab) {
  if (cfg_.temperature <= 0.0f) return argmax(logits, vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  const double mx = logits[argmax(logits, vocab)];
  double sum = 0;
  for (int i = 0; i < vocab; ++i) {
    p[i] = std::exp((logits[i] - mx) / cfg_.temperature);
    sum += p[i];
  }
  std::vector<int> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  // top_k: the first top_k of that order compete, their mass renormalised (top_k 0 leaves the
  // arithmetic as it was).
  size_t cand = order.size();
  if (cfg_.top_k > 0 && cfg_.top_k < vocab) {
    cand = static_cast<size_t>(cfg_.top_k);
    sum = 0;
    for (size_t i = 0; i < cand; ++i) sum += p[order[i]];
  }
  // Smallest prefix whose mass reaches top_p; always at least one token.
  double mass = 0;
  size_t keep = 0;
  while (keep < cand) {
    mass += p[order[keep]] / sum;
    ++keep;
    if (mass >= cfg_.top_p) break;
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[order[i]];
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace helix
