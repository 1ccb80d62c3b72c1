#include <vector>

#include "ops/ops.h"

namespace helix {

void rope_apply(float* x, int n, int stride, int dim, const float* cos_sin, bool interleave) {
  const int half = dim / 2;
  const float* c = cos_sin;
  const float* s = cos_sin + half;
  std::vector<float> tmp(static_cast<size_t>(dim));
  for (int v = 0; v < n; ++v) {
    float* xv = x + static_cast<int64_t>(v) * stride;
    for (int i = 0; i < half; ++i) {
      // interleave: pair (x[2i], x[2i+1]); rotate_half: pair (x[i], x[i+half]).
      const float a = interleave ? xv[2 * i] : xv[i];
      const float b = interleave ? xv[2 * i + 1] : xv[i + half];
      tmp[i] = a * c[i] - b * s[i];
      tmp[i + half] = b * c[i] + a * s[i];
    }
    for (int i = 0; i < dim; ++i) xv[i] = tmp[i];
  }
}

}  // namespace helix
