#pragma once
// Tensor-core GEMM for decode-sized row counts: y[rows, n] = x[rows, k] · w[n, k]^T with bf16
// activations and bf16 or FP8 E4M3 weights (128x128 block scales), fp32 accumulation. "Swap AB":
// mma.sync m16n8k16 with 16 weight rows (output features) as the A operand and up to 8 tokens as
// the B operand, so a tile of 1..8 tokens wastes at most 7 columns and every weight byte is read
// once per token tile. Each warp owns 16 output features and streams their weights through its own
// cp.async ring in shared memory (no block barriers: a lane reads back only what it copied), one
// 128-wide k-block per stage; FP8 bytes become bf16 in registers and the k-block's partial sums are
// multiplied by its block scale in fp32. Dense GEMMs split K over blockIdx.z into an fp32 scratch
// when the grid would not fill the GPU; grouped (expert) GEMMs take their tiles from the device
// tile list of gemm_grouped.cu and exit early past its count.
//
// K order inside an MMA is free as long as A and B agree, so each lane loads 16 contiguous bytes
// of a weight row and the matching contiguous activations, and the fragments are filled from them:
// lane (g = lane / 4, t = lane % 4) holds physical elements {4j .. 4j+3} of its 16-byte slice as
// the fragment's logical (2t, 2t+1) and (2t+8, 2t+9) for MMA j.
#include "ops/cuda/ops_common.cuh"
#include "ops/cuda/ptx_common.cuh"

namespace helix {
namespace opsk {

constexpr int kMmaWarps = 4;  // warps per block, 16 output features each
constexpr int kMmaRowsPerBlock = 16 * kMmaWarps;
constexpr int kMmaKBlock = 128;  // k per pipeline stage (= the FP8 scale block)

// 16-byte pieces one lane copies per k-block (fp8: 2 halves of 64 x 2 rows; bf16: 4 quarters of
// 32 x 2 rows) and ring depth; both rings are 48 KB per block (static shared-memory limit).
template <typename WT>
struct MmaCfg;
template <>
struct MmaCfg<__nv_fp8_e4m3> {
  static constexpr int kPieces = 4, kStages = 6;
};
template <>
struct MmaCfg<__nv_bfloat16> {
  static constexpr int kPieces = 8, kStages = 3;
};

struct MmaArgs {
  int m = 0, n = 0, k = 0, ldx = 0, ldy = 0;
  const __nv_bfloat16* x = nullptr;
  void* y = nullptr;
  CudaDType y_dtype = CudaDType::kBF16;
  float beta = 0.0f;
  const void* w = nullptr;  // dense
  const float* scale = nullptr;
  const void* const* w_ptrs = nullptr;  // grouped
  const float* const* scale_ptrs = nullptr;
  const int32_t* offsets = nullptr;
  const int32_t* tiles = nullptr;  // [1 + 2*cap]: count, then (group, first row)
  int kb_per_split = 1;            // k-blocks per blockIdx.z
  float* partial = nullptr;        // split-K: [gridDim.z, m, n] fp32 (dense only)
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  cuda::ptx::cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem,
                        static_cast<uint32_t>(src_bytes));
}
using cuda::ptx::cp_async_commit;
using cuda::ptx::cp_async_wait;

__device__ __forceinline__ uint32_t u4_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Two E4M3 bytes (selected by prmt into bytes 1 and 3 of a word) as bf16x2, exactly: the sign
// and the 7 exponent/mantissa bits shifted into bf16's fields give value * 2^-120 for normals and
// subnormals alike; one bf16x2 multiply by 2^120 restores the value.
template <unsigned SEL>
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t w) {
  uint32_t t;
  asm("prmt.b32 %0, %1, 0, %2;\n" : "=r"(t) : "r"(w), "n"(SEL));
  const uint32_t r = (t & 0x80008000u) | ((t >> 4) & 0x07f007f0u);
  uint32_t out;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(out) : "r"(r), "r"(0x7B807B80u));
  return out;
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  cuda::ptx::mma_bf16_m16n8k16_ordered(c, a0, a1, a2, a3, b0, b1);
}

