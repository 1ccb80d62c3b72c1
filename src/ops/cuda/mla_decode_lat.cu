// The small-batch MLA decode kernel (mla_decode_lat.h): bf16 latent KV, (L, R) = (512, 64), 16
// heads per CTA, one launch.
//
// At batch 1 the KV read is small (4.7 MB at 4K tokens, ~1 us of copy); the split kernels' time is
// fixed costs: a second launch, per-CTA prologues, and a combine kernel whose 16-128 CTAs wait on
// the split grid. This kernel does the whole call in one launch:
// - phase 1: the same even split of all sequences' 32-token tiles over the CTAs of a head group
//   as the split kernels (one tile per CTA and up: at 4K, 128 CTAs), tiles streamed by cp.async
//   (16 bytes a thread, any block size, no tensor map to encode on the host) into a ring of
//   padded rows; the query's A fragments live in registers for a whole sequence;
// - a grid-wide barrier (an atomic counter in the workspace; the plan makes every CTA resident),
//   skipped when no sequence spans two CTAs;
// - phase 2: every CTA merges a share of the split sequences' partials (64-column slices of a
//   head, up to 8 partial loads in flight per thread), writes the empty sequences.
// On H200 this is 0.83-0.95x the split kernels' time at 16 heads, batch 1, 1K-16K (graph replays;
// ~1 us slower on the stream at 1K-4K), and slower at 128 heads and past 16K: kAuto picks it only
// where it wins (mla_decode_bf16.cu). What remains is in-kernel: each dependent global-memory step
// (seq_lens, block table, KV, the partial write, the barrier, the partial read) costs 1-3 us
// (bench/RESULTS.md, "Batch-1 latency").
//
// Per tile (8 warps): warp w computes the scores of tokens 8 (w & 3).. + 7 over half the 576 dims
// (k-half w >> 2; mma.sync m16n8k16, two accumulation chains), the halves meet in shared memory;
// every warp then runs the same online softmax on the tile's 16 x 32 scores and accumulates
// O[16, 64 columns 64 w..] += P V (ldmatrix.trans from the same tile).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_lat.h"
#include "ops/cuda/mla_decode_tile16.cuh"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_lat {
namespace {

using mla_bf16::Args;
using namespace ptx;
namespace mc = mla_combine;

// Diagnostic builds only (scripts/device/lat_trace.cu): thread 0 of each CTA stamps %globaltimer
// and clock64 at phase points into g_lat_trace.
#ifdef MLA_LAT_TRACE
__device__ unsigned long long g_lat_trace[1024][12][2];
#define LAT_TRACE(i)                                         \
  do {                                                       \
    if (threadIdx.x == 0) {                                  \
      unsigned long long gt;                                 \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(gt)); \
      const int cta_ = blockIdx.y * gridDim.x + blockIdx.x;  \
      g_lat_trace[cta_][i][0] = gt;                          \
      g_lat_trace[cta_][i][1] = clock64();                   \
    }                                                        \
  } while (0)
#else
#define LAT_TRACE(i) \
  do {               \
  } while (0)
#endif

// The grid barrier's poll interval and the fewest tiles a CTA takes, tuned on H200
// (bench/RESULTS.md "Batch-1 latency": longer polls and more tiles per CTA, i.e. fewer larger
// partials, did not help).
constexpr unsigned kSleepNs = 20;
constexpr int kMinTiles = 1;

using namespace mla_tile16;  // tile geometry, mma, the tile step
constexpr int kStages = 4;
constexpr int kScOff = kStages * kStageBytes;           // scores [2 k-halves][16][kScStride]
constexpr int kQOff = kScOff + kScBytes;                // the query: 16 rows at kRowStride
constexpr int kMaxCtas = 1024;                          // CTAs per head group (plan caps it)
constexpr int kBegOff = kQOff + 16 * kRowStride;        // s_beg[kMaxCtas + 1]
constexpr int kTabEntries = 256;                        // batch 1: the block table's head
constexpr int kTabOff = kBegOff + 4 * (kMaxCtas + 16);  // s_tab[kTabEntries]
constexpr int kCumOff = kTabOff + 4 * kTabEntries;      // s_cum[B + 1], s_len[B]
static_assert(kStageBytes % 16 == 0 && kCumOff % 16 == 0, "16-byte aligned regions");

