#pragma once
// The CUDA op library behind CudaOps (DESIGN.md "The GPU path"). FlashInfer-style launchers: a
// plain parameter struct (each field's shape in its comment) plus a stream, returning the first
// CUDA error. No launcher allocates, queries the device or synchronises, so every one can be
// captured in a CUDA graph; sizes that vary per decode step (token ids, positions, slots, expert
// offsets) are read from device memory. Activations are fp32 or bf16 (fp32 accumulation);
// weights fp32, bf16 or FP8 E4M3 with 128x128 block scales (weight_scale_inv, as DeepSeek-V3
// publishes them). Semantics follow the CPU references in ops/ops.h; tests/cuda/
// test_backend_ops.cpp checks every launcher against them. C++17-clean (included by .cu files).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "ops/sample.h"

namespace helix {

// Element types of the buffers a launcher reads or writes.
enum class CudaDType : int { kF32 = 0, kBF16 = 1, kF8E4M3 = 2 };

// Side of a weight-scale block in FP8 checkpoints: scale[i, j] covers rows [128i, 128i+128) and
// columns [128j, 128j+128) of the weight.
constexpr int kFp8BlockSize = 128;

// ---- context.cu ------------------------------------------------------------------------------
// cuBLAS / cuBLASLt handles and their workspace, made once per device and stream owner (creating
// them allocates and queries the device, which launchers must not do).
struct CudaOpsContext {
  void* cublas = nullptr;     // cublasHandle_t
  void* workspace = nullptr;  // cuBLAS workspace (device)
  size_t workspace_bytes = 0;
  // Scratch for one FP8 weight widened to the activation dtype (n*k*2 bytes for bf16, *4 for
  // fp32): GEMMs with more than kFp8DirectMaxRows rows widen the weight there and run cuBLAS
  // (tensor cores), the rest read FP8 directly. 0: always the direct kernel.
  void* fp8_scratch = nullptr;
  size_t fp8_scratch_bytes = 0;
  // fp32 partial sums of the tensor-core GEMM when it splits K (gemm_mma.cu); a GEMM whose
  // splits do not fit splits less.
  float* splitk = nullptr;
  size_t splitk_bytes = 0;
  int num_sms = 132;  // multiprocessors of the device (sizes split K)
};
cudaError_t cuda_ops_context_create(CudaOpsContext* ctx, size_t workspace_bytes = 32u << 20,
                                    size_t fp8_scratch_bytes = 0, size_t splitk_bytes = 64u << 20);
void cuda_ops_context_destroy(CudaOpsContext* ctx);

// Which kernel a GEMM runs (benchmarks and tests pin one; the model leaves kAuto).
//   kAuto:   bf16 activations with FP8 weights (dense or grouped) or bf16 grouped weights: the
//            tensor-core kernel (gemm_mma.cu, mma_gemm.cuh), except where the row-tile kernel
//            streams faster (bench_gemm_cuda on H200): one row against an FP8 weight of >= 4096
//            rows, FP8 groups of <= 8 rows in all, bf16 groups under 0.5 rows per group; bf16
//            dense weights: cuBLAS; fp32 activations: cuBLAS / the row-tile kernel (exact fp32).
//   kLegacy: cuBLAS, the FP8 row-tile kernel (widen + cuBLAS past kFp8DirectMaxRows rows when the
//            context has a scratch), the grouped row-tile kernel.
//   kMma:    the tensor-core kernel where it applies (bf16 activations in 16-byte aligned rows,
//            k a multiple of 8 for bf16 / 16 for FP8 weights), else as kAuto.
enum class GemmAlgo : int { kAuto = 0, kLegacy = 1, kMma = 2 };

// ---- gemm.cu ---------------------------------------------------------------------------------
// y = x · w^T (+ beta·y), the nn.Linear layout. f32 or bf16 weights: cuBLAS (x must have the
// weight's dtype; fp32 runs true fp32, no TF32). FP8 weights (x f32 or bf16), gemm_fp8.cu: up
// to kFp8DirectMaxRows rows a kernel that applies the block scales while it streams the FP8
// bytes (once per tile of up to 8 rows); more rows (prefill, large batches) widen the weight
// into ctx.fp8_scratch and run cuBLAS, when the scratch is large enough (measured crossover on
// H200 between 8 and 64 rows; bench/bench_gemm_cuda). With bf16 activations (GemmAlgo::kAuto)
// FP8 weights go to the tensor-core kernel instead, up to kMmaMaxRows rows or at any row count
// when the context has no FP8 scratch.
constexpr int kFp8DirectMaxRows = 16;
constexpr int kMmaMaxRows = 256;
struct GemmCudaParams {
  int m = 0, n = 0, k = 0;
  CudaDType x_dtype = CudaDType::kF32;
  CudaDType w_dtype = CudaDType::kF32;
  CudaDType y_dtype = CudaDType::kF32;
  const void* x = nullptr;  // [m, k], row stride ldx (0: k)
  int ldx = 0;
  const void* w = nullptr;         // [n, k] contiguous
  const float* w_scale = nullptr;  // FP8 only: [ceil(n/128), ceil(k/128)] weight_scale_inv
  void* y = nullptr;               // [m, n], row stride ldy (0: n)
  int ldy = 0;
  float beta = 0.0f;  // 1: accumulate into y
  int tile_rows = 0;  // FP8 direct kernel: rows per tile, 0 auto, else 1, 2, 4 or 8 (tuning)
  GemmAlgo algo = GemmAlgo::kAuto;
  int splits = 0;  // tensor-core kernel: K splits, 0 auto (tuning)
};
cudaError_t gemm_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream);

