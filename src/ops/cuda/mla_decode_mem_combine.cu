// The combine kernel of the memory-bound MLA decode (mla_decode_mem.h): merges the split
// kernel's per-CTA partials of sequences that span several CTAs, writes the empty sequences.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;

// Merges the partials of sequences that span several CTAs and writes the empty sequences. Grid
// (B, H); launched as a programmatic dependent of the split kernel, so it waits for it first.
// Thread = (partial group, 4-column chunk): each keeps 8 independent partial loads in flight.
constexpr int kCombineThreads = 512;
constexpr int kCombineUnroll = 8;

#ifndef MLA_MEM_ONE_PASS_COMBINE
#define MLA_MEM_ONE_PASS_COMBINE 1
#endif

// One pass after the wait (batch-1 latency: the combine's serial chain is on the critical path):
// thread (partial group pg, 4-column chunk cc) loads the lse and the columns of its partials
// pg, pg + 4, ... together (kOnePass in flight) and merges them online (running max), then the 4
// groups merge in shared memory. The partials' rows are computed before the wait.
constexpr int kOnePass = 16;
__device__ __forceinline__ void combine_one_pass(const Args& a) {
  using namespace mla_combine;
  constexpr int kGroups = kCombineThreads / (L / 4);
  static_assert(kGroups * (L / 4) == kCombineThreads, "whole partial groups");
  extern __shared__ float s_dyn[];
  __shared__ float s_red[kCombineThreads / 32];
  __shared__ float4 s_o[kGroups - 1][L / 4];
  __shared__ float2 s_ms[kGroups - 1];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeadGroup, hl = h % kHeadGroup;
  float before = 0.f, all = 0.f;  // tile counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kCombineThreads) {
    const float tiles = static_cast<float>((seq_tokens(a, i) + kTile - 1) / kTile);
    all += tiles;
    if (i < b) before += tiles;
  }
  const int tiles_before = static_cast<int>(block_reduce<kCombineThreads>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<kCombineThreads>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kTile - 1) / kTile;
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * L;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * L;
  if (mine == 0) {
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    for (int c = threadIdx.x; c < L; c += kCombineThreads) {
      if (a.out_bf16)
        out_h[c] = __float2bfloat16(0.f);
      else
        out_f[c] = 0.f;
    }
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int ctas = active_ctas(total, a.ctas_per_group);
  const int c_lo = cta_of(tiles_before, total, ctas);
  const int c_hi = cta_of(tiles_before + mine - 1, total, ctas);
  if (c_lo == c_hi) return;  // one CTA held it all and wrote the final result
  const int n = c_hi - c_lo + 1;
  int* s_row = reinterpret_cast<int*>(s_dyn);  // [n] partial rows, -1: a CTA with no tiles
  for (int i = threadIdx.x; i < n; i += kCombineThreads) {
    const int c = c_lo + i;
    int row = -1;
    if (cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas)) {
      const int slot = (i == 0 && cta_begin(c, total, ctas) != tiles_before) ? 1 : 0;
      row = ((group * a.ctas_per_group + c) * 2 + slot) * kHeadGroup + hl;
    }
    s_row[i] = row;
  }
  __syncthreads();
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  const int cc = threadIdx.x % (L / 4), pg = threadIdx.x / (L / 4);
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float m = -INFINITY, sum = 0.f;  // running max and sum of exp(lse - m)
  for (int i0 = pg; i0 < n; i0 += kGroups * kOnePass) {
    float l[kOnePass];
    float4 v[kOnePass];
#pragma unroll
    for (int u = 0; u < kOnePass; ++u) {
      const int i = i0 + u * kGroups;
      const int row = i < n ? s_row[i] : -1;
      l[u] = -INFINITY;
      v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row >= 0) {
        l[u] = a.part_lse[row];
        v[u] =
            *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(row) * L + 4 * cc);
      }
    }
    float mb = m;
#pragma unroll
    for (int u = 0; u < kOnePass; ++u) mb = fmaxf(mb, l[u]);
    const float mu = mb == -INFINITY ? 0.f : mb;
    const float sc = __expf(m - mu);  // 0 while m is -inf
    scale4(o, sc);
    sum *= sc;
#pragma unroll
    for (int u = 0; u < kOnePass; ++u) {
      const float w = __expf(l[u] - mu);  // 0 for an empty slot
      fma4(o, w, v[u]);
      sum += w;
    }
    m = mb;
  }
  if (pg > 0) {
    s_o[pg - 1][cc] = o;
    if (cc == 0) s_ms[pg - 1] = make_float2(m, sum);
  }
  __syncthreads();
  if (pg > 0) return;
  float mx = m;
#pragma unroll
  for (int k = 0; k < kGroups - 1; ++k) mx = fmaxf(mx, s_ms[k].x);
  const float mu = mx == -INFINITY ? 0.f : mx;
  const float sc = __expf(m - mu);
  scale4(o, sc);
  sum *= sc;
#pragma unroll
  for (int k = 0; k < kGroups - 1; ++k) {
    const float w = __expf(s_ms[k].x - mu);
    fma4(o, w, s_o[k][cc]);
    sum += w * s_ms[k].y;
  }
  scale4(o, 1.f / sum);
  store4(out_f, out_h, a.out_bf16, 4 * cc, o);
  if (threadIdx.x == 0) a.lse[orow] = mu + __logf(sum);
}

__global__ void __launch_bounds__(kCombineThreads) mla_mem_combine(const Args a) {
#if MLA_MEM_ONE_PASS_COMBINE
  combine_one_pass(a);
#else
  mla_combine::combine_partials<kCombineThreads, L, kHeadGroup, kTile, kCombineUnroll, true>(a);
#endif
}

}  // namespace

cudaError_t prepare_combine() {
  // On the all-shared carveout like the split kernel: no L1/shared reconfiguration between them.
  return cudaFuncSetAttribute(mla_mem_combine, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

cudaError_t launch_combine(const Args& a, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(a.batch, a.num_heads);
  cfg.blockDim = dim3(kCombineThreads);
  cfg.dynamicSmemBytes = 8 * static_cast<size_t>(a.ctas_per_group);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  // HELIX_MLA_NO_PDL=1: a plain launch (for measuring what the programmatic launch saves).
  static const bool no_pdl = [] {
    const char* e = std::getenv("HELIX_MLA_NO_PDL");
    return e && e[0] == '1';
  }();
  cfg.attrs = attr;
  cfg.numAttrs = no_pdl ? 0 : 1;
  return cudaLaunchKernelEx(&cfg, mla_mem_combine, a);
}

}  // namespace helix::cuda::mla_mem
