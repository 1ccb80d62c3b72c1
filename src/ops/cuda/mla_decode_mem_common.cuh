#pragma once
// Shared by the memory-bound MLA decode's split and combine kernels (mla_decode_mem.cu,
// mla_decode_mem_combine.cu): sizes, and the PTX wrappers only this kernel uses (the common ones
// are in ptx_common.cuh, the tile partition in mla_combine_common.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_mem::detail {

using mla_bf16::Args;
using namespace ptx;  // ptx_common.cuh

constexpr int L = 512, R = 64, W = L + R;
constexpr int kTile = 32;  // tokens per stage (and per unit of the CTA partition)
// The CTA partition counts each sequence piece as this many tiles more (mla_combine_common.cuh's
// kSeqCost): a piece costs a query build, a merge of the warps' states and a write (~5-9 us
// measured at batch 8 x 16K, where a tile takes ~1.07 us), and a CTA holding two pieces finished
// last.
// (H200, batch 8 x 16K bf16: 63.0 us with 0, 58.9 with 4, 56.6 with 8, ~58 with 12.)
constexpr int kSeqCost = 8;
// FP8 (fp8_tiles): its tiles take about half a bf16 tile's time, the piece's fixed cost about the
// same. (H200, 16 heads, FP8: 12 against 8: 64 x 16K 225-226 vs 232-234 us, 8 x 64K 115.5 vs
// 116.7, 32 x 64K 398 vs 401; 16: the same as 12 within noise.)
constexpr int kSeqCostFp8 = 12;
template <bool kFp8>
constexpr int seq_cost() {
  return kFp8 ? kSeqCostFp8 : kSeqCost;
}
// Tiles before a sequence's end at which the next sequence's query is prefetched into L2.
constexpr int kQAhead = 6;

// c += a . b, m16n8k16, bf16 operands, fp32 accumulators.
__device__ __forceinline__ void mma(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  mma_bf16_m16n8k16(c, a.x, a.y, a.z, a.w, b0, b1);
}
// c += a . b, m16n8k16, fp16 operands, fp32 accumulators (the FP8 path: e4m3 is a subset of fp16).
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}
// Bytes 0, 1 (lo) or 2, 3 (hi) of x, two e4m3 values -> f16x2 (byte 0 / 2 in the low half), exact:
// one cvt each.
__device__ __forceinline__ uint32_t e4m3x2_lo_to_f16(uint32_t x) {
  uint32_t r;
  asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, lo;\n}\n"
      : "=r"(r)
      : "r"(x));
  return r;
}
__device__ __forceinline__ uint32_t e4m3x2_hi_to_f16(uint32_t x) {
  uint32_t r;
  asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, hi;\n}\n"
      : "=r"(r)
      : "r"(x));
  return r;
}
__device__ __forceinline__ uint32_t pack_f16(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// Asks L2 to fetch bytes [p, p + n) (n a multiple of 16, p 16-byte aligned); no completion.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t n) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(n) : "memory");
}

// Asks L2 for the line holding p (no alignment, no completion).
__device__ __forceinline__ void prefetch_line_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p) : "memory");
}

// The start's dependent reads (seq_lens, then the block-table entries of the CTA's first tiles:
// here the whole table, as the range is not known yet) into L2 before griddepcontrol.wait, from CTA
// `cta_lin` of `ctas` (warps 1-3, 96 threads; lane index i = tid - 32): seq_lens by i < 32, the
// whole block table (up to 64 lines a CTA: larger tables are skipped) by line, spread over the
// CTAs. Only addresses inside the two arrays. L2 is where writes land, so a line fetched while the
// kernel before still writes it cannot go stale.
__device__ __forceinline__ void prefetch_start_inputs(const Args& a, int i, int cta_lin, int ctas) {
  // Entries 32 apart (128 bytes), then the last one (an unaligned array's last line).
  if (i < 32) {
    if (32 * i < a.batch + 31) prefetch_line_l2(a.seq_lens + min(32 * i, a.batch - 1));
    return;
  }
  const int64_t n = static_cast<int64_t>(a.batch) * a.max_blocks_per_seq;  // int32 entries
  const int64_t lines = n / 32 + 2;
  if (n == 0 || lines > 64 * static_cast<int64_t>(ctas)) return;
  for (int64_t l = cta_lin + static_cast<int64_t>(ctas) * (i - 32); l < lines; l += 64 * ctas)
    prefetch_line_l2(a.block_table + min(32 * l, n - 1));
}