// ---- gemm_batched.cu -------------------------------------------------------------------------
// batch independent products y_b = x_b · op(w_b) (+ beta·y_b) at fixed strides (cuBLAS strided
// batched), for the per-head absorbed projections: W_UK^T q_nope (trans_w = false: w_b is
// [k, n]) and W_UV o (trans_w = true: w_b is [n, k]). x and w share one dtype (f32 or bf16).
struct GemmBatchedCudaParams {
  int batch = 0, m = 0, n = 0, k = 0;
  CudaDType x_dtype = CudaDType::kF32;  // also the weight dtype
  CudaDType y_dtype = CudaDType::kF32;
  const void* x = nullptr;  // [batch] x [m, k] at x + b*stride_x, row stride ldx
  int ldx = 0;
  int64_t stride_x = 0;
  const void* w = nullptr;  // [batch] x ([n, k] if trans_w else [k, n]) at w + b*stride_w, ldw
  int ldw = 0;
  int64_t stride_w = 0;
  bool trans_w = true;
  void* y = nullptr;  // [batch] x [m, n] at y + b*stride_y, row stride ldy
  int ldy = 0;
  int64_t stride_y = 0;
  float beta = 0.0f;
};
cudaError_t gemm_batched_cuda(const CudaOpsContext& ctx, const GemmBatchedCudaParams& p,
                              cudaStream_t stream);

// ---- gemm_grouped.cu -------------------------------------------------------------------------
// Grouped expert GEMM over rows permuted by expert (moe_permute): for each group g, rows
// [offsets[g], offsets[g+1]) of x times w_ptrs[g]^T into the same rows of y. Offsets live in
// device memory (they change every step); max_rows bounds offsets[num_groups] on the host and
// sizes the grid. Weights f32, bf16 or FP8 (+ scale_ptrs), each w_ptrs[g] 16-byte aligned. Rows
// at or past offsets[num_groups] are not written.
struct GroupedGemmCudaParams {
  int num_groups = 0;  // G
  int max_rows = 0;    // host upper bound of offsets[G]
  int n = 0, k = 0;
  CudaDType x_dtype = CudaDType::kF32;
  CudaDType w_dtype = CudaDType::kF32;
  CudaDType y_dtype = CudaDType::kF32;
  const void* x = nullptr;                   // [max_rows, k] contiguous
  const int32_t* offsets = nullptr;          // [G + 1] device, non-decreasing, offsets[0] = 0
  const void* const* w_ptrs = nullptr;       // [G] device array of pointers to [n, k] weights
  const float* const* scale_ptrs = nullptr;  // FP8 only: [G] -> [ceil(n/128), ceil(k/128)]
  void* y = nullptr;                         // [max_rows, n] contiguous
  // Tile list the launcher builds on the stream: grouped_gemm_cuda_workspace_bytes() bytes.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  GemmAlgo algo = GemmAlgo::kAuto;
};
size_t grouped_gemm_cuda_workspace_bytes(int num_groups, int max_rows);
cudaError_t grouped_gemm_cuda(const GroupedGemmCudaParams& p, cudaStream_t stream);

// ---- elementwise.cu --------------------------------------------------------------------------
// out[i] = a[i] + b[i] (out may alias a or b).  a, b, out [n], one activation dtype
struct AddCudaParams {
  int64_t n = 0;
  CudaDType dtype = CudaDType::kF32;
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
};
cudaError_t add_cuda(const AddCudaParams& p, cudaStream_t stream);

// out = convert(in): f32 <-> bf16 (or a copy when the dtypes match).  in, out [n]
struct CastCudaParams {
  int64_t n = 0;
  CudaDType in_dtype = CudaDType::kF32;
  CudaDType out_dtype = CudaDType::kBF16;
  const void* in = nullptr;
  void* out = nullptr;
};
cudaError_t cast_cuda(const CastCudaParams& p, cudaStream_t stream);

