// The cluster MLA decode kernel (mla_decode_cluster.h): bf16 latent KV, (L, R) = (512, 64),
// 16 heads per CTA, each (sequence, head group) on one or (batch 1) several thread-block clusters.
//
// At batch 1 the KV read is small (4.7 MB at 4K tokens) and the split kernels' time is fixed
// costs; the one-launch latency kernel (mla_decode_lat.cu) still pays four dependent global steps
// after the KV load (partial write, grid barrier, partial read, output). Here the partials of a
// cluster stay on chip:
// - worker g of the sequence's N CTAs (cluster c, rank r: g = c C + r) takes its tiles g, g + N,
//   g + 2N, ...: which tiles are its own does not depend on the length, so the block-table entries
//   of its first kPre tiles load beside seq_lens and the query (one global round trip before the
//   KV copies are issued; a dependent lookup a tile throttled the loop);
// - the tiles stream by cp.async (16 bytes a thread, any block size) into a ring of kStages padded
//   stages; the tile loop is the latency kernel's (8 warps, mma.sync m16n8k16, online softmax).
//   One SM streams only ~30 GB/s through it (bench/RESULTS.md, "Batch-1 latency on thread-block
//   clusters"), so at 2K-16K the tiles spread over up to 6 clusters of 16;
// - each CTA leaves its unnormalised O [16, L] and (max, sum) per row in shared memory; after a
//   cluster barrier CTA r merges rows r, r + C, ... from every CTA's shared memory (DSMEM loads)
//   and writes out and lse, or with several clusters the cluster's merged rows into the workspace,
//   where the last cluster to arrive at the rows' counter merges them (no waiting); the cluster
//   barrier's wait at the end keeps every CTA's shared memory alive until all reads are done.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_cluster.h"
#include "ops/cuda/mla_decode_tile16.cuh"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_cluster {
namespace {

using mla_bf16::Args;
using namespace ptx;
namespace mc = mla_combine;
namespace cg = cooperative_groups;

// Diagnostic builds only: thread 0 of each CTA stamps %globaltimer at phase points.
#ifdef MLA_CLUSTER_TRACE
__device__ unsigned long long g_cluster_trace[1024][8];
#define CL_TRACE(i)                                                                            \
  do {                                                                                         \
    if (threadIdx.x == 0) {                                                                    \
      unsigned long long gt;                                                                   \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(gt));                                   \
      g_cluster_trace[(blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x][i] = gt; \
    }                                                                                          \
  } while (0)
#else
#define CL_TRACE(i) \
  do {              \
  } while (0)
#endif

using namespace mla_tile16;  // tile geometry, mma, the tile step
constexpr int kStages = 5;   // 4 tiles in flight before the loop
#ifdef MLA_CLUSTER_BULK
constexpr bool kBulk = true;
#else
constexpr bool kBulk = false;
#endif
constexpr int kPre = 32;  // tiles a CTA whose block-table entries load up front (16K at 16 CTAs)
constexpr int kScOff = kStages * kStageBytes;  // scores [2 k-halves][16][kScStride]
constexpr int kMdOff = kScOff + kScBytes;      // s_m[16], s_d[16]: the rows' max, sum
constexpr int kBarOff = kMdOff + 2 * 16 * 4;
constexpr int kEntOff = kBarOff + 8 * kStages;  // s_ent[kPre][kTile]: block ids of the rows
constexpr int kSmem = kEntOff + 4 * kPre * kTile;
// The query passes through the last stage (the first tile copied there is issued after every
// warp holds its query fragments); the merge's O through the first (after the last tile).
constexpr int kQOff = (kStages - 1) * kStageBytes;
constexpr int kOStride = L + 8;  // floats: the fragments' float2 stores at most 2-way conflicted
static_assert(16 * kRowStride <= kStageBytes && 16 * kOStride * 4 <= kStageBytes, "fits a stage");
static_assert(kStageBytes % 16 == 0 && kScOff % 16 == 0, "16-byte aligned regions");
static_assert(kPre * kTile % kThreads == 0 && kPre >= kStages, "whole entry loads");

// Distributed shared memory: this CTA's shared address in CTA `rank` of the cluster, and loads
// from it; the cluster barrier split into arrive and wait.
__device__ __forceinline__ uint32_t mapa(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
// Predicated (no branch around them, so the loads of all sources are in flight together); v is
// left as passed where `on` is false.
__device__ __forceinline__ void ld_dsmem2(float2& v, uint32_t addr, bool on) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %3, 0;\n@p ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n}\n"
      : "+f"(v.x), "+f"(v.y)
      : "r"(addr), "r"(static_cast<int>(on)));
}
__device__ __forceinline__ void ld_dsmem4(float4& v, uint32_t addr, bool on) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\n"
      "@p ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n}\n"
      : "+f"(v.x), "+f"(v.y), "+f"(v.z), "+f"(v.w)
      : "r"(addr), "r"(static_cast<int>(on)));
}
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

