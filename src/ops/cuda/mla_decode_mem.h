#pragma once
// The memory-bound MLA decode kernel (<= 32 heads, in groups of 16, (L, R) = (512, 64)), bf16 or
// FP8 e4m3 latent KV: internal to ops/cuda/, reached through mla_decode_bf16_cuda (see
// mla_decode_bf16.h for the contract). Same Args, workspace layout and tile partition as the
// mla_bf16 kernels, so the plan is shared.
#include <cuda_runtime.h>

#include <cstddef>

#include "ops/cuda/mla_decode_bf16_args.h"

namespace helix::cuda::mla_mem {

// Heads per CTA: one m16 tile.
constexpr int kHeadGroup = 16;

// Raises the split kernel's shared-memory limit; reports its dynamic shared memory and CTAs per SM.
cudaError_t prepare(bool fp8, int max_batch, size_t* smem, int* ctas_per_sm);
// Split kernel on grid (ctas, groups), then the combine kernel (programmatic dependent launch).
cudaError_t launch(const mla_bf16::Args& a, bool fp8, dim3 grid, size_t smem, cudaStream_t stream);

// The combine kernel (mla_decode_mem_combine.cu), used by the two above: its attributes, and its
// launch as a programmatic dependent of the split kernel.
cudaError_t prepare_combine();
cudaError_t launch_combine(const mla_bf16::Args& a, bool fp8, cudaStream_t stream);
// HELIX_MLA_NO_PDL=1 in the environment (read once): both kernels launched plainly, for measuring
// what the programmatic launches save.
bool pdl_off();

}  // namespace helix::cuda::mla_mem
