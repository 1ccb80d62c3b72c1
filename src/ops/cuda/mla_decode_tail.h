#pragma once
// Several query tokens per sequence (speculative decoding) in mla_decode_bf16_cuda. The q_len
// query tokens of a sequence fold into the heads (q [B, q_len, H, L + R] is [B, q_len * H, L + R]),
// so the split kernels read each KV tile once for all of them; they run over the prefix every query
// token sees (seq_lens - (q_len - 1), Args::seq_len_trim). Query j also sees the next j tokens:
// this kernel adds those (at most q_len - 1 per row) to the split kernels' (out, lse) in place,
// with the same log-sum-exp merge as the combine. One warp per row, fp32.
#include <cuda_runtime.h>

#include "ops/cuda/mla_decode_bf16_args.h"

namespace helix::cuda::mla_tail {

constexpr int kMaxQLen = 8;

// a: the split launch's arguments (num_heads = heads * q_len, seq_len_trim = q_len - 1).
// row_bytes: one pool row (mla_kv_row_bytes). Only rows with tokens past the prefix change.
cudaError_t launch(const mla_bf16::Args& a, int heads, int q_len, int kv_lora_rank, int rope_dim,
                   bool fp8, size_t row_bytes, cudaStream_t stream);

}  // namespace helix::cuda::mla_tail