// out[r, i] = silu(gate[r, i]) * up[r, i] (silu_mul in ops.h), per row.
struct SiluMulCudaParams {
  int rows = 0, dim = 0;
  CudaDType dtype = CudaDType::kF32;
  const void* gate = nullptr;  // [rows, dim], row stride ld_gate (0: dim)
  int ld_gate = 0;
  const void* up = nullptr;  // [rows, dim], row stride ld_up (0: dim)
  int ld_up = 0;
  void* out = nullptr;  // [rows, dim], row stride ld_out (0: dim)
  int ld_out = 0;
};
cudaError_t silu_mul_cuda(const SiluMulCudaParams& p, cudaStream_t stream);

// ---- rms_norm.cu -----------------------------------------------------------------------------
// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps) (rms_norm in ops.h); x and y may alias.
struct RmsNormCudaParams {
  int rows = 0, dim = 0;
  float eps = 1e-6f;
  CudaDType dtype = CudaDType::kF32;    // x and y
  CudaDType w_dtype = CudaDType::kF32;  // f32 or bf16
  const void* x = nullptr;              // [rows, dim], row stride ldx (0: dim)
  int ldx = 0;
  const void* w = nullptr;  // [dim]
  void* y = nullptr;        // [rows, dim], row stride ldy (0: dim)
  int ldy = 0;
};
cudaError_t rms_norm_cuda(const RmsNormCudaParams& p, cudaStream_t stream);

// ---- embed.cu --------------------------------------------------------------------------------
// out[t] = table[ids[t]]; an id outside [0, vocab) gives a zero row (kernels cannot fail).
struct EmbedCudaParams {
  int num_tokens = 0, dim = 0, vocab = 0;
  CudaDType table_dtype = CudaDType::kF32;  // f32 or bf16
  CudaDType out_dtype = CudaDType::kF32;
  const int32_t* ids = nullptr;  // [num_tokens] device
  const void* table = nullptr;   // [vocab, dim]
  void* out = nullptr;           // [num_tokens, dim]
};
cudaError_t embed_cuda(const EmbedCudaParams& p, cudaStream_t stream);

// ---- rope.cu ---------------------------------------------------------------------------------
// In place: rotates the rope part of num_vecs vectors per token by its position's angles
// (rope_apply in ops.h with the model's table: angle = float(pos) * inv_freq[i], then
// cos/sin(angle) * mult). interleave as in ops.h (DeepSeek-V3 checkpoints: true).
struct RopeCudaParams {
  int num_tokens = 0;
  int num_vecs = 0;  // vectors per token (heads; 1 for k_pe)
  int dim = 0;       // rope width (even)
  CudaDType dtype = CudaDType::kF32;
  void* x = nullptr;  // vector v of token t starts at x + t*token_stride + v*vec_stride
  int64_t token_stride = 0;
  int64_t vec_stride = 0;
  const int32_t* positions = nullptr;  // [num_tokens] device
  const float* inv_freq = nullptr;     // [dim / 2] device, fp32 (yarn already applied)
  float mult = 1.0f;                   // attention factor (yarn mscale); 1 for default rope
  bool interleave = true;
};
cudaError_t rope_cuda(const RopeCudaParams& p, cudaStream_t stream);

// ---- kv_write.cu -----------------------------------------------------------------------------
// pool[slot[t]] = [c[t], k_pe[t]]: writes each token's latent row into a float32 paged pool
// (slot = physical block * block_size + offset); a negative slot skips the token. bf16 and FP8
// pools have one writer of their own, mla_kv_write_cuda (mla_decode_bf16.h, mla_kv_write.cu).
struct KvWriteCudaParams {
  int num_tokens = 0;
  int kv_lora_rank = 0;                   // L
  int rope_dim = 0;                       // R
  CudaDType src_dtype = CudaDType::kF32;  // f32 or bf16
  const void* c = nullptr;                // [num_tokens, L], row stride ld_c (0: L)
  int ld_c = 0;
  const void* k_pe = nullptr;  // [num_tokens, R], row stride ld_k_pe (0: R)
  int ld_k_pe = 0;
  const int64_t* slots = nullptr;  // [num_tokens] device
  float* pool = nullptr;           // [num_slots, L + R]
};
cudaError_t kv_write_cuda(const KvWriteCudaParams& p, cudaStream_t stream);

