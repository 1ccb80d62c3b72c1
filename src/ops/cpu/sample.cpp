// sample_row (ops/sample.h): the CPU reference of the CUDA sampling kernel. The thresholds are
// found the way the kernel finds them (bisection on the float bit pattern: positive floats order
// as their bits do), so both keep the same tokens; masses are summed in float64 here.
#include "ops/sample.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace helix {

namespace {
float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
}  // namespace

int sample_row(const float* l, int vocab, const SampleRow& r, float* tau_out) {
  int best = 0;
  for (int i = 0; i < vocab; ++i) {
    if (!std::isfinite(l[i])) return -1;
    if (l[i] > l[best]) best = i;
  }
  if (tau_out) *tau_out = 1.0f;
  if (!(r.temperature > 0.0f)) return best;
  const float mx = l[best], inv_t = 1.0f / r.temperature;
  std::vector<float> p(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) {
    p[i] = std::exp((l[i] - mx) * inv_t);
    if (p[i] < kSampleMinP) p[i] = 0.0f;  // never drawn (ops/sample.h)
  }
  auto count = [&](float tau) {
    int c = 0;
    for (float q : p) c += q >= tau;
    return c;
  };
  auto mass = [&](float tau) {
    double s = 0;
    for (float q : p)
      if (q >= tau) s += q;
    return s;
  };
  // The top token has p = 1: nothing reaches the float just above 1.
  const uint32_t above_one = bits_of(1.0f) + 1u;
  uint32_t lo = 0;
  if (r.top_k > 0 && r.top_k < vocab) {
    uint32_t hi = above_one;  // count(lo) >= top_k > count(hi)
    while (hi - lo > 1u) {
      const uint32_t mid = lo + (hi - lo) / 2u;
      if (count(from_bits(mid)) >= r.top_k)
        lo = mid;
      else
        hi = mid;
    }
  }
  if (r.top_p < 1.0f) {
    const double target = static_cast<double>(r.top_p) * mass(from_bits(lo));
    uint32_t hi = above_one;  // mass(lo) >= target > mass(hi)
    while (hi - lo > 1u) {
      const uint32_t mid = lo + (hi - lo) / 2u;
      if (mass(from_bits(mid)) >= target)
        lo = mid;
      else
        hi = mid;
    }
  }
  const float tau = from_bits(lo);
  if (tau_out) *tau_out = tau;
  const double u = static_cast<double>(sample_uniform(r)) * mass(tau);
  double acc = 0;
  for (int i = 0; i < vocab; ++i) {
    if (p[i] < tau) continue;
    acc += p[i];
    if (acc > u) return i;
  }
  return best;  // rounding: the top token is always kept
}

}  // namespace helix
