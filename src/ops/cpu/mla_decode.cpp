#include <vector>

#include "ops/ops.h"

namespace helix {

// Two passes over the local blocks: scores for all heads by one GEMM per block
// ([H, L+R] x [n, L+R]^T), then the softmax-weighted latent sum by one GEMM per block
// ([H, n] x [n, L]). The cache row [c, k_pe] and the query [q_abs, q_pe] share one layout,
// so the score needs no split.
void mla_decode(const MlaDecodeParams& p) {
  const int H = p.num_heads, L = p.kv_lora_rank, W = p.kv_lora_rank + p.rope_dim;
  int total = 0;
  std::vector<int> start(static_cast<size_t>(p.num_blocks) + 1, 0);
  for (int b = 0; b < p.num_blocks; ++b) {
    start[b] = total;
    total += p.block_len[b];
  }
  const float ninf = -std::numeric_limits<float>::infinity();
  if (total == 0) {
    for (int64_t i = 0; i < static_cast<int64_t>(H) * L; ++i) p.out[i] = 0.0f;
    for (int h = 0; h < H; ++h) p.lse[h] = ninf;
    return;
  }
  std::vector<float> s(static_cast<size_t>(H) * total);  // [H, total]
  for (int b = 0; b < p.num_blocks; ++b) {
    if (p.block_len[b] == 0) continue;
    matmul_strided(p.q, W, p.blocks[b], W, true, s.data() + start[b], total, H, p.block_len[b], W,
                   0.0f);
  }
  for (int h = 0; h < H; ++h) {
    float* sh = s.data() + static_cast<int64_t>(h) * total;
    float mx = ninf;
    for (int t = 0; t < total; ++t) {
      sh[t] *= p.scale;
      mx = std::max(mx, sh[t]);
    }
    float sum = 0.0f;
    for (int t = 0; t < total; ++t) {
      sh[t] = std::exp(sh[t] - mx);
      sum += sh[t];
    }
    const float inv = 1.0f / sum;
    for (int t = 0; t < total; ++t) sh[t] *= inv;
    p.lse[h] = mx + std::log(sum);
  }
  bool first = true;
  for (int b = 0; b < p.num_blocks; ++b) {
    if (p.block_len[b] == 0) continue;
    matmul_strided(s.data() + start[b], total, p.blocks[b], W, false, p.out, L, H, L,
                   p.block_len[b], first ? 0.0f : 1.0f);
    first = false;
  }
}

}  // namespace helix
