#include "ops/ops.h"

namespace helix {

void rms_norm(const float* x, const float* w, float* y, int rows, int dim, float eps, int ldx,
              int ldy) {
  if (ldx < 0) ldx = dim;
  if (ldy < 0) ldy = dim;
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * ldx;
    float* yr = y + static_cast<int64_t>(r) * ldy;
    float ss = 0.0f;
    for (int i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

}  // namespace helix
