// The combine kernel of the memory-bound MLA decode (mla_decode_mem.h): merges the split
// kernel's per-CTA partials of sequences that span several CTAs, writes the empty sequences.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;

// Merges the partials of sequences that span several CTAs and writes the empty sequences. Grid
// (B, H); launched as a programmatic dependent of the split kernel, so it waits for it first.
// kCombineUnroll: partial loads in flight per thread.
constexpr int kCombineThreads = 512;
constexpr int kCombineUnroll = 8;

// The common case, a sequence of at most kGroups x kCombineUnroll pieces, takes one L2 round trip
// after the split kernel: the pieces' partial rows are computed before the PDL wait (index math on
// seq_lens only), then every partial value and lse a thread needs is loaded at once (the old order,
// lse, block max and sum, then the values, was two) and the weights follow from the pieces' max
// (over the 4 lanes of a chunk) and sum. Thread = (4-column chunk cc, piece group pg) with the
// kGroups groups of a chunk in adjacent lanes, summed by shuffles (no shared buffer besides
// combine_partials' own). More pieces, and the empty sequences: combine_partials (lse first, then
// the values).
constexpr int kGroups = kCombineThreads / (L / 4);
static_assert(kGroups == 4, "the shuffles below sum 4 adjacent lanes");
// kFp8: the FP8 split kernel's partition (its seq_cost).
template <bool kFp8>
__global__ void __launch_bounds__(kCombineThreads) mla_mem_combine(const Args a) {
  namespace mc = mla_combine;
  constexpr int kPieceCost = seq_cost<kFp8>();
  __shared__ float s_red[kCombineThreads / 32];
  __shared__ int s_row[kGroups * kCombineUnroll];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeadGroup, hl = h % kHeadGroup;
  float before = 0.f, all = 0.f;  // virtual tile counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kCombineThreads) {
    const int t = (mc::seq_tokens(a, i) + kTile - 1) / kTile;
    const float tiles = static_cast<float>(t > 0 ? t + kPieceCost : 0);
    all += tiles;
    if (i < b) before += tiles;
  }
  const int tiles_before =
      static_cast<int>(mc::block_reduce<kCombineThreads>(before, false, s_red));
  const int total = static_cast<int>(mc::block_reduce<kCombineThreads>(all, false, s_red));
  const int mine = (mc::seq_tokens(a, b) + kTile - 1) / kTile;
  const int ctas = mc::active_ctas<mc::kMinTiles>(total, a.ctas_per_group);
  const int first = tiles_before + kPieceCost;  // the virtual index of the first real tile
  const int c_lo = mine > 0 ? mc::cta_of(first, total, ctas) : 0;
  const int n = mine > 0 ? mc::cta_of(first + mine - 1, total, ctas) - c_lo + 1 : 0;
  if (n == 1) return;  // one CTA held it all and wrote the final result
  if (mine == 0 || n > kGroups * kCombineUnroll) {
    // empty (written there) or many pieces
    mc::combine_partials<kCombineThreads, L, kHeadGroup, kTile, kCombineUnroll, true, mc::kMinTiles,
                         kPieceCost>(a);
    return;
  }
  if (threadIdx.x < n) {  // as combine_partials (partial_row in int); -1: a CTA without tiles
    const int c = c_lo + threadIdx.x;
    const bool tiles = mc::cta_begin(c, total, ctas) < mc::cta_begin(c + 1, total, ctas);
    const int slot = threadIdx.x == 0 && mc::cta_begin(c, total, ctas) < tiles_before ? 1 : 0;
    s_row[threadIdx.x] = tiles ? ((group * a.ctas_per_group + c) * 2 + slot) * kHeadGroup + hl : -1;
  }
  __syncthreads();
  grid_dep_wait();
  const int cc = threadIdx.x / kGroups, pg = threadIdx.x % kGroups;
  float4 v[kCombineUnroll];
  float l[kCombineUnroll];
#pragma unroll
  for (int u = 0; u < kCombineUnroll; ++u) {
    const int i = pg + u * kGroups;
    const int row = i < n ? s_row[i] : -1;
    l[u] = -INFINITY;
    v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row >= 0) {
      l[u] = a.part_lse[row];
      v[u] = *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(row) * L + 4 * cc);
    }
  }
  // the kGroups lanes of a chunk hold every piece between them: their max is the sequence's (no
  // block-wide reduction, whose two barriers sat on the path after the wait)
  float mx = l[0];
#pragma unroll
  for (int u = 1; u < kCombineUnroll; ++u) mx = fmaxf(mx, l[u]);
#pragma unroll
  for (int m = 1; m < kGroups; m <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float sum = 0.f;
#pragma unroll
  for (int u = 0; u < kCombineUnroll; ++u) {
    const float w = __expf(l[u] - mx);  // 0 for -inf (no piece there): its v is 0
    sum += w;
    mc::fma4(o, w, v[u]);
  }
  // the kGroups lanes of a chunk hold disjoint pieces: their sums are the whole
#pragma unroll
  for (int m = 1; m < kGroups; m <<= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, m);
    o.x += __shfl_xor_sync(0xffffffffu, o.x, m);
    o.y += __shfl_xor_sync(0xffffffffu, o.y, m);
    o.z += __shfl_xor_sync(0xffffffffu, o.z, m);
    o.w += __shfl_xor_sync(0xffffffffu, o.w, m);
  }
  if (pg != 0) return;
  mc::scale4(o, 1.f / sum);
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  mc::store4(static_cast<float*>(a.out) + orow * L, static_cast<__nv_bfloat16*>(a.out) + orow * L,
             a.out_bf16, 4 * cc, o);
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
}

}  // namespace

cudaError_t prepare_combine() {
  // On the all-shared carveout like the split kernel: no L1/shared reconfiguration between them.
  cudaError_t err =
      cudaFuncSetAttribute(mla_mem_combine<false>, cudaFuncAttributePreferredSharedMemoryCarveout,
                           cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  return cudaFuncSetAttribute(mla_mem_combine<true>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

bool pdl_off() {
  static const bool off = [] {
    const char* e = std::getenv("HELIX_MLA_NO_PDL");
    return e && e[0] == '1';
  }();
  return off;
}

cudaError_t launch_combine(const Args& a, bool fp8, cudaStream_t stream) {
  LaunchEx ex(dim3(a.batch, a.num_heads), dim3(kCombineThreads),
              8 * static_cast<size_t>(a.ctas_per_group), stream);
  ex.pdl(!pdl_off());
  return fp8 ? ex(mla_mem_combine<true>, a) : ex(mla_mem_combine<false>, a);
}

}  // namespace helix::cuda::mla_mem