// NT: token tiles of 8 per warp (1, 2 or 4). MT: 16-row weight tiles per warp (1, or 2 for FP8:
// each activation fragment then feeds two weight tiles, halving the activation loads per weight
// byte, which bound the 32-64-row GEMMs; the ring keeps its 48 KB with half the stages).
template <typename WT, int NT, int MT = 1>
__global__ void __launch_bounds__(kMmaWarps * 32) mma_gemm_kernel(const MmaArgs a) {
  constexpr bool kFp8 = sizeof(WT) == 1;
  static_assert(MT == 1 || (kFp8 && MT == 2), "two weight tiles per warp: FP8 only");
  constexpr int kSel = 2 * MT;  // 8-row groups per warp
  constexpr int P = MmaCfg<WT>::kPieces * MT, S = MmaCfg<WT>::kStages / MT;
  constexpr int kElems = 16 / sizeof(WT);  // weights per 16-byte piece
  __shared__ uint4 ring[kMmaWarps][S][P][32];

  int grp = 0, r0, r1;
  if (a.tiles) {
    if (static_cast<int>(blockIdx.x) >= a.tiles[0]) return;
    grp = a.tiles[1 + 2 * blockIdx.x];
    r0 = a.tiles[2 + 2 * blockIdx.x];
    r1 = min(r0 + 8 * NT, a.offsets[grp + 1]);
  } else {
    r0 = blockIdx.x * 8 * NT;
    r1 = min(r0 + 8 * NT, a.m);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.y * kMmaRowsPerBlock * MT + warp * 16 * MT;
  if (r1 <= r0 || row0 >= a.n) return;
  const int k = a.k, n = a.n;
  const WT* w = static_cast<const WT*>(a.w_ptrs ? a.w_ptrs[grp] : a.w);
  const float* scale = a.scale_ptrs ? a.scale_ptrs[grp] : a.scale;
  const int kblocks = (k + kMmaKBlock - 1) / kMmaKBlock;
  const int kb0 = blockIdx.z * a.kb_per_split, kb1 = min(kb0 + a.kb_per_split, kblocks);
  const float* srow = kFp8 ? scale + (row0 / kFp8BlockSize) * kblocks : nullptr;

  // This lane's weight rows: features row0 + g + 8i, i < 2 * MT (past n clamped, never stored;
  // all in one 128-row scale block since row0 is a multiple of 16 * MT).
  const WT* wr[kSel];
#pragma unroll
  for (int i = 0; i < kSel; ++i) wr[i] = w + static_cast<int64_t>(min(row0 + g + 8 * i, n - 1)) * k;
  // Piece p: row group p % kSel, k offset within the block (fp8: 64 * (p / kSel) + 16t; bf16:
  // 32 * (p / kSel) + 8t).
  auto piece_k = [&](int p) { return (kFp8 ? 64 : 32) * (p / kSel) + kElems * t; };
  uint4(*my)[P][32] = ring[warp];
  auto issue = [&](int kb, int stage) {
    if (kb < kb1) {
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int kk = kb * kMmaKBlock + piece_k(p);
        const bool ok = kk + kElems <= k;
        cp_async16(&my[stage][p][lane], ok ? wr[p % kSel] + kk : wr[0], ok ? 16 : 0);
      }
    }
    cp_async_commit();
  };

  // Token rows of this lane in each tile (B operand column g).
  const __nv_bfloat16* xrow[NT];
  bool xok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int r = r0 + nt * 8 + g;
    xok[nt] = r < r1;
    xrow[nt] = a.x + static_cast<int64_t>(xok[nt] ? r : r0) * a.ldx;
  }

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue(kb0 + s, s);
  int stage = 0;
  for (int kb = kb0; kb < kb1; ++kb) {
    issue(kb + S - 1, stage == 0 ? S - 1 : stage - 1);
    const float s = kFp8 ? __ldg(srow + kb) : 1.0f;
    // Activations of this k-block: 4 pieces of 8 bf16 per token tile (fp8: the 16 elements at
    // 64h + 16t are pieces 2h, 2h+1; bf16: the 8 at 32c + 8t are piece c).
    uint4 xr[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int kk =
            kb * kMmaKBlock + (kFp8 ? 64 * (q >> 1) + 16 * t + 8 * (q & 1) : 32 * q + 8 * t);
        xr[nt][q] = xok[nt] && kk + 8 <= k ? __ldg(reinterpret_cast<const uint4*>(xrow[nt] + kk))
                                           : make_uint4(0, 0, 0, 0);
      }
    cp_async_wait<S - 1>();
    if constexpr (kFp8) {
      float part[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[mt][nt][e] = 0.0f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint4 wv[kSel];
#pragma unroll
        for (int i = 0; i < kSel; ++i) wv[i] = my[stage][kSel * h + i][lane];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint32_t ua = u4_word(wv[2 * mt], j), ub = u4_word(wv[2 * mt + 1], j);
            // bytes 0,1 -> (2t, 2t+1); bytes 2,3 -> (2t+8, 2t+9); rows g (a0, a2), g+8 (a1, a3).
            const uint32_t a0 = fp8x2_to_bf16x2<0x1404>(ua), a2 = fp8x2_to_bf16x2<0x3424>(ua);
            const uint32_t a1 = fp8x2_to_bf16x2<0x1404>(ub), a3 = fp8x2_to_bf16x2<0x3424>(ub);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const uint4& xv = xr[nt][2 * h + (j >> 1)];
              mma_bf16(part[mt][nt], a0, a1, a2, a3, u4_word(xv, 2 * (j & 1)),
                       u4_word(xv, 2 * (j & 1) + 1));
            }
          }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][nt][e] = fmaf(part[mt][nt][e], s, acc[mt][nt][e]);
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const uint4 wa = my[stage][2 * c][lane], wb = my[stage][2 * c + 1][lane];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const uint4& xv = xr[nt][c];
            mma_bf16(acc[0][nt], u4_word(wa, 2 * j), u4_word(wb, 2 * j), u4_word(wa, 2 * j + 1),
                     u4_word(wb, 2 * j + 1), u4_word(xv, 2 * j), u4_word(xv, 2 * j + 1));
          }
      }
    }
    stage = stage == S - 1 ? 0 : stage + 1;
  }
  cp_async_wait<0>();

  // c0, c1: feature g, tokens 2t, 2t+1; c2, c3: feature g + 8 (of weight tile mt).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int f = row0 + 16 * mt + g + 8 * (e >> 1), r = r0 + nt * 8 + 2 * t + (e & 1);
        if (f >= n || r >= r1) continue;
        if (a.partial) {
          a.partial[(static_cast<int64_t>(blockIdx.z) * a.m + r) * n + f] = acc[mt][nt][e];
        } else {
          const int64_t i = static_cast<int64_t>(r) * a.ldy + f;
          const float prev = a.beta != 0.0f ? a.beta * load_f(a.y, i, a.y_dtype) : 0.0f;
          store_f(a.y, i, acc[mt][nt][e] + prev, a.y_dtype);
        }
      }
}