__global__ void __launch_bounds__(kThreads, 1)
    mla_cluster_kernel(const Args a, unsigned* counters) {
  extern __shared__ __align__(128) uint8_t smem[];
  CL_TRACE(0);
  cg::cluster_group cluster = cg::this_cluster();
  const int cs = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int group = blockIdx.y, b = blockIdx.z;
  // Clusters per sequence (ncl > 1 only at batch 1): worker gi of nw takes tiles gi, gi + nw, ...
  const int ncl = gridDim.x / cs, clu = blockIdx.x / cs;
  const int nw = gridDim.x, gi = clu * cs + rank;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const uint32_t ring = smem_u32(smem);
  const uint32_t bars = smem_u32(smem + kBarOff);  // full[kStages], 8 bytes each
  int* s_ent = reinterpret_cast<int*>(smem + kEntOff);
  float* s_sc = reinterpret_cast<float*>(smem + kScOff);
  float2* s_md = reinterpret_cast<float2*>(smem + kMdOff);  // per row (max, sum)
  float* s_o = reinterpret_cast<float*>(smem);

  if (tid == 0) {  // before any global load: the fence below waits for none
#pragma unroll
    for (int s = 0; s < kStages; ++s) mbar_init(bars + 8 * s, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }

  // 1. One round trip: the query rows, seq_lens[b] and the block-table entries of every row of the
  //    CTA's first kPre tiles (up to the table's capacity; entries past the length are loaded,
  //    never used), the entries into shared memory. Later tiles' entries are loaded one tile ahead
  //    (a dependent load per tile: slower, only past kPre tiles a CTA).
  uint4 qv[kQPer];
  {
    const uint4* q = static_cast<const uint4*>(a.q);
#pragma unroll
    for (int i = 0; i < kQPer; ++i) {
      const int x = tid + kThreads * i, qr = x / (kRowBytes / 16);
      const int h = group * kHeadGroup + qr;
      qv[i] = make_uint4(0u, 0u, 0u, 0u);
      if (x < kQChunks && h < a.num_heads)
        qv[i] = __ldg(q + (static_cast<int64_t>(b) * a.num_heads + h) * (kRowBytes / 16) +
                      x % (kRowBytes / 16));
    }
  }
  const int32_t* bt = a.block_table + static_cast<int64_t>(b) * a.max_blocks_per_seq;
  {
    int ent[kPre * kTile / kThreads];
#pragma unroll
    for (int i = 0; i < kPre * kTile / kThreads; ++i) {
      const int e = tid + kThreads * i;
      const int bi = ((gi + nw * (e / kTile)) * kTile + e % kTile) / a.block_size;
      ent[i] = bi < a.max_blocks_per_seq ? __ldg(bt + bi) : 0;
    }
#pragma unroll
    for (int i = 0; i < kPre * kTile / kThreads; ++i) s_ent[tid + kThreads * i] = ent[i];
  }
  int len = __ldg(a.seq_lens + b);
  {
    const int64_t cap = static_cast<int64_t>(a.max_blocks_per_seq) * a.block_size;
    len = (len < 0 ? 0 : (len > cap ? static_cast<int>(cap) : len)) - a.seq_len_trim;
    len = len < 0 ? 0 : len;  // (query tokens past the first: mla_decode_tail.h)
  }
  const int n_all = (len + kTile - 1) / kTile;
  const int n_tiles = gi < n_all ? (n_all - gi + nw - 1) / nw : 0;
  __syncthreads();  // s_ent written; the mbarriers initialised
  CL_TRACE(6);

  // Tile jt of this CTA (the sequence's tile gi + nw jt) into stage jt % kStages.
  // cp.async (default): thread = (row tid / 8, 16-byte chunks tid % 8 + 8 j), rows past the end
  // zero-filled; issue() always commits a group (maybe empty): uniform wait counts.
  // MLA_CLUSTER_BULK (measured slower: one 1152-byte bulk copy a row, ~30 ns each on the SM's copy
  // engine): warp 0, lane l copies row l, rows past the end zeroed, the stage's mbarrier completes
  // when every copied byte landed.
  const int row = kBulk ? lane : tid >> 3;
  auto lookup = [&](int jt) -> const uint8_t* {
    const int pos = (gi + nw * jt) * kTile + row;
    if (jt >= n_tiles || pos >= len) return nullptr;
    const int blk = jt < kPre ? s_ent[jt * kTile + row] : __ldg(bt + pos / a.block_size);
    return a.kv_pool + (static_cast<int64_t>(blk) * a.block_size + pos % a.block_size) * kRowBytes;
  };
  auto issue = [&](int jt, const uint8_t* src) {
    if constexpr (kBulk) {  // warp 0 only
      if (jt >= n_tiles) return;
      const int stg = jt % kStages;
      const int valid = min(kTile, len - (gi + nw * jt) * kTile);
      if (lane == 0) mbar_expect_tx(bars + 8 * stg, valid * kRowBytes);
      uint8_t* dst = smem + stg * kStageBytes + lane * kRowStride;
      if (src) {
        bulk_copy(smem_u32(dst), src, kRowBytes, bars + 8 * stg);
      } else {
#pragma unroll 8
        for (int c = 0; c < kRowBytes / 16; ++c)
          reinterpret_cast<uint4*>(dst)[c] = make_uint4(0u, 0u, 0u, 0u);
        fence_async_smem();  // before a later tile's bulk copy into this row
      }
    } else {
      if (jt < n_tiles) {
        const uint32_t dst = ring + (jt % kStages) * kStageBytes + row * kRowStride;
#pragma unroll
        for (int j = 0; j < kRowBytes / 16 / 8; ++j) {
          const int c = (tid & 7) + 8 * j;
          cp_async16(dst + 16 * c, src ? src + 16 * c : a.kv_pool, src ? 16u : 0u);
        }
      }
      cp_async_commit();
    }
  };
  const uint8_t* next_src = nullptr;
  if (!kBulk || warp == 0) {
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) issue(s, lookup(s));
    next_src = lookup(kStages - 1);
  }
  CL_TRACE(1);

  // 2. The query's A fragments for this warp's 18 k-steps, through the last stage (ldmatrix).
#pragma unroll
  for (int i = 0; i < kQPer; ++i) {
    const int x = tid + kThreads * i;
    if (x < kQChunks)
      *reinterpret_cast<uint4*>(smem + kQOff + (x / (kRowBytes / 16)) * kRowStride +
                                16 * (x % (kRowBytes / 16))) = qv[i];
  }
  __syncthreads();
  uint32_t qf[kKHalf][4];
  load_q_frags(smem_u32(smem + kQOff), warp >> 2, lane, qf);  // warp's k-half of the k-steps
  float acc[8][4], m_run[2], d_run[2];
  zero_state(acc, m_run, d_run);

  // 3. The tile loop.
  for (int jj = 0; jj < n_tiles; ++jj) {
    if constexpr (kBulk)
      mbar_wait(bars + 8 * (jj % kStages), (jj / kStages) & 1);
    else
      cp_async_wait<kStages - 2>();
    __syncthreads();  // tile jj complete (zeroed rows too); tile jj - 1 (and the query) consumed
    if (jj == 0) CL_TRACE(2);
    if (!kBulk || warp == 0) {
      issue(jj + kStages - 1, next_src);
      next_src = lookup(jj + kStages);
    }
#ifndef MLA_CLUSTER_NOCOMPUTE  // diagnostic builds: the loads and the loop's barriers only
    const uint32_t stage = ring + (jj % kStages) * kStageBytes;
    tile_step(stage, qf, s_sc, (gi + nw * jj) * kTile, len, a.scale_log2, acc, m_run, d_run, warp,
              lane);
#endif
  }
  CL_TRACE(3);

  // 4. This CTA's partial into its own shared memory: unnormalised O, the rows' max and sum.
  cp_async_wait<0>();  // (cp.async: only empty groups can be left)
  __syncthreads();  // every issued copy waited for; every warp past its last ldmatrix of the ring
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = g + 8 * rr;
#pragma unroll
    for (int n = 0; n < 8; ++n)
      *reinterpret_cast<float2*>(s_o + r * kOStride + kCols * warp + 8 * n + 2 * t) =
          make_float2(acc[n][2 * rr], acc[n][2 * rr + 1]);
    if (warp == 0 && t == 0) s_md[r] = make_float2(m_run[rr], d_run[rr]);
  }
  cluster_arrive();  // every CTA's partial visible to the cluster
  cluster_wait();
  CL_TRACE(4);

  // 5. CTA rank merges rows rank, rank + cs, ...: thread = (row, 4 columns); every CTA's partial of
  //    that row read through DSMEM (ld.shared::cluster, no branches: all loads in flight at once).
  //    One cluster a sequence: out and lse written. Several: the cluster's merged rows into the
  //    workspace, and the last cluster to arrive at the row set's counter merges them.
  const int my_rows = (kHeadGroup - rank + cs - 1) / cs;
  const uint32_t md_base = smem_u32(s_md), o_base = smem_u32(s_o);
  for (int it = tid; it < my_rows * (L / 4); it += kThreads) {
    const int r = rank + cs * (it / (L / 4)), col = 4 * (it % (L / 4));
    float2 md[kMaxCluster];
    float4 ov[kMaxCluster];
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) {
      md[c] = make_float2(-INFINITY, 0.f);
      ov[c] = make_float4(0.f, 0.f, 0.f, 0.f);
      ld_dsmem2(md[c], mapa(md_base + 8 * r, c < cs ? c : 0), c < cs);
      ld_dsmem4(ov[c], mapa(o_base + 4 * (r * kOStride + col), c < cs ? c : 0), c < cs);
    }
    float mm = -INFINITY;
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c)
      if (c < cs) mm = fmaxf(mm, md[c].x);
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    float dd = 0.f;
    if (mm != -INFINITY) {
#pragma unroll
      for (int c = 0; c < kMaxCluster; ++c)
        if (c < cs) {
          const float w = exp2_fast(md[c].x - mm);  // 0 for a CTA without tokens (max -inf)
          dd += w * md[c].y;
          mc::fma4(o, w, ov[c]);
        }
      mc::scale4(o, 1.f / dd);
    }
    const float l2 = mm == -INFINITY ? -INFINITY : mm + log2f(dd);  // log2-domain lse
    const int h = group * kHeadGroup + r;
    if (ncl > 1) {
      const int64_t prow = static_cast<int64_t>(group * ncl + clu) * kHeadGroup + r;
      *reinterpret_cast<float4*>(a.part_out + prow * L + col) = o;
      if (col == 0) a.part_lse[prow] = l2;
    } else if (h < a.num_heads) {
      const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
      mc::store4(static_cast<float*>(a.out) + orow * L,
                 static_cast<__nv_bfloat16*>(a.out) + orow * L, a.out_bf16, col, o);
      if (col == 0) a.lse[orow] = l2 * 0.6931471805599453f;
    }
  }
  cluster_arrive();  // this CTA's DSMEM reads done (the wait is at the end: its smem stays alive)
  CL_TRACE(5);
  if (ncl > 1) {
    __threadfence();
    __syncthreads();
    int* s_last = reinterpret_cast<int*>(smem + kMdOff);  // s_md is no longer read locally
    if (tid == 0) {
      unsigned* cnt = counters + group * kMaxCluster + rank;
      const bool last = atomicAdd(cnt, 1u) == static_cast<unsigned>(ncl - 1);
      if (last) atomicExch(cnt, 0u);  // every cluster arrived: ready for the next launch
      *s_last = last;
    }
    __syncthreads();
    if (*s_last) {
      __threadfence();
      for (int it = tid; it < my_rows * (L / 4); it += kThreads) {
        const int r = rank + cs * (it / (L / 4)), col = 4 * (it % (L / 4));
        const int h = group * kHeadGroup + r;
        if (h >= a.num_heads) continue;
        float lv[kMaxClusters];
        float4 ov[kMaxClusters];
#pragma unroll
        for (int c = 0; c < kMaxClusters; ++c) {
          const int64_t prow =
              static_cast<int64_t>(group * ncl + (c < ncl ? c : 0)) * kHeadGroup + r;
          lv[c] = __ldcg(a.part_lse + prow);
          ov[c] = __ldcg(reinterpret_cast<const float4*>(a.part_out + prow * L + col));
        }
        float mm = -INFINITY;
#pragma unroll
        for (int c = 0; c < kMaxClusters; ++c)
          if (c < ncl) mm = fmaxf(mm, lv[c]);
        float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
        float dd = 0.f;
        if (mm != -INFINITY) {
#pragma unroll
          for (int c = 0; c < kMaxClusters; ++c)
            if (c < ncl) {
              const float w = exp2_fast(lv[c] - mm);
              dd += w;
              mc::fma4(o, w, ov[c]);
            }
          mc::scale4(o, 1.f / dd);
        }
        const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
        mc::store4(static_cast<float*>(a.out) + orow * L,
                   static_cast<__nv_bfloat16*>(a.out) + orow * L, a.out_bf16, col, o);
        if (col == 0)
          a.lse[orow] = mm == -INFINITY ? -INFINITY : (mm + log2f(dd)) * 0.6931471805599453f;
      }
    }
  }
  CL_TRACE(7);
  cluster_wait();  // no CTA leaves while others may still read its shared memory
}

}  // namespace