// The next non-empty sequence's query (after cb; none past the batch) for head group `group`,
// into L2: issued a few tiles before a sequence ends, while the KV stream would still evict it.
__device__ __forceinline__ void prefetch_next_query(const Args& a, const int* s_cum, int cb,
                                                    int group) {
  int nb = cb + 1;
  while (nb < a.batch && s_cum[nb + 1] == s_cum[nb]) ++nb;
  const int h0 = group * kHeadGroup, nh = min(kHeadGroup, a.num_heads - h0);
  prefetch_l2(
      static_cast<const __nv_bfloat16*>(a.q) + (static_cast<int64_t>(nb) * a.num_heads + h0) * W,
      static_cast<uint32_t>(nh) * W * 2);
}

// The two column-half warps of a worker each hold partial scores sc[N n-tiles][4] of the same
// tokens: each writes its own to the exchange buffer (two parities, so the next tile's write
// cannot race this tile's read), meets its partner on named barrier 2 + worker, and adds the
// partner's (the same sum in both: addition commutes).
template <int N>
__device__ __forceinline__ void exchange_partial_scores(float (&sc)[N][4], float* xbuf, int worker,
                                                        int ch, int& xpar, int lane) {
  float* mine = xbuf + ((worker * 2 + ch) * 2 + xpar) * (N * 128);
  const float* other = xbuf + ((worker * 2 + (ch ^ 1)) * 2 + xpar) * (N * 128);
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) mine[(4 * n + e) * 32 + lane] = sc[n][e];
  asm volatile("bar.sync %0, 64;\n" ::"r"(2 + worker) : "memory");
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) sc[n][e] += other[(4 * n + e) * 32 + lane];
  xpar ^= 1;
}

// The online softmax's running state of a lane's two rows (g, g + 8) after a tile whose row
// maxima (this lane's) are mx: the quad's maxima, the new running max m_run, the max to subtract
// (m_use: 0 while the row has seen only -inf), d_run rescaled and alpha multiplied by the factor.
__device__ __forceinline__ void softmax_rows_update(float (&mx)[2], float (&m_run)[2],
                                                    float (&d_run)[2], float (&m_use)[2],
                                                    float (&alpha)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    m_use[r] = m_new == -INFINITY ? 0.f : m_new;
    const float al = exp2f(m_run[r] - m_use[r]);
    d_run[r] *= al;  // the denominator: plain p (FP8: no 2^c)
    alpha[r] *= al;
    m_run[r] = m_new;
  }
}

// A tile's scores in the log2 domain, -inf past the sequence's end, and the rows' maxima over this
// lane's columns (rows g and g + 8: fragment elements e >> 1).
template <int N>
__device__ __forceinline__ void mask_scores(float (&sc)[N][4], float (&mx)[2], int tok0, int t,
                                            int len, float scale_log2) {
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int pos = tok0 + 8 * n + 2 * t + (e & 1);
      const float v = tail_score(pos, len, sc[n][e], scale_log2);
      sc[n][e] = v;
      mx[e >> 1] = fmaxf(mx[e >> 1], v);
    }
}

// The tile's row sums (this lane's part) over the quad, added to the running denominators.
__device__ __forceinline__ void add_row_sums(float (&rs)[2], float (&d_run)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 1);
    rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 2);
    d_run[r] += rs[r];
  }
}

// O *= alpha per row, only when some row's factor is not 1 (rarely, once the max settles).
__device__ __forceinline__ void rescale_rows(float (&acc)[32][4], const float (&alpha)[2]) {
  if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
#pragma unroll
    for (int n = 0; n < 32; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }
  }
}

// 16 zero bytes to shared memory (volatile asm: kept in order with the fragment loads).
__device__ __forceinline__ void sts_zero16(uint32_t addr) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
}

}  // namespace helix::cuda::mla_mem::detail
