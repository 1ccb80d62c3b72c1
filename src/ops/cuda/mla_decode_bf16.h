#pragma once
// Absorbed MLA decode over a paged latent cache in bf16 (or FP8 e4m3) on Hopper: the engine's
// fast path. The float32 path (mla_decode_cuda in cuda_ops.h) stays the reference; the CPU op
// (mla_decode in ops.h) is the ground truth the tests compare against.
//
// Usage (once per batch shape, then every step):
//   MlaPlanDesc d;  d.num_heads = 128;  d.max_batch = 64;          // L = 512, R = 64 default
//   MlaPlan plan;   mla_plan(d, &plan);                            // host; allocates workspace
//   MlaDecodeBf16Params p;  ... pointers, batch, block_size ...
//   mla_decode_bf16_cuda(p, plan, stream);                         // graph-capturable
//   ... mla_plan_release(&plan) at the end.
//
// Work split: the planner fixes the grid (CTAs per head group from the SM count and occupancy)
// and the workspace. At launch every CTA reads seq_lens from device memory, cuts the
// concatenation of all sequences' 32-token tiles into equal contiguous ranges (one per CTA, so
// uneven lengths balance over all SMs) and a small combine kernel merges the sequences that
// span several CTAs and writes the empty ones (out 0, lse -inf); at batch 1 the cluster kernel
// (mla_decode_cluster.cu) does both in one launch (thread-block clusters merging in distributed
// shared memory), or where it cannot run the latency kernel (mla_decode_lat.cu) in one
// cooperative launch with a grid barrier. Nothing allocates,
// syncs or queries the device at launch: the launches can be captured in a CUDA graph and
// replayed with new seq_lens / block_table contents.
//
// Cache layouts (per token, rows of the pool [num_blocks, block_size, row]):
//   kBf16:    [c (L bf16), k_pe (R bf16)]                            2 (L + R) bytes
//   kFp8E4m3: [c (L e4m3), k_pe (R bf16), scale (fp32), zero pad]    mla_kv_row_bytes() bytes,
//             c ~= e4m3 * scale, scale = max|c| / 448 per token (656 bytes at 512/64).
// Both are written by mla_kv_write_cuda below.
//
// Sizes: (L, R) = (512, 64) (DeepSeek-V3), (64, 16) (models/tiny) and (32, 16) (the test
// models) are instantiated;
// mla_plan returns cudaErrorNotSupported for others (mla_decode_cuda, fp32, takes any size).
// A plan's workspace serves one launch at a time: launches on several streams need a plan each.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace helix {

enum class MlaKvDtype : int { kBf16 = 0, kFp8E4m3 = 1 };
enum class MlaOutDtype : int { kFloat32 = 0, kBf16 = 1 };
// Which kernel runs 64-head groups (H > 32) at (L, R) = (512, 64); other shapes always use
// mma.sync. All give the same results to rounding.
enum class MlaKernelChoice : int {
  kAuto = 0,     // the faster one measured on H200: sm90 for bf16 KV at H >= 64 and for FP8 KV
                 // at H >= 64 with max_batch <= 16, else mma.sync for bf16 KV, wgmma for FP8 KV
  kMmaSync = 1,  // mma.sync m16n8k16 (sm_80 instructions), ldmatrix from padded row-major tiles;
                 // at <= 32 heads also the mla_bf16 kernels instead of the memory-bound one
                 // (mla_decode_mem.cu, every other choice at (512, 64))
  kWgmma = 2,    // wgmma (sm_90a) from chunk-major tiles, P from registers
  // H >= 64, max_batch <= 400 for bf16 KV, <= 300 for FP8 (else as kAuto): TMA + wgmma,
  // warp-specialised, 64-token tiles (mla_decode_sm90.cuh). Launches with a block size other than
  // 16, 32 or a multiple of 64 run the kAuto kernel instead.
  kSm90 = 3,
  // kAuto, but with bf16 KV at (512, 64) (any H) the one-launch small-batch kernel
  // (mla_decode_lat.cu) at every launch. kAuto takes it at batch 1, H <= 32, when the block
  // table's capacity (max_blocks_per_seq x block_size) is at most 16K tokens (measured on H200),
  // where the cluster kernel (kCluster) cannot run.
  kLatency = 4,
  // kAuto, but with bf16 KV at (512, 64) (any H, any batch) the cluster kernel
  // (mla_decode_cluster.cu) at every launch; num_ctas > 0 sets its CTAs per sequence and head
  // group: clusters of min(num_ctas, 16 or what the device fits) CTAs, at batch 1 num_ctas / that
  // many clusters (at most 8). kAuto itself takes it at batch 1, H <= 32 (query tokens x heads),
  // block-table capacity at most 16K tokens (measured on H200).
  kCluster = 5,
};

// Bytes of one token's row in the pool for a cache dtype (multiple of 16).
size_t mla_kv_row_bytes(MlaKvDtype dtype, int kv_lora_rank, int rope_dim);

