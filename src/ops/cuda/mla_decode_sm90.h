#pragma once
// Host entry points of the Hopper MLA decode kernel for H >= 64 (mla_decode_sm90.cuh; internal
// to ops/cuda/, chosen by mla_decode_bf16.cu).
#include <cuda_runtime.h>

#include <cstddef>

#include "ops/cuda/mla_decode_bf16_args.h"

namespace helix::cuda::mla_sm90 {

// Largest max_batch the kernel's shared memory (per-sequence tile prefix sums) takes.
constexpr int kMaxBatch = 400;
constexpr int kMaxBatchFp8 = 300;  // FP8: the tiles' token scales take 512 bytes of it
// Whether the kernel takes these sizes at all: L 512, R 64, H >= 64 (bf16 or FP8 KV).
bool eligible(int heads, int kv_lora_rank, int rope_dim, bool fp8, int max_batch);
// Whether a launch's block size suits its TMA boxes: 16, 32 or a multiple of 64.
bool block_ok(int block_size);
// Raises the kernel's shared-memory limit; reports its dynamic shared memory and the CTAs per
// 64-head group that run at once (one per SM).
cudaError_t prepare(int heads, bool fp8, int max_batch, size_t* smem, int* ctas_per_group);
// Split kernel on grid (ctas, groups), then the combine kernel.
cudaError_t launch(const mla_bf16::Args& a, bool fp8, dim3 grid, size_t smem, cudaStream_t stream);

}  // namespace helix::cuda::mla_sm90