// Every CTA of the grid arrives once; returns when all have. The counter only grows (64 bits):
// launch k waits for it to reach (k + 1) x grid size.
__device__ __forceinline__ void grid_barrier(unsigned long long* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned long long n = static_cast<unsigned long long>(gridDim.x) * gridDim.y;
    const unsigned long long target = (atomicAdd(counter, 1ull) / n + 1) * n;
    unsigned long long v;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(counter) : "memory");
      if (v >= target) break;
      __nanosleep(kSleepNs);
    }
    __threadfence();
  }
  __syncthreads();
}

// The partition without 64-bit divisions on the critical path (each is a ~300-cycle software
// routine; a chain of them cost microseconds): s_beg[c] = the first tile of CTA c, c in [0, ctas],
// one division per thread in parallel, then lookups in shared memory.
__device__ __forceinline__ void fill_begins(int* s_beg, int total, int ctas) {
  for (int c = threadIdx.x; c <= ctas; c += kThreads) s_beg[c] = mc::cta_begin(c, total, ctas);
}
// The CTA whose range holds tile x (mc::cta_of: the last c < ctas with s_beg[c] <= x).
__device__ __forceinline__ int cta_of(const int* s_beg, int ctas, int x) {
  return mc::last_at_most(s_beg, ctas - 1, x);
}

// The query rows of sequence b in this CTA's head group, 16-byte pieces (rows past the heads 0):
// loaded early into registers, stored to shared memory when the sequence starts.
struct QPieces {
  uint4 v[kQPer];
};
__device__ __forceinline__ QPieces load_q(const Args& a, int b, int group) {
  QPieces r;
  const uint4* q = static_cast<const uint4*>(a.q);
#pragma unroll
  for (int i = 0; i < kQPer; ++i) {
    const int x = threadIdx.x + kThreads * i, row = x / (kRowBytes / 16);
    const int h = group * kHeadGroup + row;
    r.v[i] = make_uint4(0u, 0u, 0u, 0u);
    if (x < kQChunks && h < a.num_heads)
      r.v[i] = __ldg(q + (static_cast<int64_t>(b) * a.num_heads + h) * (kRowBytes / 16) +
                     x % (kRowBytes / 16));
  }
  return r;
}
__device__ __forceinline__ void store_q(uint8_t* smem, const QPieces& r) {
#pragma unroll
  for (int i = 0; i < kQPer; ++i) {
    const int x = threadIdx.x + kThreads * i;
    if (x < kQChunks)
      *reinterpret_cast<uint4*>(smem + kQOff + (x / (kRowBytes / 16)) * kRowStride +
                                16 * (x % (kRowBytes / 16))) = r.v[i];
  }
}

// Phase 1: this CTA's tiles [t_begin, t_end) of head group `group`.
__device__ __forceinline__ void split_phase(const Args& a, uint8_t* smem, const int* s_cum,
                                            const int* s_len, const mc::TileRange& tr, int cta,
                                            int group, QPieces qp) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int t_begin = tr.t_begin, t_end = tr.t_end, n_tiles = t_end - t_begin;
  const uint32_t ring = smem_u32(smem);
  float* s_sc = reinterpret_cast<float*>(smem + kScOff);

  // Tile jt of the range into stage jt % kStages: thread = (row tid / 8, 16-byte chunks
  // tid % 8 + 8 j); rows past the sequence's end are zero-filled. The row's address (a block-table
  // load) is looked up one tile before its copies are issued, so no load latency sits between a
  // tile's barrier and its MMAs. issue() always commits a group (maybe empty): uniform wait counts.
  auto lookup = [&](int jt) -> const uint8_t* {
    if (jt >= n_tiles) return nullptr;
    const int tile = t_begin + jt;
    const int lo = mc::last_at_most(s_cum, a.batch - 1, tile);  // the tile's sequence
    const int pos = (tile - s_cum[lo]) * kTile + (tid >> 3);
    if (pos >= s_len[lo]) return nullptr;
    const int bi = pos / a.block_size;
    const int blk = a.batch == 1 && bi < kTabEntries
                        ? reinterpret_cast<const int*>(smem + kTabOff)[bi]
                        : a.block_table[static_cast<int64_t>(lo) * a.max_blocks_per_seq + bi];
    return a.kv_pool + (static_cast<int64_t>(blk) * a.block_size + pos % a.block_size) * kRowBytes;
  };
  auto issue = [&](int jt, const uint8_t* src) {
    if (jt < n_tiles) {
      const uint32_t dst = ring + (jt % kStages) * kStageBytes + (tid >> 3) * kRowStride;
#pragma unroll
      for (int j = 0; j < kRowBytes / 16 / 8; ++j) {
        const int c = (tid & 7) + 8 * j;
        cp_async16(dst + 16 * c, src ? src + 16 * c : a.kv_pool, src ? 16u : 0u);
      }
    }
    cp_async_commit();
  };
  const uint8_t* pend[kStages];
