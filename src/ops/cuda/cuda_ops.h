#pragma once
// CUDA versions of the ops in ops/ops.h. Host launchers take device pointers, sizes and a stream
// and return the first CUDA error (launches are asynchronous; nothing here synchronises).
// fp32 in, fp32 out, row-major, same semantics as the CPU references (tested against them in
// tests/cuda/).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace helix {

// ---- attn_combine.cu -------------------------------------------------------------------------
// Exact combine of partial attention outputs (see attn_combine in ops.h): parts whose lse is
// -inf contribute nothing and are never read; rows with all parts -inf give out 0, lse -inf.
//   parts [num_parts, rows, dim], lse [num_parts, rows], out [rows, dim], out_lse [rows] or null
cudaError_t attn_combine_cuda(const float* parts, const float* lse, float* out, float* out_lse,
                              int num_parts, int rows, int dim, cudaStream_t stream);

// ---- mla_decode.cu ---------------------------------------------------------------------------
// Which split kernel runs the instantiated sizes (L, R) = (512, 64) and (32, 16); other sizes
// always take the generic kernel.
enum class MlaDecodeKernel : int {
  kAuto = 0,  // tensor cores (kMma), unless the environment sets HELIX_MLA_KERNEL=fma
  kFma = 1,   // fp32 FMA on CUDA cores (the first version; slower, kept for comparison)
  kMma = 2,   // mma.sync TF32 with the 3xTF32 split: fp32-level accuracy on tensor cores
};

struct MlaDecodeCudaParams {
  int batch = 0;               // B, one query token per sequence
  int num_heads = 0;           // H (local heads)
  int kv_lora_rank = 0;        // L, latent width
  int rope_dim = 0;            // R, qk_rope_head_dim
  int block_size = 0;          // tokens per KV block
  int max_blocks_per_seq = 0;  // columns of block_table
  // Host-side upper bound on seq_lens (sizes the split of the sequence over CTAs);
  // 0: max_blocks_per_seq * block_size.
  int max_seq_len = 0;
  int num_splits = 0;  // KV chunks per sequence; 0: chosen from the SM count
  float scale = 1.0f;
  const float* q = nullptr;        // [B, H, L + R] = [W_UK^T q_nope, q_pe] per head
  const float* kv_pool = nullptr;  // [num_physical_blocks, block_size, L + R] = [c, k_pe] per token
  const int32_t* block_table = nullptr;  // [B, max_blocks_per_seq] physical block ids
  const int32_t* seq_lens = nullptr;     // [B] valid tokens: the first seq_lens[b] of its blocks
  float* out = nullptr;                  // [B, H, L] latent output, softmax-normalised
  float* lse = nullptr;                  // [B, H] natural-log sum of exp(scores); -inf if empty
  // Scratch for the split partials, [num_splits, B, H, L + 1] floats. Null or too small: the
  // launcher takes it from the stream-ordered allocator (cudaMallocAsync) and frees it after.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  MlaDecodeKernel kernel = MlaDecodeKernel::kAuto;
};

// Absorbed MLA decode attention (the CUDA form of mla_decode in ops.h) for a batch of sequences
// over a paged latent cache: split-KV partials with an online softmax, then an exact combine.
cudaError_t mla_decode_cuda(const MlaDecodeCudaParams& p, cudaStream_t stream);

// Splits the launcher would use for p on the current device (p.num_splits if set).
int mla_decode_cuda_num_splits(const MlaDecodeCudaParams& p);
// Workspace bytes the launcher needs for p on the current device (0 when it does not split).
size_t mla_decode_cuda_workspace_bytes(const MlaDecodeCudaParams& p);

}  // namespace helix
