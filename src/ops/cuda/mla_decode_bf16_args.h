#pragma once
// Kernel arguments and per-(L, R) entry points of the bf16 / FP8-KV MLA decode (internal to
// ops/cuda/; the public API is mla_decode_bf16.h).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace helix::cuda::mla_bf16 {

struct Args {
  int batch = 0, num_heads = 0, block_size = 0, max_blocks_per_seq = 0, ctas_per_group = 0;
  float scale_log2 = 0.f;                // softmax scale * log2(e)
  const void* q = nullptr;               // bf16 [B, H, L + R]
  const uint8_t* kv_pool = nullptr;      // rows of mla_kv_row_bytes()
  const int32_t* block_table = nullptr;  // [B, max_blocks_per_seq]
  const int32_t* seq_lens = nullptr;     // [B]
  // q_len - 1 with q_len query tokens folded into the heads: the split kernels see the first
  // seq_lens[b] - seq_len_trim tokens, the prefix every query token sees (mla_decode_tail.h).
  int seq_len_trim = 0;
  void* out = nullptr;                   // [B, H, L] fp32 or bf16
  bool out_bf16 = false;
  float* lse = nullptr;       // [B, H]
  float* part_out = nullptr;  // [groups, ctas, 2, HG, L] split partials (normalised)
  float* part_lse = nullptr;  // [groups, ctas, 2, HG]
};

// Raises the split kernel's shared-memory limit for (hg, fp8, wgmma, max_batch); reports its
// dynamic shared memory and the CTAs per SM it reaches. wg: the wgmma kernel for hg 64 at L 512.
template <int L, int R>
cudaError_t prepare(int hg, bool fp8, bool wg, int max_batch, size_t* smem, int* ctas_per_sm);
// Split kernel on grid (ctas, groups), then the combine kernel.
template <int L, int R>
cudaError_t launch(const Args& a, int hg, bool fp8, bool wg, dim3 grid, size_t smem,
                   cudaStream_t stream);

}  // namespace helix::cuda::mla_bf16
