// The memory-bound MLA decode kernel (mla_decode_mem.h): one m16 tile of heads per CTA, bf16 or
// FP8 e4m3 latent KV at (L, R) = (512, 64).
//
// CTA = 8 warps. The CTA's 32-token tiles (a contiguous share of the batch's tiles, cut so that
// each sequence piece counts kSeqCost tiles more: a piece's fixed cost) stream into a ring of
// shared-memory stages by cp.async.bulk (bf16 at block sizes that are multiples of 32: 9 2D TMA
// boxes of [32 rows x 128 bytes] per tile, 128-byte swizzle; other bf16 blocks: one copy per token
// row, padded rows for conflict-free fragment loads; FP8: one per run of rows contiguous in the
// pool, 656-byte rows need no padding), completing on the stage's "full" mbarrier; the warps that
// read a stage release it on its "empty" mbarrier and their leader refills it. No block-wide
// barrier in the main loop. (A separate producer warp would make 9 warps: 3 on one SM
// sub-partition, which caps registers at 168 and spills the 128 accumulators.)
//
// Warp w: column half ch = w & 1 (256 of the 512 latent columns); worker w >> 1 owns the 16-token
// half (worker & 1) of every other tile of a sequence (team worker >> 1; FP8: whole tiles, every
// fourth, in mla_decode_mem_fp8.cuh's fp8_tiles). The two warps of a worker
// each compute half of the 576-wide score k-steps (mma.sync m16n8k16, Q fragments from a
// fragment-ordered shared buffer) and swap the partial scores (a 64-thread named barrier); each
// keeps its own online softmax and accumulates O[16, 256] in registers. At the end of a sequence
// the four workers' states merge through shared memory (at the CTA's last sequence: every warp
// merges and writes a quarter of its columns); the next sequence's query is prefetched into
// L2 a few tiles before.
//
// FP8 rows (kv_write): [c e4m3 x 512][k_pe bf16 x 64][scale fp32][pad] = 656 bytes. The latent
// GEMMs run in fp16 (every e4m3 value is an fp16 value): one cvt.rn.f16x2.e4m3x2 turns two bytes
// into the B operand's f16x2, and the per-token scale s_t never touches K/V elements:
// - scores: S = s_t . (q . k_t), one multiply per score after the MMA. q's latent part goes to fp16
//   scaled per (token, head) by a power of two 2^e with max |q| . 2^e in [2^13, 2^14) (absorbed q
//   may exceed fp16's range; exact in binary), undone on the scores (2^-e per row). The rope part
//   stays bf16 (its own bf16 MMA, q unscaled).
// - P.V: s_t is folded into P: P' = p_t . s_t . 2^c in fp16, with 2^c a running power of two per
//   warp: each tile asks for c_tile = 14 - ceil(log2 max s_t) (largest P' < 2^14); c only
//   ever decreases (like the running max: the accumulator is rescaled by 2^(c_new - c_old)), so
//   a tile with smaller scales keeps the current c and its P' stays normal in fp16 unless its
//   scales are ~2^-29 below the largest seen. At the sequence end O is brought back by 2^-c (fp32).
// The score k order is permuted to the byte pairs the cvt takes (q is permuted the same way); for
// P.V ldmatrix.trans of byte pairs and byte permutes pair the tokens (fp8_tiles).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"
#include "ops/cuda/mla_decode_mem_epilogue.cuh"
#include "ops/cuda/mla_decode_mem_fp8.cuh"
#include "ops/cuda/mla_decode_mem_layout.cuh"
#include "ops/cuda/mla_decode_sm90.h"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;
using namespace split;

