#include "ops/ops.h"

namespace helix {

void attn_combine(const AttnCombineParams& p) {
  const int64_t rows = p.rows, dim = p.dim;
  for (int64_t r = 0; r < rows; ++r) {
    SoftmaxState st;
    for (int i = 0; i < p.num_parts; ++i) st.merge(p.lse[i * rows + r]);
    float* o = p.out + r * dim;
    for (int64_t d = 0; d < dim; ++d) o[d] = 0.0f;
    for (int i = 0; i < p.num_parts; ++i) {
      const float w = st.weight_of(p.lse[i * rows + r]);
      if (w == 0.0f) continue;  // also skips -inf parts, whose outputs are never read
      const float* part = p.parts + (i * rows + r) * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] += w * part[d];
    }
    if (p.out_lse) p.out_lse[r] = st.lse;
  }
}

}  // namespace helix