// Token tiles of 8 per warp for a tile of about `rows` rows: 1, 2 or 4.
inline int mma_tiles_for(int rows) {
  return rows <= 8 ? 1 : rows <= 16 ? 2 : 4;
}

// Weight rows per warp for nt token tiles: 32 (two weight tiles) for FP8 with 2+ token tiles,
// else 16; a block covers 4 warps' rows.
inline int mma_rows_per_warp(CudaDType wt, int nt) {
  return wt == CudaDType::kF8E4M3 && nt >= 2 ? 32 : 16;
}

template <typename WT, int MT>
inline void launch_mma_nt(const MmaArgs& a, int nt, dim3 grid, cudaStream_t stream) {
  const dim3 block(kMmaWarps * 32);
  if (nt <= 1)
    mma_gemm_kernel<WT, 1, 1><<<grid, block, 0, stream>>>(a);
  else if (nt <= 2)
    mma_gemm_kernel<WT, 2, MT><<<grid, block, 0, stream>>>(a);
  else
    mma_gemm_kernel<WT, 4, MT><<<grid, block, 0, stream>>>(a);
}

// Weight dtype wt (bf16 or FP8), nt token tiles per warp, grid (token tiles,
// ceil(n / (4 * mma_rows_per_warp(wt, nt))), splits).
inline cudaError_t launch_mma_gemm(const MmaArgs& a, CudaDType wt, int nt, dim3 grid,
                                   cudaStream_t stream) {
  if (grid.x == 0 || a.n <= 0) return cudaSuccess;
  if (wt == CudaDType::kF8E4M3)
    launch_mma_nt<__nv_fp8_e4m3, 2>(a, nt, grid, stream);
  else
    launch_mma_nt<__nv_bfloat16, 1>(a, nt, grid, stream);
  return cudaGetLastError();
}

// Whether the tensor-core kernel takes these operands: bf16 activations in 16-byte aligned rows,
// weight rows a whole number of 16-byte pieces.
inline bool mma_gemm_supported(CudaDType x_dtype, CudaDType w_dtype, int k, int ldx,
                               const void* x) {
  if (x_dtype != CudaDType::kBF16) return false;
  if (w_dtype != CudaDType::kBF16 && w_dtype != CudaDType::kF8E4M3) return false;
  const int per16 = w_dtype == CudaDType::kF8E4M3 ? 16 : 8;
  return k % per16 == 0 && ldx % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
}

}  // namespace opsk
}  // namespace helix