// ---- moe_route.cu ----------------------------------------------------------------------------
// DeepSeek-V3 routing, exactly moe_route in ops.h (sigmoid, bias for the choice only,
// group-limited top-k by the sum of each group's two best, ties to the lower index, weights from
// the unbiased scores, renormalised, times the scaling factor). num_experts <= 1024.
struct MoeRouteCudaParams {
  int num_tokens = 0, num_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  CudaDType logits_dtype = CudaDType::kF32;
  const void* logits = nullptr;   // [num_tokens, num_experts]
  const float* bias = nullptr;    // [num_experts] e_score_correction_bias, or null
  int32_t* expert_ids = nullptr;  // [num_tokens, top_k] out
  float* weights = nullptr;       // [num_tokens, top_k] out
};
cudaError_t moe_route_cuda(const MoeRouteCudaParams& p, cudaStream_t stream);

// ---- moe_permute.cu --------------------------------------------------------------------------
// Groups the (token, k) pairs by expert, stable in pair order: pair p = t*top_k + j goes to row
// row_of_pair[p] of expert expert_ids[p]'s range [offsets[e], offsets[e+1]); x_perm[row] =
// x[pair / top_k]. Expert ids outside [0, num_experts) (e.g. not local under EP) are dropped:
// row_of_pair = -1, and offsets[num_experts] counts the kept pairs.
struct MoePermuteCudaParams {
  int num_tokens = 0, top_k = 0, num_experts = 0, dim = 0;
  CudaDType dtype = CudaDType::kF32;
  const int32_t* expert_ids = nullptr;  // [num_tokens, top_k] device
  const void* x = nullptr;              // [num_tokens, dim]
  void* x_perm = nullptr;               // [num_tokens * top_k, dim] out (first offsets[E] rows)
  int32_t* offsets = nullptr;           // [num_experts + 1] out
  int32_t* row_of_pair = nullptr;       // [num_tokens * top_k] out
  int32_t* pair_of_row = nullptr;       // [num_tokens * top_k] out (first offsets[E] entries)
};
cudaError_t moe_permute_cuda(const MoePermuteCudaParams& p, cudaStream_t stream);

// out[t] (+)= sum_j weights[t, j] * y_perm[row_of_pair[t*top_k + j]], j in order, fp32 sums;
// dropped pairs (row -1) add nothing.
struct MoeUnpermuteCudaParams {
  int num_tokens = 0, top_k = 0, dim = 0;
  CudaDType dtype = CudaDType::kF32;     // y_perm and out
  const void* y_perm = nullptr;          // [num_tokens * top_k, dim]
  const int32_t* row_of_pair = nullptr;  // [num_tokens * top_k] device
  const float* weights = nullptr;        // [num_tokens, top_k] device
  void* out = nullptr;                   // [num_tokens, dim]
  bool accumulate = false;               // true: add to out
};
cudaError_t moe_unpermute_cuda(const MoeUnpermuteCudaParams& p, cudaStream_t stream);

// ---- sample.cu -------------------------------------------------------------------------------
// out[r] = index of the largest x[r, :], the first on ties (torch.argmax).
struct ArgmaxCudaParams {
  int rows = 0, n = 0;
  CudaDType dtype = CudaDType::kF32;
  const void* x = nullptr;  // [rows, n]
  int32_t* out = nullptr;   // [rows]
};
cudaError_t argmax_cuda(const ArgmaxCudaParams& p, cudaStream_t stream);

// Per row, the sampling of ops/sample.h (sample_row is its CPU reference): temperature <= 0 is
// the argmax; else softmax(l / T) truncated to top_k then top_p (ties at a threshold kept), one
// draw with Philox-4x32-10 keyed by seed, counter (counter, stream). -1 for a row holding a NaN
// or an Inf. Same kept tokens and random bits as the CPU reference; the CPU engine's own sampler
// (engine/sampler.cpp, mt19937_64) draws from the same distribution, not the same draws.
struct SampleCudaParams {
  int rows = 0, vocab = 0;
  CudaDType dtype = CudaDType::kF32;
  const void* logits = nullptr;       // [rows, vocab]
  const SampleRow* params = nullptr;  // [rows] device
  int32_t* out = nullptr;             // [rows]
};
cudaError_t sample_cuda(const SampleCudaParams& p, cudaStream_t stream);

// ---- attn_prefill.cu -------------------------------------------------------------------------
// Causal softmax attention over one prompt (attn_prefill in ops.h), fp32 softmax and sums; naive
// (one warp per query row, online softmax).
struct AttnPrefillCudaParams {
  int num_tokens = 0, num_heads = 0, qk_dim = 0, v_dim = 0;
  float scale = 1.0f;
  CudaDType dtype = CudaDType::kF32;  // q, k, v, out
  const void* q = nullptr;            // [T, H, qk_dim]
  const void* k = nullptr;            // [T, H, qk_dim]
  const void* v = nullptr;            // [T, H, v_dim]
  void* out = nullptr;                // [T, H, v_dim]
};
cudaError_t attn_prefill_cuda(const AttnPrefillCudaParams& p, cudaStream_t stream);

}  // namespace helix
