#pragma once
// Kernel arguments of the split-KV MLA decode (internal to ops/cuda/).
#include <cuda_runtime.h>

#include <cstdint>

namespace helix::cuda {

struct MlaDecodeSplitArgs {
  int batch = 0;               // B
  int num_heads = 0;           // H
  int kv_lora_rank = 0;        // L (the templated kernels ignore it)
  int rope_dim = 0;            // R (idem)
  int block_size = 0;          // tokens per KV block
  int max_blocks_per_seq = 0;  // columns of block_table
  int num_splits = 0;          // S, chunks per sequence
  int chunk_len = 0;           // tokens per chunk, a multiple of 32
  float scale = 1.0f;
  const float* q = nullptr;              // [B, H, L + R]
  const float* kv_pool = nullptr;        // [num_physical_blocks, block_size, L + R]
  const int32_t* block_table = nullptr;  // [B, max_blocks_per_seq]
  const int32_t* seq_lens = nullptr;     // [B]
  float* out = nullptr;                  // [S, B, H, L] partial outputs (final when S = 1)
  float* lse = nullptr;                  // [S, B, H] their log-sum-exp
};

// One instantiation per (L, R, HG) in its own mla_decode_l*_r*.cu file.
template <int L, int R, int HG>
cudaError_t launch_mla_decode_split(const MlaDecodeSplitArgs& a, cudaStream_t stream);

// The same on tensor cores (3xTF32, fp32 accuracy), 16 heads per CTA; one instantiation per
// (L, R) in its own mla_decode_mma_l*_r*.cu file.
template <int L, int R>
cudaError_t launch_mla_decode_split_mma(const MlaDecodeSplitArgs& a, cudaStream_t stream);

// Any L, R: one CTA per (head, chunk, sequence), scalar loads. Slow; for odd sizes only.
cudaError_t launch_mla_decode_split_generic(const MlaDecodeSplitArgs& a, cudaStream_t stream);

}  // namespace helix::cuda