#pragma unroll
  for (int s = 0; s < kStages; ++s) pend[s] = lookup(s);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s, pend[s]);
  const uint8_t* next_src = pend[kStages - 1];  // tile kStages - 1's, issued in iteration 0
  LAT_TRACE(2);

  const int kh = warp >> 2;  // the k-half of the query fragments this warp holds
  int cb = tr.cb, ck = tr.ck, j = 0;
  while (j < n_tiles) {
    const int seq_tiles = s_cum[cb + 1] - s_cum[cb];
    const int cnt = min(seq_tiles - ck, n_tiles - j);
    const int len = s_len[cb];
    // The query's A fragments for this warp's 18 k-steps, through shared memory (ldmatrix).
    if (j > 0) qp = load_q(a, cb, group);  // the first sequence's came with the range
    store_q(smem, qp);
    __syncthreads();
    uint32_t qf[kKHalf][4];
    load_q_frags(smem_u32(smem + kQOff), kh, lane, qf);
    float acc[8][4], m_run[2], d_run[2];
    zero_state(acc, m_run, d_run);

    for (int jj = j; jj < j + cnt; ++jj) {
      cp_async_wait<kStages - 2>();
      __syncthreads();  // tile jj landed for every thread; tile jj - 1 fully consumed
      if (jj == 0) LAT_TRACE(3);
      issue(jj + kStages - 1, next_src);
      next_src = lookup(jj + kStages);
      const uint32_t stage = ring + (jj % kStages) * kStageBytes;
      tile_step(stage, qf, s_sc, (ck + jj - j) * kTile, len, a.scale_log2, acc, m_run, d_run, warp,
                lane);
      if (jj == 0) LAT_TRACE(4);
    }

    // The sequence's part in this CTA: final (all its tiles here) or a partial slot (0: the
    // range's first sequence, 1: its last), as the split kernels write them.
    const bool complete = s_cum[cb] >= t_begin && s_cum[cb + 1] <= t_end;
    const int64_t prow =
        mc::partial_row(a, group, cta, mc::partial_slot(s_cum, cb, t_begin), kHeadGroup);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int hl = g + 8 * rr, h = group * kHeadGroup + hl;
      if (h >= a.num_heads) continue;
      const float inv = 1.f / d_run[rr];
      const int64_t orow = static_cast<int64_t>(cb) * a.num_heads + h;
      if (warp == 0 && t == 0) {
        const float lse = mc::lse_from_log2(m_run[rr], d_run[rr]);
        if (complete)
          a.lse[orow] = lse;
        else
          a.part_lse[prow + hl] = lse;
      }
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const int col = kCols * warp + 8 * n + 2 * t;
        const float v0 = acc[n][2 * rr] * inv, v1 = acc[n][2 * rr + 1] * inv;
        if (!complete)
          *reinterpret_cast<float2*>(a.part_out + (prow + hl) * L + col) = make_float2(v0, v1);
        else if (a.out_bf16)
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(a.out) + orow * L + col) =
              __floats2bfloat162_rn(v0, v1);
        else
          *reinterpret_cast<float2*>(static_cast<float*>(a.out) + orow * L + col) =
              make_float2(v0, v1);
      }
    }
    LAT_TRACE(8);
    j += cnt;
    ++cb;
    ck = 0;
    while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
  }
  cp_async_wait<0>();  // no copy may land in shared memory phase 2 reuses
}

