#pragma once
// The combine kernel of the sm90 MLA decode (mla_decode_sm90.cuh): merges the split partials.
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_sm90.cuh"

namespace helix::cuda::mla_sm90 {

// Merges the partials of sequences spanning several CTAs; writes the empty sequences. Grid
// (B, H), 128 threads, dynamic shared memory 8 bytes per CTA of a group.
constexpr int kCombineThreads = 128;

__global__ void __launch_bounds__(kCombineThreads) mla_sm90_combine_kernel(const Args a) {
  mla_combine::combine_partials<kCombineThreads, kL, kHeads, kTile, 0, false>(a);
}

}  // namespace helix::cuda::mla_sm90
