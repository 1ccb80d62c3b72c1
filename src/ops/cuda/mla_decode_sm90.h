#pragma once
// Host entry points of the Hopper MLA decode kernel for H >= 64 (mla_decode_sm90.cuh; internal
// to ops/cuda/, chosen by mla_decode_bf16.cu).
#include <cuda.h>  // CUtensorMap (type only)
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

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

// The KV pool as a 2D TMA tensor ([rows, 576] bf16, FP8: [rows, 656] bytes), boxes of 128 bytes
// of a row (one 128-byte swizzle row) x box_rows rows. Encoded on the host (no device call), so a
// launch can pass it by value (__grid_constant__): CUDA-graph replays reuse the captured copy.
// cudaErrorNotSupported: no TMA encoder in this driver. Also used by the memory-bound kernel.
// The last few maps are cached per host thread, keyed by (kv_pool, fp8, box_rows).
cudaError_t encode_kv_map(CUtensorMap* map, const uint8_t* kv_pool, bool fp8, int box_rows);

}  // namespace helix::cuda::mla_sm90