// Phase 2: item = (sequence, head, 64-column slice). A pass of the CTA takes kIp items; thread =
// (item ii, partial group pg of kPg, 4-column chunk cl): kPg is the fewest groups that keep at most
// 8 partial loads per thread (all in flight at once: one L2 round trip per pass). Each thread
// merges its partials online, the groups meet in shared memory. Empty sequences get out 0 and lse
// -inf; sequences one CTA held are final already.
__device__ __forceinline__ void combine_phase(const Args& a, uint8_t* smem, const int* s_cum,
                                              const int* s_beg, int ctas) {
  const int tid = threadIdx.x;
  int n_max = 1;  // the most partials of one sequence
  for (int b = 0; b < a.batch; ++b)
    if (s_cum[b + 1] > s_cum[b])
      n_max = max(n_max, cta_of(s_beg, ctas, s_cum[b + 1] - 1) - cta_of(s_beg, ctas, s_cum[b]) + 1);
  int pg_n = 1;
  while (pg_n < 16 && pg_n * 8 < n_max) pg_n *= 2;
  const int ip = 16 / pg_n;
  const int cl = tid & 15, pg = (tid >> 4) % pg_n, ii = tid / (16 * pg_n);
  constexpr int kSlices = L / kCols;
  const int items = a.batch * a.num_heads * kSlices;
  const int n_grid = gridDim.x * gridDim.y;
  float* s_m = reinterpret_cast<float*>(smem);                   // [kThreads]
  float* s_d = s_m + kThreads;                                   // [kThreads]
  float4* s_o = reinterpret_cast<float4*>(smem + 8 * kThreads);  // [kThreads]
  for (int base = (blockIdx.y * gridDim.x + blockIdx.x) * ip; base < items; base += n_grid * ip) {
    const int item = base + ii;
    bool active = false;
    float m = -INFINITY, d = 0.f;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    int64_t orow = 0;
    int col = 0;
    if (item < items) {
      const int b = item / (a.num_heads * kSlices), h = (item / kSlices) % a.num_heads;
      col = (item % kSlices) * kCols + 4 * cl;
      const int before = s_cum[b], mine = s_cum[b + 1] - before;
      orow = static_cast<int64_t>(b) * a.num_heads + h;
      if (mine == 0) {
        if (pg == 0)
          mc::store4(static_cast<float*>(a.out) + orow * L,
                     static_cast<__nv_bfloat16*>(a.out) + orow * L, a.out_bf16, col,
                     make_float4(0.f, 0.f, 0.f, 0.f));
        if (pg == 0 && col == 0) a.lse[orow] = -INFINITY;
      } else {
        const int c_lo = cta_of(s_beg, ctas, before);
        const int c_hi = cta_of(s_beg, ctas, before + mine - 1);
        active = c_lo != c_hi;
        const int group = h / kHeadGroup, hl = h % kHeadGroup;
        for (int i0 = c_lo + pg; active && i0 <= c_hi; i0 += 8 * pg_n) {
          float l[8];
          float4 v[8] = {};
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const int c = i0 + pg_n * u;
            l[u] = -INFINITY;
            if (c <= c_hi && s_beg[c] < s_beg[c + 1]) {
              const int slot = (c == c_lo && s_beg[c] != before) ? 1 : 0;
              const int64_t row = mc::partial_row(a, group, c, slot, kHeadGroup) + hl;
              l[u] = __ldcg(a.part_lse + row);
              v[u] = __ldcg(reinterpret_cast<const float4*>(a.part_out + row * L + col));
            }
          }
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            if (l[u] == -INFINITY) continue;
            const float m_new = fmaxf(m, l[u]);
            const float f = __expf(m - m_new), w = __expf(l[u] - m_new);
            d = d * f + w;
            mc::scale4(o, f);
            mc::fma4(o, w, v[u]);
            m = m_new;
          }
        }
      }
    }
    LAT_TRACE(9);
    s_m[tid] = m;
    s_d[tid] = d;
    s_o[tid] = o;
    __syncthreads();
    if (active && pg == 0) {
      float mm = -INFINITY;
      for (int k = 0; k < pg_n; ++k) mm = fmaxf(mm, s_m[tid + 16 * k]);
      float dd = 0.f;
      float4 oo = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int k = 0; k < pg_n; ++k) {
        const float mk = s_m[tid + 16 * k];
        if (mk == -INFINITY) continue;
        const float w = __expf(mk - mm);
        dd += w * s_d[tid + 16 * k];
        mc::fma4(oo, w, s_o[tid + 16 * k]);
      }
      mc::scale4(oo, 1.f / dd);
      mc::store4(static_cast<float*>(a.out) + orow * L,
                 static_cast<__nv_bfloat16*>(a.out) + orow * L, a.out_bf16, col, oo);
      if (col == 0) a.lse[orow] = mm + __logf(dd);
    }
    LAT_TRACE(10);
    __syncthreads();  // the shared slots are reused by the next pass
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    mla_lat_kernel(const Args a, unsigned long long* counter) {
  extern __shared__ __align__(128) uint8_t smem[];
  LAT_TRACE(0);
  int* s_cum = reinterpret_cast<int*>(smem + kCumOff);
  int* s_len = s_cum + a.batch + 1;
  // Batch 1: the sequence is known before its length, so its query and the head of its block
  // table load at once, beside seq_lens (each dependent global load costs ~1 us here).
  QPieces q_early;
  if (a.batch == 1) {
    q_early = load_q(a, 0, blockIdx.y);
    if (threadIdx.x >= 32) {
      int* s_tab = reinterpret_cast<int*>(smem + kTabOff);
      const int n = min(kTabEntries, a.max_blocks_per_seq);
      for (int i = threadIdx.x - 32; i < n; i += kThreads - 32) s_tab[i] = a.block_table[i];
    }
  }
  if (threadIdx.x < 32) mc::tile_prefix_sums<kTile, true>(a, s_cum, s_len, threadIdx.x);
  __syncthreads();
  LAT_TRACE(1);
  const int total = s_cum[a.batch];
  const int ctas = total > 0 ? mc::active_ctas<kMinTiles>(total, a.ctas_per_group) : 1;
  int* s_beg = reinterpret_cast<int*>(smem + kBegOff);
  fill_begins(s_beg, total, ctas);
  __syncthreads();
  const int cta = blockIdx.x;
  if (total > 0 && cta < ctas && s_beg[cta] < s_beg[cta + 1]) {
    mc::TileRange tr;
    tr.t_begin = s_beg[cta];
    tr.t_end = s_beg[cta + 1];
    while (s_cum[tr.cb + 1] <= tr.t_begin) ++tr.cb;
    tr.ck = tr.t_begin - s_cum[tr.cb];
    split_phase(a, smem, s_cum, s_len, tr, cta, blockIdx.y,
                a.batch == 1 ? q_early : load_q(a, tr.cb, blockIdx.y));
  }
  // Only sequences that span two CTAs need the barrier (every CTA sees the same s_cum).
  bool split = false;
  for (int b = 0; b < a.batch && !split && total > 0; ++b)
    split = s_cum[b + 1] > s_cum[b] &&
            cta_of(s_beg, ctas, s_cum[b]) != cta_of(s_beg, ctas, s_cum[b + 1] - 1);
  LAT_TRACE(5);
  if (split) grid_barrier(counter);
  __syncthreads();  // phase 2 reuses the ring
  LAT_TRACE(6);
  combine_phase(a, smem, s_cum, s_beg, ctas);
  LAT_TRACE(7);
}