// kTma (bf16, block_size % 32 == 0: a tile's rows are contiguous): tiles by TMA over kv_map
// (unused otherwise).
template <bool kFp8, bool kTma>
__global__ void __launch_bounds__(kThreads, 1)
    mla_mem_kernel(const __grid_constant__ CUtensorMap kv_map, const Args a) {
  using C = Cfg<kFp8, kTma>;
  extern __shared__ __align__(1024) uint8_t smem[];
  int* s_cum = reinterpret_cast<int*>(smem + C::kCumOff);
  const uint32_t ring = smem_u32(smem);
  const uint32_t bars = smem_u32(smem + C::kBarOff);
  auto full_bar = [&](int s) { return bars + 8 * s; };
  auto empty_bar = [&](int s) { return bars + 8 * (C::kStages + s); };
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int cta = blockIdx.x, group = blockIdx.y;
  if constexpr (kTma) {
    if (tid == 0 && (smem_u32(smem) & 1023u) != 0) __trap();  // swizzle atoms need 1024 B
    if (tid == 64)
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&kv_map))
                   : "memory");
  }

  if (tid == 32) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full_bar(s), 1);
      mbar_init(empty_bar(s), kFp8 ? 2 : 4);  // the warps that read a tile
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // Launched as a programmatic dependent (launch below): the kernel before may still run until
  // the wait (nothing before it reads global memory; L2 prefetches only), so this CTA's dispatch
  // and setup overlap its tail. bf16: seq_lens and the block table, the start's two dependent
  // reads, go into L2 meanwhile (FP8 with it: 1-2% slower at 32 x 64K / 128K, no faster at
  // 8 x 16K). Then the combine kernel may be scheduled; it waits for this grid's completion.
  if (!kFp8 && tid >= 32 && tid < 128)
    prefetch_start_inputs(a, tid - 32, group * gridDim.x + cta, gridDim.x * gridDim.y);
  grid_dep_wait();
  grid_dep_launch();

  int* s_len = s_cum + a.batch + 1;
  // s_vcum (the partition's virtual prefix sums) is read only by cta_tile_range: it borrows the
  // query buffer, written after the consumers' first barrier.
  int* s_vcum = reinterpret_cast<int*>(smem + C::kQOff);
  static_assert(C::kQOff % 4 == 0 && kQFragBytes >= 4 * 1025, "s_vcum for batches up to 1024");
  if (warp == 0)
    mla_combine::tile_prefix_sums<kTile, true, seq_cost<kFp8>()>(a, s_cum, s_len, lane, s_vcum);
  __syncthreads();
  mla_combine::TileRange tr;
  if (!mla_combine::cta_tile_range<mla_combine::kMinTiles, seq_cost<kFp8>()>(a, s_cum, cta, tr,
                                                                             s_vcum))
    return;
  const int t_begin = tr.t_begin, t_end = tr.t_end, n_tiles = t_end - t_begin;
  int cb = tr.cb, ck = tr.ck;

  // Loads: lane l of a warp copies token l of a tile (one bulk copy per row). The first kStages
  // tiles are issued by warps 0.. (one tile each, so their block-table lookups overlap); tile
  // jj + kStages by the leader warp of the team that consumed tile jj, once the team released it.
  // Unpadded rows (FP8: 656 bytes, an odd number of 16-byte units) land in one bulk copy per run
  // of a tile's rows that are contiguous in the pool (within one block: a whole 32-token tile at
  // block 64); a copy per row costs the copy engine ~40 ns per request whatever its size, which
  // capped the 656-byte rows at ~0.45 of copy bandwidth. bf16 at block sizes that are multiples
  // of 32 (kTma): 9 TMA boxes of [32 rows x 128 bytes] per tile, lane k < 9 loading box k, with the
  // 128-byte swizzle (conflict-free fragments, no padding). Other bf16 blocks: a copy per padded
  // row.
  constexpr bool kRuns = !kTma && C::kRowStride == C::kRowBytes;
  struct Slot {
    int blk, off;  // block id (a global load, first used at issue) and offset in the block
    int n;         // rows this lane copies from there (0: a later row of a run another lane copies)
  };
  auto lookup = [&](int jt) -> Slot {
    const int tile = t_begin + jt;
    const int lo = mla_combine::last_at_most(s_cum, a.batch - 1, tile);  // the tile's sequence
    const int len = s_len[lo];
    int pos = (tile - s_cum[lo]) * kTile + (kTma ? 0 : lane);
    int n = 1;
    if constexpr (kTma) {
      n = lane < C::kBoxes;  // rows past the end are read too (zeroed in P.V's part below)
    } else if (pos >= len) {
      pos = len - 1;  // a valid row: masked in the scores, finite in P.V
    } else if constexpr (kRuns) {
      const int off = pos % a.block_size;
      n = lane == 0 || off == 0 ? min(min(kTile - lane, a.block_size - off), len - pos) : 0;
    }
    const int blk =
        n > 0 ? a.block_table[static_cast<int64_t>(lo) * a.max_blocks_per_seq + pos / a.block_size]
              : 0;
    return {blk, pos % a.block_size, n};
  };
  auto issue = [&](int jt, Slot sl) {
    const int s = jt % C::kStages;
    if (lane == 0) mbar_expect_tx(full_bar(s), kTile * C::kRowBytes);
    __syncwarp();
    const int64_t row = static_cast<int64_t>(sl.blk) * a.block_size + sl.off;
    if (kTma && sl.n > 0)
      tma_load_2d(ring + s * C::kStageBytes + lane * C::kBoxBytes, &kv_map, 64 * lane,
                  static_cast<int>(row), full_bar(s));
    else if (sl.n > 0)
      bulk_copy(ring + s * C::kStageBytes + lane * C::kRowStride, a.kv_pool + row * C::kRowBytes,
                sl.n * C::kRowBytes, full_bar(s));
  };
  if (warp < C::kStages && warp < n_tiles) issue(warp, lookup(warp));

  // ---- consumers
  const int ch = warp & 1, worker = warp >> 1, team = worker >> 1, half = worker & 1;
  const int g = lane >> 2, t = lane & 3;
  uint32_t* qbuf = reinterpret_cast<uint32_t*>(smem + C::kQOff);
  float* mbuf = reinterpret_cast<float*>(smem + C::kMergeOff);
  float* xbuf = mbuf;
  float* qinv = reinterpret_cast<float*>(smem + C::kQinvOff);
  int xpar = 0;  // exchange buffer parity: both warps of a worker count the same chunks
  const uint32_t q_addr = smem_u32(qbuf) + lane * 16;
  // bf16 fragments: warp (worker, ch) reads 16-byte chunks 4 ch .. 4 ch + 3 of every 128 bytes of
  // its 16 token rows (K: k-steps 4 m + 2 ch + u; V: columns 64 m + 32 ch ..): offsets in the
  // stage of box m = 0 for u = 0, 1 (+ m * kBox). kTma: chunk j of row r at (j ^ (r & 7)) * 16 of
  // the row's 128 bytes.
  constexpr int kBox = kTma ? C::kBoxBytes : 128;
  auto frag = [&](int r, int jc) -> uint32_t {
    return kTma ? r * 128 + sw128(r, jc) : r * C::kRowStride + 16 * jc;
  };
  uint32_t k_off[2], v_off[2];
  {
    const int kr = 16 * (worker & 1) + (lane >> 4) * 8 + (lane & 7);
    const int vr = 16 * (worker & 1) + (lane & 7) + ((lane >> 3) & 1) * 8;
    for (int u = 0; u < 2; ++u) {
      k_off[u] = frag(kr, 4 * ch + 2 * u + ((lane >> 3) & 1));
      v_off[u] = frag(vr, 4 * ch + 2 * u + (lane >> 4));
    }
  }

  float acc[32][4];
  float m_run[2], d_run[2];
  float qi[2];  // FP8: 2^-e of rows g, g + 8
  int c_run;    // FP8: P' = p . s_t . 2^c_run (starts "unset": the first tile sets it)

  int j = 0;
  while (j < n_tiles) {
    const int seq_tiles = s_cum[cb + 1] - s_cum[cb];
    const int cnt = min(seq_tiles - ck, n_tiles - j);
    const int len = s_len[cb];
    consumers_sync();  // the previous sequence is done with the query and merge buffers
    build_q<kFp8>(a, cb, group, qbuf, qinv, tid);
    consumers_sync();
    if constexpr (kFp8) {
      qi[0] = qinv[g];
      qi[1] = qinv[g + 8];
    }
    c_run = 1000;
    m_run[0] = m_run[1] = -INFINITY;
    d_run[0] = d_run[1] = 0.f;
#pragma unroll
    for (int n = 0; n < 32; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[n][e] = 0.f;

    // The next sequence's query goes into L2 a few tiles before this one ends (earlier, the KV
    // stream would evict it): its build at the sequence end then skips a DRAM round trip.
    bool q_next = tid != 0 || j + cnt == n_tiles;
    if constexpr (kFp8)
      fp8_tiles<C>(a, s_cum, cb, group, j, cnt, ck, len, n_tiles, q_next, worker, ch, lane, ring,
                   bars, q_addr, xbuf, xpar, qi, c_run, m_run, d_run, acc, lookup, issue);
    else
      for (int jj = j + team; jj < j + cnt; jj += 2) {  // bf16 (FP8: fp8_tiles above)
        const int s = jj % C::kStages;
        if (!q_next && jj + kQAhead >= j + cnt) {
          q_next = true;
          prefetch_next_query(a, s_cum, cb, group);
        }
        const bool refill = warp == 4 * team && jj + C::kStages < n_tiles;
        Slot next{0, 0, 0};
        if (refill) next = lookup(jj + C::kStages);
        // A parity wait only tells the last two phases apart: first make sure the stage's previous
        // tile was released (so this full phase is the next one), else a warp running ahead of a
        // load that lands late would pass on the previous tile's phase parity.
        if (jj >= C::kStages) mbar_wait(empty_bar(s), ((jj / C::kStages) - 1) & 1);
        mbar_wait(full_bar(s), (jj / C::kStages) & 1);
        const int tok0 = (ck + jj - j) * kTile + 16 * half;  // first token of this warp's half
        if (tok0 < len) {
          const uint32_t stage = ring + s * C::kStageBytes;
          if constexpr (kTma) {
            if (tok0 + 16 > len) {
              // TMA read the rows past the end too (anything, NaN): P is 0 there but 0 . NaN is
              // not, so zero them in this warp's V chunks (read by no other warp), then order
              // that before the stage's next TMA fill.
              for (int r = 16 * half + len - tok0; r < 16 * half + 16; ++r)
                sts_zero16(stage + (lane >> 2) * C::kBoxBytes + r * 128 +
                           sw128(r, 4 * ch + (lane & 3)));
              fence_async_smem();
              __syncwarp();
            }
          }
          // 1. scores S[16 heads, 16 tokens] (two n-tiles), two accumulation chains each
          float sc[2][4];
          {
            float sa[2][2][4];
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int c = 0; c < 2; ++c)
#pragma unroll
                for (int e = 0; e < 4; ++e) sa[n][c][e] = 0.f;
            // The shared loads are volatile asm (kept in program order): issue a group's loads
            // together, then its MMAs, so the load latency is paid once per group.
            // This warp's half of the k-steps, 4 m + 2 ch + u (the partner warp does the rest).
            const uint32_t q_ch = q_addr + ch * 2 * 512;
#pragma unroll
            for (int k0 = 0; k0 < kKSteps / 2; k0 += 3) {
              uint4 qa[3];
              uint32_t kb[3][4];
#pragma unroll
              for (int i = 0; i < 3; ++i) {
                const int m = (k0 + i) >> 1, u = (k0 + i) & 1;
                qa[i] = lds128(q_ch + (4 * m + u) * 512);
                ldsm_x4(kb[i], stage + k_off[u] + m * kBox);
              }
#pragma unroll
              for (int i = 0; i < 3; ++i) {
                mma(sa[0][i & 1], qa[i], kb[i][0], kb[i][1]);
                mma(sa[1][i & 1], qa[i], kb[i][2], kb[i][3]);
              }
            }
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e) sc[n][e] = sa[n][0][e] + sa[n][1][e];
          }
          exchange_partial_scores(sc, xbuf, worker, ch, xpar, lane);
          // 2. online softmax (log2 domain) for rows g (r 0) and g + 8 (r 1)
          uint4 pa;
          {
            float mx[2] = {-INFINITY, -INFINITY};
            mask_scores(sc, mx, tok0, t, len, a.scale_log2);
            float alpha[2], m_use[2], rs[2] = {0.f, 0.f};
            alpha[0] = alpha[1] = 1.f;
            softmax_rows_update(mx, m_run, d_run, m_use, alpha);
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float p = exp2f(sc[n][e] - m_use[e >> 1]);
                rs[e >> 1] += p;
                sc[n][e] = p;
              }
            add_row_sums(rs, d_run);
            pa.x = pack_bf16(sc[0][0], sc[0][1]);
            pa.y = pack_bf16(sc[0][2], sc[0][3]);
            pa.z = pack_bf16(sc[1][0], sc[1][1]);
            pa.w = pack_bf16(sc[1][2], sc[1][3]);
            rescale_rows(acc, alpha);
          }
          // 3. O[16, 256 columns of half ch] += P . V
          // n-tiles 2p, 2p + 1: chunks 8 (p >> 1) + 4 ch + 2 (p & 1), + 1
#pragma unroll
          for (int p0 = 0; p0 < 16; p0 += 4) {
            uint32_t vb[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
              ldsm_x4_t(vb[i], stage + v_off[(p0 + i) & 1] + ((p0 + i) >> 1) * kBox);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              mma(acc[2 * (p0 + i)], pa, vb[i][0], vb[i][1]);
              mma(acc[2 * (p0 + i) + 1], pa, vb[i][2], vb[i][3]);
            }
          }
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(empty_bar(s));
        if (refill) {
          mbar_wait(empty_bar(s), (jj / C::kStages) & 1);
          issue(jj + C::kStages, next);
        }
      }

    // Merge the four workers' states per column half. A state is parked as 33 float4 per lane
    // (the O fragments, then m and d of both rows).
    consumers_sync();  // every score exchange done, every warp past its last tile
    if constexpr (kFp8) {
      // O back from units of 2^c (fp32, exact); a warp with no tile here has acc = 0
      if (c_run != 1000) {
        const float u = pow2i(-c_run);
#pragma unroll
        for (int n = 0; n < 32; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[n][e] *= u;
      }
    }
    auto park = [&](float4* p) { park_state(p, acc, m_run, d_run); };
    auto absorb = [&](const float4* p) { absorb_state(p, acc, m_run, d_run); };
    const bool complete = s_cum[cb] >= t_begin && s_cum[cb + 1] <= t_end;
    const int slot = mla_combine::partial_slot(s_cum, cb, t_begin);
    if (j + cnt == n_tiles) {
      // The CTA's last sequence: no tile in flight, the ring is free. Every warp parks its state
      // there; worker w then merges n-tiles 8 w .. 8 w + 7 of its column half from all four and
      // writes them (the merge and the write spread over all eight warps). (FP8 kept a serial
      // merge until session 6: measured 2-4 us slower at batch 1-8 x 1K-4K with its 16-token
      // loop, 1-2% faster at 8-32 x 16K-64K with fp8_tiles.)
      float4* ring4 = reinterpret_cast<float4*>(smem);
      auto state = [&](int w) { return ring4 + (w * 2 + ch) * 33 * 32 + lane; };
      // bf16: a warp keeps the n-tiles it merges itself (8 worker ..) in registers, a quarter less
      // to park and to read back. (FP8: ptxas then spilled 56 bytes; it parks all.)
      constexpr bool kOwn = !kFp8;
      float own[8][4];
      {
        float4* p = state(worker);
#pragma unroll
        for (int n = 0; n < 32; ++n) {
          if (kOwn && (n >> 3) == worker) {
#pragma unroll
            for (int e = 0; e < 4; ++e) own[n & 7][e] = acc[n][e];
          } else {
            p[n * 32] = make_float4(acc[n][0], acc[n][1], acc[n][2], acc[n][3]);
          }
        }
        p[32 * 32] = make_float4(m_run[0], m_run[1], d_run[0], d_run[1]);
      }
      consumers_sync();
      float wk[4][2], m_fin[2], d_fin[2];
      {
        float mk[4][2], dk[4][2];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float4 md = state(k)[32 * 32];
          mk[k][0] = md.x;
          mk[k][1] = md.y;
          dk[k][0] = md.z;
          dk[k][1] = md.w;
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          m_fin[r] = fmaxf(fmaxf(mk[0][r], mk[1][r]), fmaxf(mk[2][r], mk[3][r]));
          const float m_use = m_fin[r] == -INFINITY ? 0.f : m_fin[r];
          d_fin[r] = 0.f;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            wk[k][r] = exp2f(mk[k][r] - m_use);  // 0 for a worker with no tokens here
            d_fin[r] += dk[k][r] * wk[k][r];
          }
        }
      }
      float o[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        float4 v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
          v[k] = kOwn && k == worker ? make_float4(own[i][0], own[i][1], own[i][2], own[i][3])
                                     : state(k)[(8 * worker + i) * 32];
#pragma unroll
        for (int e = 0; e < 4; ++e) o[i][e] = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          o[i][0] += v[k].x * wk[k][0];
          o[i][1] += v[k].y * wk[k][0];
          o[i][2] += v[k].z * wk[k][1];
          o[i][3] += v[k].w * wk[k][1];
        }
      }
      write_state<kFp8>(a, o, 8 * worker, m_fin, d_fin, complete, slot, worker == 0, cb, group, cta,
                        ch, g, t);
    } else {
      // Tiles of the next sequence are in flight: two buffers, the merge buffer and the query
      // buffer (rebuilt after this), one per column half; 3 -> 2, 1 -> 0, 2 -> 0.
      float4* buf =
          reinterpret_cast<float4*>(ch == 0 ? smem + C::kMergeOff : smem + C::kQOff) + lane;
      auto merge_round = [&](int src, int dst) {
        if (worker == src) park(buf);
        consumers_sync();
        if (worker == dst) absorb(buf);
        consumers_sync();
      };
      const bool two_teams = cnt >= 2;  // team 1 had a tile of this sequence here
      if (two_teams) merge_round(3, 2);
      merge_round(1, 0);
      if (two_teams) merge_round(2, 0);
      if (worker == 0)
        write_state<kFp8>(a, acc, 0, m_run, d_run, complete, slot, true, cb, group, cta, ch, g, t);
    }
    j += cnt;
    ++cb;
    ck = 0;
    while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
  }
}

