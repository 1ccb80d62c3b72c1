#pragma once
// The memory-bound MLA decode's split kernel (mla_decode_mem.cu) at a sequence end: a warp's
// state (O fragments of 16 heads x 256 columns, m and d of its two rows) parked in shared memory,
// absorbed by another warp (online-softmax merge), and worker 0's final write of out and lse (a
// complete sequence) or of a partial slot for the combine.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem::split {

using namespace detail;

// As 33 float4 per lane at p, p + 32, ...: the O fragments, then m and d of both rows.
__device__ __forceinline__ void park_state(float4* p, const float (&acc)[32][4],
                                           const float (&m_run)[2], const float (&d_run)[2]) {
#pragma unroll
  for (int n = 0; n < 32; ++n) p[n * 32] = make_float4(acc[n][0], acc[n][1], acc[n][2], acc[n][3]);
  p[32 * 32] = make_float4(m_run[0], m_run[1], d_run[0], d_run[1]);
}

__device__ __forceinline__ void absorb_state(const float4* p, float (&acc)[32][4],
                                             float (&m_run)[2], float (&d_run)[2]) {
  const float4 md = p[32 * 32];
  const float mo[2] = {md.x, md.y}, dd[2] = {md.z, md.w};
  float wa[2], wb[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m_new = fmaxf(m_run[r], mo[r]);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    wa[r] = exp2f(m_run[r] - m_use);
    wb[r] = exp2f(mo[r] - m_use);
    d_run[r] = d_run[r] * wa[r] + dd[r] * wb[r];
    m_run[r] = m_new;
  }
#pragma unroll
  for (int n = 0; n < 32; ++n) {
    const float4 o = p[n * 32];
    acc[n][0] = acc[n][0] * wa[0] + o.x * wb[0];
    acc[n][1] = acc[n][1] * wa[0] + o.y * wb[0];
    acc[n][2] = acc[n][2] * wa[1] + o.z * wb[1];
    acc[n][3] = acc[n][3] * wa[1] + o.w * wb[1];
  }
}

// A warp of column half ch, lane (g, t), holding n-tiles n0 .. n0 + kN - 1 of the merged state
// (rows g, g + 8 of sequence cb's head group): writes them into out (complete) or partial slot
// `slot` of this CTA; with lse_writer, the rows' lse too.
template <bool kFp8, int kN>
__device__ __forceinline__ void write_state(const Args& a, const float (&acc)[kN][4], int n0,
                                            const float (&m_run)[2], const float (&d_run)[2],
                                            bool complete, int slot, bool lse_writer, int cb,
                                            int group, int cta, int ch, int g, int t) {
  const int64_t prow = mla_combine::partial_row(a, group, cta, slot, kHeadGroup);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int hl = g + 8 * r, h = group * kHeadGroup + hl;
    if (h >= a.num_heads) continue;
    const float inv = 1.f / d_run[r];
    const float lse = mla_combine::lse_from_log2(m_run[r], d_run[r]);
    const int64_t orow = static_cast<int64_t>(cb) * a.num_heads + h;
    if (lse_writer && ch == 0 && t == 0) {
      if (complete)
        a.lse[orow] = lse;
      else
        a.part_lse[prow + hl] = lse;
    }
    float* dst_f = complete ? static_cast<float*>(a.out) + orow * L : a.part_out + (prow + hl) * L;
    __nv_bfloat16* dst_h = static_cast<__nv_bfloat16*>(a.out) + orow * L;
    const bool to_bf16 = complete && a.out_bf16;
#pragma unroll
    for (int i = 0; i < kN; i += 2) {
      const int n = n0 + i;
      // four consecutive columns per pair of n-tiles (bf16: chunk 8 (n >> 2) + 4 ch + (n & 3)
      // of 8 columns: 2t, + 8; FP8: 32 G + 16 h + 4 t + {0, 1}, + 2)
      float v[4];
      int c0, c1;
      if constexpr (!kFp8) {
        c0 = 64 * (n >> 2) + 32 * ch + 8 * (n & 3) + 2 * t;
        c1 = c0 + 8;
        v[0] = acc[i][2 * r] * inv;
        v[1] = acc[i][2 * r + 1] * inv;
        v[2] = acc[i + 1][2 * r] * inv;
        v[3] = acc[i + 1][2 * r + 1] * inv;
      } else {
        // n-tiles 4G + 2h, 4G + 2h + 1 (h = n/2 % 2): columns 16h + 4t, 16h + 4t + 1 (e = 0) and
        // + 2 (e = 1)
        const int G = n >> 2, h = (n >> 1) & 1;
        c0 = ch * 256 + 32 * G + 16 * h + 4 * t;
        c1 = c0 + 2;
        v[0] = acc[i][2 * r] * inv;
        v[1] = acc[i + 1][2 * r] * inv;
        v[2] = acc[i][2 * r + 1] * inv;
        v[3] = acc[i + 1][2 * r + 1] * inv;
      }
      if (to_bf16) {
        *reinterpret_cast<__nv_bfloat162*>(dst_h + c0) = __floats2bfloat162_rn(v[0], v[1]);
        *reinterpret_cast<__nv_bfloat162*>(dst_h + c1) = __floats2bfloat162_rn(v[2], v[3]);
      } else {
        *reinterpret_cast<float2*>(dst_f + c0) = make_float2(v[0], v[1]);
        *reinterpret_cast<float2*>(dst_f + c1) = make_float2(v[2], v[3]);
      }
    }
  }
}

}  // namespace helix::cuda::mla_mem::split