// Fixed per batch shape: what the plan depends on.
struct MlaPlanDesc {
  int num_heads = 0;       // H local heads, 1..128 (any H works; 16 and 128 are tuned)
  int kv_lora_rank = 512;  // L; supported (L, R): (512, 64), (64, 16), (32, 16)
  int rope_dim = 64;       // R
  int max_batch = 0;       // upper bound on the batch passed at launch
  MlaKvDtype kv_dtype = MlaKvDtype::kBf16;
  int num_ctas = 0;  // CTAs per head group; 0: from the SM count and occupancy
  MlaKernelChoice kernel = MlaKernelChoice::kAuto;
  // Query tokens per sequence, 1..8 (speculative decoding: the last q_len cached tokens are the
  // new ones). q [B, q_len, H, L + R], out [B, q_len, H, L], lse [B, q_len, H]; query j sees the
  // first seq_lens[b] - (q_len - 1 - j) tokens. The query tokens fold into the heads (the
  // kernels run H * q_len heads over the prefix all of them see, one pass over the KV); a small
  // kernel adds the last q_len - 1 tokens (mla_decode_tail.h). The latency kernel takes q_len 1.
  int q_len = 1;
};

// Host-side result of mla_plan. Treat as opaque; copyable (the workspace is shared, not owned
// by copies: release once).
struct MlaPlan {
  MlaPlanDesc desc;
  int head_group = 0;       // heads per CTA: 16, 32 or 64
  int num_head_groups = 0;  // ceil(H / head_group)
  int ctas_per_group = 0;   // grid.x of the split kernel
  size_t smem_bytes = 0;    // dynamic shared memory of the split kernel
  // H >= 64, bf16 KV (kAuto or kSm90): the sm90 kernel's grid.x and dynamic shared memory; 0 when
  // the plan does not use it.
  int sm90_ctas_per_group = 0;
  size_t sm90_smem_bytes = 0;
  // bf16 KV at (512, 64) (kAuto or kLatency): the latency kernel's CTAs per 16-head group and
  // dynamic shared memory; 0 when the plan does not use it.
  int lat_ctas_per_group = 0;
  size_t lat_smem_bytes = 0;
  // bf16 KV at (512, 64) (kAuto or kCluster): the one-cluster kernel's largest cluster on this
  // device and its dynamic shared memory; 0 when the plan does not use it.
  int cluster_max = 0;
  size_t cluster_smem_bytes = 0;
  size_t cluster_ws_offset = 0;  // its part of the workspace (several clusters a sequence)
  void* workspace = nullptr;     // device: split partials [groups, ctas, 2, head_group, L + 1] fp32
  size_t workspace_bytes = 0;
  bool owns_workspace = false;
};

// Bytes of device workspace a plan for d needs (to pass your own buffer to mla_plan).
size_t mla_plan_workspace_bytes(const MlaPlanDesc& d);

// Builds the plan for d on the current device: queries the SM count and occupancy, sets the
// kernels' shared-memory limits, and takes the workspace from `workspace` when it is non-null
// and large enough, else cudaMalloc (owned, freed by mla_plan_release). Call outside capture.
cudaError_t mla_plan(const MlaPlanDesc& d, MlaPlan* plan, void* workspace = nullptr,
                     size_t workspace_bytes = 0);
void mla_plan_release(MlaPlan* plan);

struct MlaDecodeBf16Params {
  int batch = 0;               // B <= plan.desc.max_batch, plan.desc.q_len query tokens each
  int block_size = 0;          // tokens per KV block (any size >= 1; 16/32/64 typical)
  int max_blocks_per_seq = 0;  // columns of block_table
  float scale = 1.0f;          // softmax scale (applied to q . k)
  // bf16 [B, q_len, H, L + R] = [W_UK^T q_nope, q_pe] per head, 16B aligned (q_len: the plan's)
  const void* q = nullptr;
  const void* kv_pool = nullptr;         // [num_blocks, block_size, row] of plan.desc.kv_dtype
  const int32_t* block_table = nullptr;  // device [B, max_blocks_per_seq] physical block ids
  // device [B]: valid tokens, the first seq_lens[b] of the sequence's blocks. Clamped to
  // [0, max_blocks_per_seq * block_size]; 0 gives out 0 and lse -inf.
  const int32_t* seq_lens = nullptr;
  void* out = nullptr;  // [B, q_len, H, L] softmax-normalised latent output, fp32 or bf16
  MlaOutDtype out_dtype = MlaOutDtype::kFloat32;
  float* lse = nullptr;  // [B, q_len, H] fp32 natural-log sum of exp(scaled scores); -inf: empty
};

// Split kernel + combine kernel (or the one-launch latency kernel) on `stream`. Returns
// cudaErrorInvalidValue for bad sizes, cudaErrorNotSupported for an (L, R) not instantiated, else
// the first launch error.
cudaError_t mla_decode_bf16_cuda(const MlaDecodeBf16Params& p, const MlaPlan& plan,
                                 cudaStream_t stream);

// Writes new tokens' latent rows into the pool at their slots (slot = block * block_size +
// offset; a negative slot is skipped, e.g. padding).
struct MlaKvWriteParams {
  int num_tokens = 0;
  int kv_lora_rank = 512;
  int rope_dim = 64;
  MlaKvDtype kv_dtype = MlaKvDtype::kBf16;  // of the pool
  const void* src = nullptr;                // [num_tokens, src_stride] rows [c, k_pe], fp32 or bf16
  bool src_bf16 = false;
  int64_t src_stride = 0;                 // elements between rows; 0: L + R
  const int64_t* slot_mapping = nullptr;  // device [num_tokens]
  void* kv_pool = nullptr;
};
cudaError_t mla_kv_write_cuda(const MlaKvWriteParams& p, cudaStream_t stream);

}  // namespace helix