size_t smem_for(int max_batch) {
  return kCumOff + sizeof(int) * (2 * static_cast<size_t>(max_batch) + 1);
}

}  // namespace

bool eligible(int kv_lora_rank, int rope_dim, bool fp8, int max_batch) {
  return kv_lora_rank == L && rope_dim == R && !fp8 && max_batch <= kMaxBatch;
}

cudaError_t prepare(int heads, int max_batch, size_t* smem, int* ctas_per_group) {
  *smem = smem_for(max_batch);
  cudaError_t err = cudaFuncSetAttribute(
      mla_lat_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(*smem));
  int dev = 0, sms = 0, per_sm = 0;
  if (err == cudaSuccess) err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mla_lat_kernel, kThreads, *smem);
  if (err != cudaSuccess) return err;
  if (per_sm <= 0) return cudaErrorInvalidConfiguration;
  const int groups = (heads + kHeadGroup - 1) / kHeadGroup;
  // All CTAs resident at once (the grid barrier waits for every one of them).
  *ctas_per_group = std::min(sms * per_sm / groups, kMaxCtas);
  return *ctas_per_group > 0 ? cudaSuccess : cudaErrorNotSupported;
}

size_t partial_bytes(int heads, int ctas_per_group) {
  const size_t groups = (heads + kHeadGroup - 1) / kHeadGroup;
  const size_t rows = groups * ctas_per_group * 2 * kHeadGroup;
  return (sizeof(float) * rows * (L + 1) + 15) / 16 * 16;
}

cudaError_t launch(const Args& a, unsigned long long* counter, dim3 grid, size_t smem,
                   cudaStream_t stream) {
  // Cooperative: the grid barrier needs every CTA resident together, which a cooperative launch
  // guarantees (and refuses, with an error, a grid too large for it) instead of assuming.
  return LaunchEx(grid, dim3(kThreads), smem, stream).cooperative()(mla_lat_kernel, a, counter);
}

}  // namespace helix::cuda::mla_lat