bool eligible(int kv_lora_rank, int rope_dim, bool fp8) {
  return kv_lora_rank == L && rope_dim == R && !fp8;
}

cudaError_t prepare(size_t* smem, int* max_cluster) {
  *smem = kSmem;
  *max_cluster = 0;
  cudaError_t err = cudaFuncSetAttribute(
      mla_cluster_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
  if (err != cudaSuccess) return err;
  // Non-portable sizes (16 on H100 / H200); where refused, 8 and below still work.
  if (cudaFuncSetAttribute(mla_cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
      cudaSuccess)
    (void)cudaGetLastError();
  for (int c = kMaxCluster; c >= 1; c /= 2) {
    LaunchEx probe(dim3(c), dim3(kThreads), kSmem, nullptr);
    probe.cluster(c);
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, mla_cluster_kernel, probe.config()) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    if (n >= 1) {
      *max_cluster = c;
      return cudaSuccess;
    }
  }
  return cudaErrorNotSupported;
}

size_t counters_offset(int heads) {
  const size_t groups = (heads + kHeadGroup - 1) / kHeadGroup;
  return sizeof(float) * groups * kMaxClusters * kHeadGroup * (L + 1);
}
size_t workspace_bytes(int heads) {
  const size_t groups = (heads + kHeadGroup - 1) / kHeadGroup;
  return (counters_offset(heads) + sizeof(unsigned) * groups * kMaxCluster + 15) / 16 * 16;
}

cudaError_t launch(const Args& a_in, int cluster, int clusters, void* workspace, size_t smem,
                   cudaStream_t stream) {
  if (cluster < 1 || cluster > kMaxCluster || clusters < 1 || clusters > kMaxClusters ||
      (clusters > 1 && (a_in.batch != 1 || workspace == nullptr)))
    return cudaErrorInvalidValue;
  Args a = a_in;
  const int groups = (a.num_heads + kHeadGroup - 1) / kHeadGroup;
  unsigned* counters = nullptr;
  if (clusters > 1) {
    a.part_out = static_cast<float*>(workspace);
    a.part_lse = a.part_out + static_cast<size_t>(groups) * kMaxClusters * kHeadGroup * L;
    counters = reinterpret_cast<unsigned*>(static_cast<uint8_t*>(workspace) +
                                           counters_offset(a.num_heads));
  }
  return LaunchEx(dim3(cluster * clusters, groups, a.batch), dim3(kThreads), smem, stream)
      .cluster(cluster)(mla_cluster_kernel, a, counters);
}

}  // namespace helix::cuda::mla_cluster