template <bool kFp8>
cudaError_t prepare_t(int max_batch, size_t* smem, int* ctas_per_sm) {
  static_assert(Cfg<false, true>::kCumOff <= Cfg<false>::kCumOff,
                "one size fits both bf16 kernels");
  *smem = Cfg<kFp8>::smem_bytes(max_batch);
  cudaError_t cerr = prepare_combine();
  if (cerr != cudaSuccess) return cerr;
  cudaError_t err =
      cudaFuncSetAttribute(mla_mem_kernel<kFp8, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(*smem));
  if (!kFp8 && err == cudaSuccess)
    err =
        cudaFuncSetAttribute(mla_mem_kernel<false, true>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(*smem));
  if (err != cudaSuccess) return err;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas_per_sm, mla_mem_kernel<kFp8, false>,
                                                       kThreads, *smem);
}

}  // namespace

cudaError_t prepare(bool fp8, int max_batch, size_t* smem, int* ctas_per_sm) {
  return fp8 ? prepare_t<true>(max_batch, smem, ctas_per_sm)
             : prepare_t<false>(max_batch, smem, ctas_per_sm);
}

cudaError_t launch(const Args& a, bool fp8, dim3 grid, size_t smem, cudaStream_t stream) {
  // bf16 tiles by TMA when a tile's 32 rows are contiguous in the pool; the map is encoded on the
  // host and passed by value, as the sm90 kernel's (graph replays reuse the copy). It depends only
  // on the pool's address: the last one is kept per host thread (encoding costs host time that a
  // decode step's launch sequence would otherwise wait for).
  CUtensorMap map{};
  bool tma = false;
  if (!fp8 && a.block_size % kTile == 0) {
    // Cached per pool and host thread by encode_kv_map.
    const cudaError_t err = mla_sm90::encode_kv_map(&map, a.kv_pool, false, kTile);
    if (err != cudaSuccess && err != cudaErrorNotSupported) return err;
    tma = err == cudaSuccess;  // no encoder in this driver: padded rows by bulk copies
  }
  // A programmatic dependent of the kernel before it (graph-capturable, as the combine below): the
  // CTAs may be dispatched while that one drains and wait for it in grid_dep_wait.
  LaunchEx ex(grid, dim3(kThreads), smem, stream);
  ex.pdl(!pdl_off());
  cudaError_t err = fp8   ? ex(mla_mem_kernel<true, false>, map, a)
                    : tma ? ex(mla_mem_kernel<false, true>, map, a)
                          : ex(mla_mem_kernel<false, false>, map, a);
  if (err != cudaSuccess) return err;
  return launch_combine(a, fp8, stream);
}

}  // namespace helix::cuda::mla_mem
