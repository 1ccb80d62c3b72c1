// The combine kernel of the memory-bound MLA decode (mla_decode_mem.h): merges the split
// kernel's per-CTA partials of sequences that span several CTAs, writes the empty sequences.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;

// Merges the partials of sequences that span several CTAs and writes the empty sequences. Grid
// (B, H); launched as a programmatic dependent of the split kernel, so it waits for it first.
// Thread = (partial group pg, 4-column chunk): each keeps 8 independent partial loads in flight,
// the kPartGroups sums meet in shared memory.
constexpr int kCombineThreads = 512;
constexpr int kPartGroups = kCombineThreads / (L / 4);
constexpr int kCombineUnroll = 8;

__device__ __forceinline__ float block_reduce(float v, bool is_max, float* s_red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = s_red[0];
#pragma unroll
  for (int w = 1; w < kCombineThreads / 32; ++w) v = is_max ? fmaxf(v, s_red[w]) : v + s_red[w];
  return v;
}

__global__ void __launch_bounds__(kCombineThreads) mla_mem_combine(const Args a) {
  extern __shared__ float s_dyn[];
  __shared__ float s_red[kCombineThreads / 32];
  __shared__ float4 s_part[kPartGroups - 1][L / 4];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeadGroup, hl = h % kHeadGroup;
  // seq_lens is an input (not written by the split kernel): read before the wait.
  float before = 0.f, all = 0.f;  // tile counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kCombineThreads) {
    const float tiles = static_cast<float>((seq_tokens(a, i) + kTile - 1) / kTile);
    all += tiles;
    if (i < b) before += tiles;
  }
  const int tiles_before = static_cast<int>(block_reduce(before, false, s_red));
  const int total = static_cast<int>(block_reduce(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kTile - 1) / kTile;
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * L;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * L;
  const int ctas = mine == 0 ? 1 : active_ctas(total, a.ctas_per_group);
  const int c_lo = mine == 0 ? 0 : cta_of(tiles_before, total, ctas);
  const int c_hi = mine == 0 ? 0 : cta_of(tiles_before + mine - 1, total, ctas);
  if (mine != 0 && c_lo == c_hi) return;  // one CTA held it all and wrote the final result
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  if (mine == 0) {
    for (int c = threadIdx.x; c < L; c += kCombineThreads) {
      if (a.out_bf16)
        out_h[c] = __float2bfloat16(0.f);
      else
        out_f[c] = 0.f;
    }
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int n = c_hi - c_lo + 1;
  float* s_w = s_dyn;                                             // [n] weights
  int* s_row = reinterpret_cast<int*>(s_dyn + a.ctas_per_group);  // [n] partial rows
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kCombineThreads) {
    const int c = c_lo + i;
    float l = -INFINITY;
    int row = 0;
    if (cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas)) {
      const int slot = (i == 0 && cta_begin(c, total, ctas) != tiles_before) ? 1 : 0;
      row = static_cast<int>(((group * a.ctas_per_group + c) * 2 + slot) * kHeadGroup + hl);
      l = a.part_lse[row];
    }
    s_w[i] = l;
    s_row[i] = row;
    mx = fmaxf(mx, l);
  }
  mx = block_reduce(mx, true, s_red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kCombineThreads) {
    const float w = __expf(s_w[i] - mx);
    s_w[i] = w;
    sum += w;
  }
  sum = block_reduce(sum, false, s_red);  // barrier: s_w complete
  const int cc = threadIdx.x % (L / 4), pg = threadIdx.x / (L / 4);
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int i0 = pg; i0 < n; i0 += kPartGroups * kCombineUnroll) {
    float4 v[kCombineUnroll];
    float w[kCombineUnroll];
#pragma unroll
    for (int u = 0; u < kCombineUnroll; ++u) {
      const int i = i0 + u * kPartGroups;
      w[u] = i < n ? s_w[i] : 0.f;
      v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (w[u] != 0.f)  // zero weight: an empty slot, never read
        v[u] = *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(s_row[i]) * L +
                                                4 * cc);
    }
#pragma unroll
    for (int u = 0; u < kCombineUnroll; ++u) {
      o.x += w[u] * v[u].x;
      o.y += w[u] * v[u].y;
      o.z += w[u] * v[u].z;
      o.w += w[u] * v[u].w;
    }
  }
  if (pg > 0) s_part[pg - 1][cc] = o;
  __syncthreads();
  if (pg > 0) return;
#pragma unroll
  for (int k = 0; k < kPartGroups - 1; ++k) {
    const float4 u = s_part[k][cc];
    o.x += u.x;
    o.y += u.y;
    o.z += u.z;
    o.w += u.w;
  }
  const float inv = 1.f / sum;
  o.x *= inv;
  o.y *= inv;
  o.z *= inv;
  o.w *= inv;
  const int col = 4 * cc;
  if (a.out_bf16) {
    *reinterpret_cast<__nv_bfloat162*>(out_h + col) = __floats2bfloat162_rn(o.x, o.y);
    *reinterpret_cast<__nv_bfloat162*>(out_h + col + 2) = __floats2bfloat162_rn(o.z, o.w);
  } else {
    *reinterpret_cast<float4*>(out_f + col) = o;
  }
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
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
