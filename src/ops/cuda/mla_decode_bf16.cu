// Host side of the bf16 / FP8-KV MLA decode (mla_decode_bf16.h): the planner and the launcher
// (the pool writer is mla_kv_write.cu). The kernels are in mla_decode_bf16_kernel.cuh,
// instantiated per (L, R) by mla_decode_bf16_l*_r*.cu.
#include <algorithm>
#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "core/kv_fp8_layout.h"
#include "ops/cuda/mla_decode_bf16.h"
#include "ops/cuda/mla_decode_bf16_args.h"
#include "ops/cuda/mla_decode_cluster.h"
#include "ops/cuda/mla_decode_lat.h"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_sm90.h"
#include "ops/cuda/mla_decode_tail.h"

namespace helix {
namespace {

template <int L_, int R_>
struct Dims {
  static constexpr int L = L_, R = R_;
};
bool supported(int L, int R) {
  return (L == 512 && R == 64) || (L == 64 && R == 16) || (L == 32 && R == 16);
}

// Runs f(Entry<L, R>{}) for the instantiated sizes.
template <class F>
cudaError_t with_entry(int L, int R, F&& f) {
  if (L == 512 && R == 64) return f(Dims<512, 64>{});
  if (L == 64 && R == 16) return f(Dims<64, 16>{});  // the embedded models/tiny
  if (L == 32 && R == 16) return f(Dims<32, 16>{});
  return cudaErrorNotSupported;
}

// kLatency / kCluster are kAuto with the latency / cluster kernel at every launch it takes: the
// launches it does not take (FP8 KV, other sizes) run kAuto's kernels.
bool auto_like(const MlaPlanDesc& d) {
  return d.kernel == MlaKernelChoice::kAuto || d.kernel == MlaKernelChoice::kLatency ||
         d.kernel == MlaKernelChoice::kCluster;
}

// The sm90 kernel for H >= 64 (mla_decode_sm90.h), FP8 KV included at every batch it takes: on
// H200 its FP8 path is 1.3-1.5x the wgmma kernel at batch 32-64 x 16K-64K (bench/RESULTS.md,
// "FP8 at 128 heads (session 6, fp8h)"; before that session it was kept to batch <= 16).
bool sm90_for(const MlaPlanDesc& d) {
  const bool fp8 = d.kv_dtype == MlaKvDtype::kFp8E4m3;
  return (auto_like(d) || d.kernel == MlaKernelChoice::kSm90) &&
         cuda::mla_sm90::eligible(d.num_heads, d.kv_lora_rank, d.rope_dim, fp8, d.max_batch);
}

// Its grid.x (0: not used) and shared memory.
cudaError_t sm90_ctas_for(const MlaPlanDesc& d, int* ctas, size_t* smem) {
  *ctas = 0;
  *smem = 0;
  if (!sm90_for(d)) return cudaSuccess;
  int per_group = 0;
  const cudaError_t err = cuda::mla_sm90::prepare(d.num_heads, d.kv_dtype == MlaKvDtype::kFp8E4m3,
                                                  d.max_batch, smem, &per_group);
  if (err == cudaErrorNotSupported) {  // no TMA encoder in this driver: the other kernels run
    *smem = 0;
    return cudaSuccess;
  }
  if (err != cudaSuccess) return err;
  *ctas = d.num_ctas > 0 ? d.num_ctas : per_group;
  return cudaSuccess;
}

bool wgmma_for(const MlaPlanDesc& d) {
  if (auto_like(d)) return d.kv_dtype == MlaKvDtype::kFp8E4m3;
  return d.kernel == MlaKernelChoice::kWgmma;
}

// <= 32 heads at (512, 64): the memory-bound kernel (mla_decode_mem.cu, groups of 16 heads),
// unless mma.sync is asked for explicitly (the mla_bf16 kernels stay as the fallback). Its shared
// memory holds 8 bytes per sequence next to a full ring: batches up to 1024.
bool mem_path(const MlaPlanDesc& d) {
  return d.kv_lora_rank == 512 && d.rope_dim == 64 && d.num_heads <= 32 && d.max_batch <= 1024 &&
         d.kernel != MlaKernelChoice::kMmaSync;
}

int head_group_for(const MlaPlanDesc& d) {
  if (mem_path(d)) return cuda::mla_mem::kHeadGroup;
  return d.num_heads <= 16 ? 16 : d.num_heads <= 32 ? 32 : 64;
}

// Per (group, CTA): two partial slots of head_group rows, L outputs + 1 lse each.
size_t workspace_for(const MlaPlanDesc& d, int groups, int ctas) {
  const size_t rows = static_cast<size_t>(groups) * ctas * 2 * head_group_for(d);
  return sizeof(float) * rows * (static_cast<size_t>(d.kv_lora_rank) + 1);
}

// CTAs per head group: enough to fill every SM (and as many as fit per SM), at least one.
cudaError_t ctas_for(const MlaPlanDesc& d, int* ctas, size_t* smem) {
  int dev = 0, sms = 0, per_sm = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  const int hg = head_group_for(d);
  if (mem_path(d))
    err = cuda::mla_mem::prepare(d.kv_dtype == MlaKvDtype::kFp8E4m3, d.max_batch, smem, &per_sm);
  else
    err = with_entry(d.kv_lora_rank, d.rope_dim, [&](auto e) {
      using D = decltype(e);
      return cuda::mla_bf16::prepare<D::L, D::R>(hg, d.kv_dtype == MlaKvDtype::kFp8E4m3,
                                                 wgmma_for(d), d.max_batch, smem, &per_sm);
    });
  if (err != cudaSuccess) return err;
  if (per_sm <= 0) return cudaErrorInvalidConfiguration;
  const int groups = (d.num_heads + hg - 1) / hg;
  *ctas = d.num_ctas > 0 ? d.num_ctas : std::max(1, sms * per_sm / groups);
  return cudaSuccess;
}

// The one-launch small-batch kernel (mla_decode_lat.h): planned for bf16 KV at (512, 64) under
// kAuto and kLatency.
bool lat_for(const MlaPlanDesc& d) {
  return auto_like(d) && d.q_len == 1 &&
         cuda::mla_lat::eligible(d.kv_lora_rank, d.rope_dim, d.kv_dtype == MlaKvDtype::kFp8E4m3,
                                 d.max_batch);
}
// Its CTAs per 16-head group (0: not used) and shared memory. num_ctas caps the grid, never above
// what is resident at once (the kernel's grid barrier needs every CTA running).
cudaError_t lat_ctas_for(const MlaPlanDesc& d, int* ctas, size_t* smem) {
  *ctas = 0;
  *smem = 0;
  if (!lat_for(d)) return cudaSuccess;
  int per_group = 0;
  // An optional path: if it cannot be set up (more head groups than resident CTAs, or a device
  // whose shared memory is smaller than the kernel's ring), the other kernels serve every launch.
  if (cuda::mla_lat::prepare(d.num_heads, d.max_batch, smem, &per_group) != cudaSuccess) {
    (void)cudaGetLastError();  // not left for the next launch's error check
    *smem = 0;
    return cudaSuccess;
  }
  *ctas = d.num_ctas > 0 ? std::min(d.num_ctas, per_group) : per_group;
  return cudaSuccess;
}
// kAuto's choice at launch, from what the host knows (seq_lens are on the device): batch, heads and
// the block table's capacity. Measured on H200 (bench/RESULTS.md, "Batch-1 latency"): at <= 32
// heads and batch 1 the latency kernel takes 0.83-0.95x the split kernels' time up to 16K tokens
// (graph replays; on the stream ~1 us more at 1K-4K, 0.83-0.85x at 16K); at 64K, at batch >= 2 and
// at 128 heads (16-head groups re-read the KV, mma.sync tiles) the split kernels are faster.
constexpr int kLatAutoBatch = 1;
constexpr int64_t kLatAutoCapacity = 16384;
bool lat_at_launch(const MlaPlan& plan, const MlaDecodeBf16Params& p) {
  if (plan.lat_ctas_per_group <= 0) return false;
  if (plan.desc.kernel == MlaKernelChoice::kLatency) return true;
  const int64_t cap = static_cast<int64_t>(p.max_blocks_per_seq) * p.block_size;
  return p.batch <= kLatAutoBatch && plan.desc.num_heads <= 32 && cap <= kLatAutoCapacity;
}
// The one-cluster kernel (mla_decode_cluster.h): planned for bf16 KV at (512, 64) under kAuto and
// kCluster. Its largest cluster and shared memory (0: not used; an optional path, like the latency
// kernel's: if the device cannot run it the other kernels serve every launch).
void cluster_for(const MlaPlanDesc& d, int* max_cluster, size_t* smem) {
  *max_cluster = 0;
  *smem = 0;
  if (!auto_like(d) ||
      !cuda::mla_cluster::eligible(d.kv_lora_rank, d.rope_dim, d.kv_dtype == MlaKvDtype::kFp8E4m3))
    return;
  if (cuda::mla_cluster::prepare(smem, max_cluster) != cudaSuccess) {
    (void)cudaGetLastError();
    *max_cluster = 0;
    *smem = 0;
  }
}
// kAuto's choice at launch (before the latency kernel's): batch 1, <= 32 heads, block-table
// capacity <= 16K tokens. The shape: clusters of the largest size the device fits (16 on H200); at
// batch 1 one cluster up to a capacity of kClusterOneUpTo tokens, else one per kClusterTiles x
// that size tiles of the capacity, at most kClusterAutoCount: clusters of 16 with ~200 KB of shared
// memory fit about 7 at once on an H200 (one a GPC), and 8 x 16 at 1 x 4K took 19.7 us against
// 13.8 with 6 x 16. Measured on H200 (bench/RESULTS.md, "Batch-1 latency on thread-block clusters",
// 16 heads, 1 x 1K-16K, every count 1-6 forced): 0.81-0.91x the latency kernel's time.
// kCluster: num_ctas CTAs (clusters of at most that size).
constexpr int kClusterAutoBatch = 1;
constexpr int64_t kClusterAutoCapacity = 16384;
constexpr int64_t kClusterOneUpTo = 1024;
constexpr int kClusterTiles = 1;
constexpr int kClusterAutoCount = 6;
struct ClusterShape {
  int size = 0, count = 0;  // CTAs a cluster, clusters a sequence (0: not this kernel)
};
// d: the kernels' view (query tokens folded into the heads).
ClusterShape cluster_at_launch(const MlaPlan& plan, const MlaDecodeBf16Params& p,
                               const MlaPlanDesc& d) {
  ClusterShape c;
  if (plan.cluster_max <= 0) return c;
  const int64_t cap = static_cast<int64_t>(p.max_blocks_per_seq) * p.block_size;
  if (d.kernel == MlaKernelChoice::kAuto &&
      (p.batch > kClusterAutoBatch || d.num_heads > 32 || cap > kClusterAutoCapacity))
    return c;
  if (d.kernel != MlaKernelChoice::kAuto && d.kernel != MlaKernelChoice::kCluster) return c;
  c.size = plan.cluster_max;
  c.count = 1;
  if (d.kernel == MlaKernelChoice::kCluster && d.num_ctas > 0) {
    c.size = std::min(d.num_ctas, plan.cluster_max);
    if (p.batch == 1) c.count = std::min(d.num_ctas / c.size, cuda::mla_cluster::kMaxClusters);
  } else if (p.batch == 1 && cap > kClusterOneUpTo) {
    const int64_t per = static_cast<int64_t>(c.size) * kClusterTiles * 32;
    c.count = static_cast<int>(std::clamp<int64_t>((cap + per - 1) / per, 1, kClusterAutoCount));
  }
  return c;
}
// Workspace: the larger of the split kernels' and the latency kernel's partials, then (with the
// cluster kernel) its partials and counters at *cluster_offset, then (with the latency kernel) its
// 16-byte barrier counter, which no other kernel writes.
size_t total_workspace(size_t split_bytes, int heads, int lat_ctas, bool cluster,
                       size_t* cluster_offset = nullptr) {
  size_t parts = split_bytes;
  if (lat_ctas > 0) parts = std::max(parts, cuda::mla_lat::partial_bytes(heads, lat_ctas));
  parts = (parts + 15) / 16 * 16;
  if (cluster_offset) *cluster_offset = parts;
  if (cluster) parts += cuda::mla_cluster::workspace_bytes(heads);
  return lat_ctas > 0 ? parts + 16 : parts;
}

// What the kernels see: q_len query tokens per sequence fold into the heads (mla_decode_tail.h).
MlaPlanDesc kernel_desc(const MlaPlanDesc& d) {
  MlaPlanDesc k = d;
  k.num_heads = d.num_heads * d.q_len;
  return k;
}
bool q_len_ok(const MlaPlanDesc& d) {
  return d.q_len >= 1 && d.q_len <= cuda::mla_tail::kMaxQLen;
}

// Everything of a plan but its workspace pointer: the kernels' grids, shared memory and the
// workspace size. One function, so mla_plan_workspace_bytes and mla_plan cannot disagree.
cudaError_t plan_shape(const MlaPlanDesc& user, MlaPlan* p) {
  p->desc = user;
  const MlaPlanDesc d = kernel_desc(user);
  p->head_group = head_group_for(d);
  p->num_head_groups = (d.num_heads + p->head_group - 1) / p->head_group;
  cudaError_t err = ctas_for(d, &p->ctas_per_group, &p->smem_bytes);
  if (err == cudaSuccess) err = sm90_ctas_for(d, &p->sm90_ctas_per_group, &p->sm90_smem_bytes);
  if (err == cudaSuccess) err = lat_ctas_for(d, &p->lat_ctas_per_group, &p->lat_smem_bytes);
  if (err != cudaSuccess) return err;
  cluster_for(d, &p->cluster_max, &p->cluster_smem_bytes);
  // The sm90 kernel's head groups are 64 heads, as the others' at H >= 64.
  p->workspace_bytes = total_workspace(
      workspace_for(d, p->num_head_groups, std::max(p->ctas_per_group, p->sm90_ctas_per_group)),
      d.num_heads, p->lat_ctas_per_group, p->cluster_max > 0, &p->cluster_ws_offset);
  return cudaSuccess;
}

}  // namespace

size_t mla_kv_row_bytes(MlaKvDtype dtype, int kv_lora_rank, int rope_dim) {
  if (dtype == MlaKvDtype::kBf16) return 2 * static_cast<size_t>(kv_lora_rank + rope_dim);
  return kv_fp8_row_bytes_for(kv_lora_rank, rope_dim);
}

size_t mla_plan_workspace_bytes(const MlaPlanDesc& d) {
  if (d.num_heads <= 0 || !q_len_ok(d) || !supported(d.kv_lora_rank, d.rope_dim)) return 0;
  MlaPlan p;
  return plan_shape(d, &p) == cudaSuccess ? p.workspace_bytes : 0;
}

cudaError_t mla_plan(const MlaPlanDesc& d, MlaPlan* plan, void* workspace, size_t workspace_bytes) {
  if (!plan || d.num_heads <= 0 || d.max_batch <= 0 || !q_len_ok(d)) return cudaErrorInvalidValue;
  if (!supported(d.kv_lora_rank, d.rope_dim)) return cudaErrorNotSupported;
  MlaPlan p;
  cudaError_t err = plan_shape(d, &p);
  if (err != cudaSuccess) return err;
  if (workspace && workspace_bytes >= p.workspace_bytes) {
    p.workspace = workspace;
  } else {
    err = cudaMalloc(&p.workspace, p.workspace_bytes);
    if (err != cudaSuccess) return err;
    p.owns_workspace = true;
  }
  if (p.cluster_max > 0) {  // the cluster kernel's counters start at 0
    const int kh = kernel_desc(d).num_heads;
    err = cudaMemset(
        static_cast<uint8_t*>(p.workspace) + p.cluster_ws_offset +
            cuda::mla_cluster::counters_offset(kh),
        0, cuda::mla_cluster::workspace_bytes(kh) - cuda::mla_cluster::counters_offset(kh));
  }
  if (err == cudaSuccess && p.lat_ctas_per_group > 0)  // the latency kernel's barrier counter
    err = cudaMemset(static_cast<uint8_t*>(p.workspace) + p.workspace_bytes - 16, 0, 16);
  if (err != cudaSuccess) {
    if (p.owns_workspace) cudaFree(p.workspace);
    return err;
  }
  *plan = p;
  return cudaSuccess;
}

void mla_plan_release(MlaPlan* plan) {
  if (plan && plan->owns_workspace) cudaFree(plan->workspace);
  if (plan) *plan = MlaPlan{};
}

// The split kernels and their combine (or the one-launch latency or cluster kernel) for the heads
// of d (the kernels' view: query tokens folded into the heads).
static cudaError_t launch_split(cuda::mla_bf16::Args& a, const MlaPlan& plan,
                                const MlaDecodeBf16Params& p, const MlaPlanDesc& d,
                                cudaStream_t stream) {
  if (const ClusterShape c = cluster_at_launch(plan, p, d); c.size > 0)  // one launch
    return cuda::mla_cluster::launch(a, c.size, c.count,
                                     static_cast<uint8_t*>(plan.workspace) + plan.cluster_ws_offset,
                                     plan.cluster_smem_bytes, stream);
  if (lat_at_launch(plan, p)) {  // one launch: split, grid barrier, combine
    const int groups = (d.num_heads + cuda::mla_lat::kHeadGroup - 1) / cuda::mla_lat::kHeadGroup;
    a.ctas_per_group = plan.lat_ctas_per_group;
    a.part_lse = a.part_out + static_cast<size_t>(groups) * plan.lat_ctas_per_group * 2 *
                                  cuda::mla_lat::kHeadGroup * d.kv_lora_rank;
    auto* counter = reinterpret_cast<unsigned long long*>(static_cast<uint8_t*>(plan.workspace) +
                                                          plan.workspace_bytes - 16);
    return cuda::mla_lat::launch(a, counter, dim3(plan.lat_ctas_per_group, groups),
                                 plan.lat_smem_bytes, stream);
  }
  if (plan.sm90_ctas_per_group > 0 && cuda::mla_sm90::block_ok(p.block_size)) {
    a.ctas_per_group = plan.sm90_ctas_per_group;
    return cuda::mla_sm90::launch(a, d.kv_dtype == MlaKvDtype::kFp8E4m3,
                                  dim3(plan.sm90_ctas_per_group, plan.num_head_groups),
                                  plan.sm90_smem_bytes, stream);
  }
  const dim3 grid(plan.ctas_per_group, plan.num_head_groups);
  const bool fp8 = d.kv_dtype == MlaKvDtype::kFp8E4m3;
  if (mem_path(d)) return cuda::mla_mem::launch(a, fp8, grid, plan.smem_bytes, stream);
  return with_entry(d.kv_lora_rank, d.rope_dim, [&](auto e) {
    using D = decltype(e);
    return cuda::mla_bf16::launch<D::L, D::R>(a, plan.head_group, fp8, wgmma_for(d), grid,
                                              plan.smem_bytes, stream);
  });
}

cudaError_t mla_decode_bf16_cuda(const MlaDecodeBf16Params& p, const MlaPlan& plan,
                                 cudaStream_t stream) {
  const MlaPlanDesc d = kernel_desc(plan.desc);
  if (p.batch < 0 || p.batch > d.max_batch || plan.workspace == nullptr)
    return cudaErrorInvalidValue;
  if (p.batch == 0) return cudaSuccess;
  if (!p.q || !p.kv_pool || !p.block_table || !p.seq_lens || !p.out || !p.lse ||
      p.block_size <= 0 || p.max_blocks_per_seq < 0)
    return cudaErrorInvalidValue;
  if ((reinterpret_cast<uintptr_t>(p.q) | reinterpret_cast<uintptr_t>(p.kv_pool)) & 15u)
    return cudaErrorInvalidValue;  // 16-byte loads
  cuda::mla_bf16::Args a;
  a.batch = p.batch;
  a.num_heads = d.num_heads;
  a.block_size = p.block_size;
  a.max_blocks_per_seq = p.max_blocks_per_seq;
  a.ctas_per_group = plan.ctas_per_group;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.q = p.q;
  a.kv_pool = static_cast<const uint8_t*>(p.kv_pool);
  a.block_table = p.block_table;
  a.seq_lens = p.seq_lens;
  a.seq_len_trim = d.q_len - 1;
  a.out = p.out;
  a.out_bf16 = p.out_dtype == MlaOutDtype::kBf16;
  a.lse = p.lse;
  a.part_out = static_cast<float*>(plan.workspace);
  const size_t rows = static_cast<size_t>(plan.num_head_groups) *
                      std::max(plan.ctas_per_group, plan.sm90_ctas_per_group) * 2 * plan.head_group;
  a.part_lse = a.part_out + rows * d.kv_lora_rank;
  const cudaError_t err = launch_split(a, plan, p, d, stream);
  if (err != cudaSuccess || d.q_len == 1) return err;
  return cuda::mla_tail::launch(a, plan.desc.num_heads, d.q_len, d.kv_lora_rank, d.rope_dim,
                                d.kv_dtype == MlaKvDtype::kFp8E4m3,
                                mla_kv_row_bytes(d.kv_dtype, d.kv_lora_rank, d.rope_dim), stream);
}

}  // namespace helix
