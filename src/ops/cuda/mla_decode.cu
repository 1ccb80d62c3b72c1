// Absorbed MLA decode over a paged latent cache (CUDA form of ops/cpu/mla_decode.cpp): the
// host launcher, the size dispatch and the generic fallback kernel. The fast kernels are in
// mla_decode_mma_kernel.cuh (tensor cores, 3xTF32; the default), instantiated by
// mla_decode_mma_l*_r*.cu, and mla_decode_kernel.cuh (fp32 FMA), instantiated by
// mla_decode_l*_r*.cu.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/mla_decode_args.h"

namespace helix {
namespace cuda {
namespace {

constexpr int kGenericThreads = 128;  // tokens per tile of the generic kernel

__device__ float block_reduce(float v, bool is_max, float* s_red) {
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // s_red may still be read from the previous call
  if (lane == 0) s_red[warp] = v;
  __syncthreads();
  v = s_red[0];
  for (int w = 1; w < kGenericThreads / 32; ++w) v = is_max ? fmaxf(v, s_red[w]) : v + s_red[w];
  return v;
}

// One CTA per (head, chunk, sequence): thread t scores token t of each 128-token tile, then the
// threads share the latent columns of the output (accumulated in shared memory).
__global__ void __launch_bounds__(kGenericThreads) mla_decode_generic_kernel(MlaDecodeSplitArgs a) {
  extern __shared__ float smem[];
  const int L = a.kv_lora_rank, W = a.kv_lora_rank + a.rope_dim;
  float* s_q = smem;                     // [W]
  float* s_acc = s_q + W;                // [L]
  float* s_p = s_acc + L;                // [kGenericThreads]
  float* s_red = s_p + kGenericThreads;  // [kGenericThreads / 32]
  // [threads]; the offset is rounded up to 8 bytes (W + L is odd when R is)
  const int row_off = (W + L + kGenericThreads + kGenericThreads / 32 + 1) & ~1;
  int64_t* s_row = reinterpret_cast<int64_t*>(smem + row_off);

  const int h = blockIdx.x, split = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
  const int seq_len = a.seq_lens[b];
  const int chunk_begin = split * a.chunk_len;
  const int chunk_end = min(seq_len, chunk_begin + a.chunk_len);
  const int32_t* table = a.block_table + static_cast<int64_t>(b) * a.max_blocks_per_seq;
  const float* q = a.q + (static_cast<int64_t>(b) * a.num_heads + h) * W;
  for (int i = tid; i < W; i += kGenericThreads) s_q[i] = q[i];
  for (int i = tid; i < L; i += kGenericThreads) s_acc[i] = 0.f;
  float m = -INFINITY, d = 0.f;
  for (int start = chunk_begin; start < chunk_end; start += kGenericThreads) {
    const int pos = start + tid;
    float x = -INFINITY;
    int64_t row = -1;
    __syncthreads();  // s_q, s_acc ready; s_p, s_row free
    if (pos < chunk_end) {
      row =
          (static_cast<int64_t>(table[pos / a.block_size]) * a.block_size + pos % a.block_size) * W;
      const float* kv = a.kv_pool + row;
      float s = 0.f;
      for (int k = 0; k < W; ++k) s = fmaf(s_q[k], kv[k], s);
      x = s * a.scale;
    }
    s_row[tid] = row;
    const float m_new = fmaxf(m, block_reduce(x, true, s_red));
    const float p = pos < chunk_end ? expf(x - m_new) : 0.f;
    const float alpha = m == -INFINITY ? 0.f : expf(m - m_new);
    d = d * alpha + block_reduce(p, false, s_red);
    m = m_new;
    s_p[tid] = p;
    __syncthreads();
    const int n = min(kGenericThreads, chunk_end - start);
    for (int c = tid; c < L; c += kGenericThreads) {
      float acc = s_acc[c] * alpha;
      for (int t = 0; t < n; ++t) acc = fmaf(s_p[t], a.kv_pool[s_row[t] + c], acc);
      s_acc[c] = acc;
    }
  }
  __syncthreads();
  const int64_t r = (static_cast<int64_t>(split) * a.batch + b) * a.num_heads + h;
  const float inv = d > 0.f ? 1.f / d : 0.f;
  for (int c = tid; c < L; c += kGenericThreads) a.out[r * L + c] = s_acc[c] * inv;
  if (tid == 0) a.lse[r] = d > 0.f ? m + logf(d) : -INFINITY;
}

}  // namespace

cudaError_t launch_mla_decode_split_generic(const MlaDecodeSplitArgs& a, cudaStream_t stream) {
  const int W = a.kv_lora_rank + a.rope_dim;
  const size_t smem =
      sizeof(float) * (W + a.kv_lora_rank + kGenericThreads + kGenericThreads / 32 + 4) +
      sizeof(int64_t) * kGenericThreads;
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(mla_decode_generic_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(a.num_heads, a.num_splits, a.batch);
  mla_decode_generic_kernel<<<grid, kGenericThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace cuda

namespace {

constexpr int kTileTokens = 32;  // chunks are whole tiles of the fast kernel
constexpr int kHeadGroup = 16;   // heads per CTA of the fast kernel

// Maps runtime (L, R) to template constants kL, kR for the instantiated sizes and runs the
// statement in the variadic part (template commas welcome); else runs FALLBACK.
#define HELIX_DISPATCH_MLA_DIMS(L_, R_, FALLBACK, ...) \
  if ((L_) == 512 && (R_) == 64) {                     \
    constexpr int kL = 512, kR = 64;                   \
    __VA_ARGS__;                                       \
  } else if ((L_) == 32 && (R_) == 16) {               \
    constexpr int kL = 32, kR = 16;                    \
    __VA_ARGS__;                                       \
  } else {                                             \
    FALLBACK;                                          \
  }

struct SplitPlan {
  int num_splits = 1;
  int chunk_len = kTileTokens;
};

SplitPlan plan_splits(const MlaDecodeCudaParams& p) {
  SplitPlan plan;
  const int64_t max_len =
      p.max_seq_len > 0 ? p.max_seq_len : static_cast<int64_t>(p.max_blocks_per_seq) * p.block_size;
  const int tiles =
      static_cast<int>(std::max<int64_t>(1, (max_len + kTileTokens - 1) / kTileTokens));
  int want = p.num_splits;
  if (want <= 0) {
    // One wave of CTAs: each CTA holds a whole SM (its tiles are double-buffered in ~190 KiB).
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();  // do not leave a sticky error behind
      sms = 132;
    }
    const int64_t ctas =
        static_cast<int64_t>(p.batch) * ((p.num_heads + kHeadGroup - 1) / kHeadGroup);
    want = static_cast<int>(std::max<int64_t>(1, sms / std::max<int64_t>(1, ctas)));
  }
  want = std::min(want, tiles);
  const int chunk_tiles = (tiles + want - 1) / want;
  plan.num_splits = (tiles + chunk_tiles - 1) / chunk_tiles;
  plan.chunk_len = chunk_tiles * kTileTokens;
  return plan;
}

size_t workspace_bytes(const MlaDecodeCudaParams& p, int splits) {
  if (splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(splits) * p.batch * p.num_heads;
  return sizeof(float) * rows * (static_cast<size_t>(p.kv_lora_rank) + 1);
}

bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

bool use_mma(const MlaDecodeCudaParams& p) {
  if (p.kernel != MlaDecodeKernel::kAuto) return p.kernel == MlaDecodeKernel::kMma;
  // Read once: the environment is a process-wide switch for comparisons.
  static const bool env_fma = [] {
    const char* e = std::getenv("HELIX_MLA_KERNEL");
    return e != nullptr && std::strcmp(e, "fma") == 0;
  }();
  return !env_fma;
}

}  // namespace

int mla_decode_cuda_num_splits(const MlaDecodeCudaParams& p) {
  return plan_splits(p).num_splits;
}

size_t mla_decode_cuda_workspace_bytes(const MlaDecodeCudaParams& p) {
  return workspace_bytes(p, plan_splits(p).num_splits);
}

cudaError_t mla_decode_cuda(const MlaDecodeCudaParams& p, cudaStream_t stream) {
  if (p.batch < 0 || p.num_heads < 0 || p.kv_lora_rank < 0 || p.rope_dim < 0 ||
      p.max_blocks_per_seq < 0 || p.max_seq_len < 0)
    return cudaErrorInvalidValue;
  if (p.batch == 0 || p.num_heads == 0) return cudaSuccess;
  if (!p.q || !p.block_table || !p.seq_lens || !p.out || !p.lse || p.block_size <= 0 ||
      p.kv_lora_rank == 0)
    return cudaErrorInvalidValue;
  const SplitPlan plan = plan_splits(p);
  cuda::MlaDecodeSplitArgs a;
  a.batch = p.batch;
  a.num_heads = p.num_heads;
  a.kv_lora_rank = p.kv_lora_rank;
  a.rope_dim = p.rope_dim;
  a.block_size = p.block_size;
  a.max_blocks_per_seq = p.max_blocks_per_seq;
  a.num_splits = plan.num_splits;
  a.chunk_len = plan.chunk_len;
  a.scale = p.scale;
  a.q = p.q;
  a.kv_pool = p.kv_pool;
  a.block_table = p.block_table;
  a.seq_lens = p.seq_lens;

  void* scratch = nullptr;
  bool owned = false;
  cudaError_t err = cudaSuccess;
  if (plan.num_splits == 1) {
    a.out = p.out;
    a.lse = p.lse;
  } else {
    const size_t need = workspace_bytes(p, plan.num_splits);
    if (p.workspace && p.workspace_bytes >= need) {
      scratch = p.workspace;
    } else {
      err = cudaMallocAsync(&scratch, need, stream);
      if (err != cudaSuccess) return err;
      owned = true;
    }
    a.out = static_cast<float*>(scratch);
    a.lse = a.out + static_cast<size_t>(plan.num_splits) * p.batch * p.num_heads * p.kv_lora_rank;
  }

  const bool fast_ok = aligned16(p.q) && aligned16(p.kv_pool) && aligned16(a.out);
  const bool mma = use_mma(p);
  HELIX_DISPATCH_MLA_DIMS(
      p.kv_lora_rank, p.rope_dim, err = cuda::launch_mla_decode_split_generic(a, stream),
      err = !fast_ok ? cuda::launch_mla_decode_split_generic(a, stream)
            : mma    ? cuda::launch_mla_decode_split_mma<kL, kR>(a, stream)
                     : cuda::launch_mla_decode_split<kL, kR, kHeadGroup>(a, stream))
  if (err == cudaSuccess && plan.num_splits > 1)
    err = attn_combine_cuda(a.out, a.lse, p.out, p.lse, plan.num_splits, p.batch * p.num_heads,
                            p.kv_lora_rank, stream);
  if (owned) {
    const cudaError_t free_err = cudaFreeAsync(scratch, stream);
    if (err == cudaSuccess) err = free_err;
  }
  return err;
}

}  // namespace helix
