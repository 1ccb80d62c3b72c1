#pragma once
// The combine kernel of the sm90 MLA decode (mla_decode_sm90.cuh): merges the split partials.
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_sm90.cuh"

namespace helix::cuda::mla_sm90 {

// Merges the partials of sequences spanning several CTAs; writes the empty sequences. Grid
// (B, H), kThreads threads, dynamic shared memory 8 bytes per CTA of a group; a programmatic
// dependent of the split kernel. Each thread keeps 8 partial loads in flight. Small batches
// (each sequence split 16-66 ways) take 512 threads: 4 groups of partials merged in shared
// memory, so a 32-way split costs one round of L2 latency instead of 8 (batch 1 x 16K, H200:
// 38 -> 32 us); larger batches take 128 threads (more CTAs per SM; 4 ways at batch 32).
// kUnroll > 0: in one L2 round trip after the split kernel (mla_combine::combine_one_trip) when a
// sequence has at most kThreads / 128 x kUnroll pieces. At 56 registers (kUnroll 10, 128 threads)
// 9 of its CTAs fit an SM against 12 of combine_partials', so it is taken only where its grid fits
// one wave (launch): 8 x 16K -0.9 us (H200, bench/RESULTS.md, "session 7, h128"); batch 1 (a
// 17-piece version, one CTA an SM) and 32 to 64 were slower with it.
template <int kThreads, int kUnroll>
__global__ void __launch_bounds__(kThreads) mla_sm90_combine_kernel(const Args a) {
  if constexpr (kUnroll > 0)
    mla_combine::combine_one_trip<kThreads, kL, kHeads, kUnit, kUnroll, 1>(a);
  else
    mla_combine::combine_partials<kThreads, kL, kHeads, kUnit, 8, true, 1>(a);
}
constexpr int kOneTripUnroll = 10, kOneTripCtasPerSm = 9;
constexpr int kCombineSmallBatch = 4;  // batches up to this take the 512-thread combine

}  // namespace helix::cuda::mla_sm90
