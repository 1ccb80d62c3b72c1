#include <algorithm>
#include "ops/ops.h"

namespace helix {

void attn_combine(const AttnCombineParams& p) {
  const int64_t rows = p.rows, dim = p.dim;
  for (int64_t r = 0; r < rows; ++r) {
    // DESIGN.md step 4: M = max lse_i, w_i = exp(lse_i - M) / sum_j exp(lse_j - M).
    float m = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < p.num_parts; ++i) m = std::max(m, p.lse[i * rows + r]);
    float* o = p.out + r * dim;
    for (int64_t d = 0; d < dim; ++d) o[d] = 0.0f;
    if (std::isinf(m)) {  // no part holds keys for this row: 0 output, never NaN
      if (p.out_lse) p.out_lse[r] = m;
      continue;
    }
    float sum = 0.0f;
    for (int i = 0; i < p.num_parts; ++i) sum += std::exp(p.lse[i * rows + r] - m);
    for (int i = 0; i < p.num_parts; ++i) {
      const float l = p.lse[i * rows + r];
      if (std::isinf(l)) continue;  // -inf parts' outputs are never read
      const float w = std::exp(l - m) / sum;
      const float* part = p.parts + (i * rows + r) * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] += w * part[d];
    }
    if (p.out_lse) p.out_lse[r] = m + std::log(sum);
  }
}

}  // namespace helix
