#pragma once
// The small-batch (latency) MLA decode kernel, bf16 latent KV at (L, R) = (512, 64), any head
// count in groups of 16: one launch for the whole call (internal to ops/cuda/, chosen by
// mla_decode_bf16.cu; see mla_decode_bf16.h for the contract). The split kernels' second launch
// (the combine) is replaced by a grid-wide barrier inside this kernel: the plan sizes the grid so
// all its CTAs are resident at once.
#include <cuda_runtime.h>

#include <cstddef>

#include "ops/cuda/mla_decode_bf16_args.h"

namespace helix::cuda::mla_lat {

constexpr int kHeadGroup = 16;
// Largest max_batch a plan may ask the kernel for (its shared memory holds 8 bytes a sequence; the
// launch picks it only for small batches).
constexpr int kMaxBatch = 1024;

// Whether the kernel takes these sizes: L 512, R 64, bf16 KV, max_batch <= kMaxBatch.
bool eligible(int kv_lora_rank, int rope_dim, bool fp8, int max_batch);
// Raises the kernel's shared-memory limit; reports its dynamic shared memory and its CTAs per
// 16-head group (all resident at once: SMs x CTAs per SM / groups).
cudaError_t prepare(int heads, int max_batch, size_t* smem, int* ctas_per_group);
// Bytes of the partials [groups, ctas, 2, 16, L + 1] fp32 (a multiple of 16).
size_t partial_bytes(int heads, int ctas_per_group);
// One launch on grid (ctas, groups); a.part_out / a.part_lse point into the workspace. counter:
// the grid barrier's 8 bytes, zero before the first launch (every launch leaves it a multiple of
// the grid size); no other kernel may write it.
cudaError_t launch(const mla_bf16::Args& a, unsigned long long* counter, dim3 grid, size_t smem,
                   cudaStream_t stream);

}  // namespace helix::cuda::mla_lat
