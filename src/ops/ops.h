#pragma once
// CPU reference of every op (one op per file in ops/cpu/). fp32 in, fp32 out, row-major.
// CUDA versions in ops/cuda/ are tested against these.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "core/float_codec.h"

namespace helix {

// ---- matmul.cpp ------------------------------------------------------------------------------
// y = x · w^T (+ y when accumulate). The layout of nn.Linear: weights are [out, in].
//   x [m, k], w [n, k], y [m, n]
void matmul(const float* x, const float* w, float* y, int m, int n, int k, bool accumulate = false);
// y = x · w (+ y when accumulate).  x [m, k], w [k, n], y [m, n]
void matmul_nn(const float* x, const float* w, float* y, int m, int n, int k,
               bool accumulate = false);
// General strided form of the above: y[m, n] (ldy) = x[m, k] (ldx) · op(w) where op(w) is w^T
// for w [n, k] (ldw) when trans_w, else w [k, n] (ldw).
void matmul_strided(const float* x, int ldx, const float* w, int ldw, bool trans_w, float* y,
                    int ldy, int m, int n, int k, float beta);

// ---- rms_norm.cpp ----------------------------------------------------------------------------
// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps), per row.  x, y [rows, dim] (may alias), w [dim]
void rms_norm(const float* x, const float* w, float* y, int rows, int dim, float eps, int ldx = -1,
              int ldy = -1);

// ---- rope.cpp --------------------------------------------------------------------------------
// Rotates n vectors of width dim in place by the angles of one position.
//   x [n, stride] (the rotary part starts at x + i*stride), cos_sin [dim] = cos[dim/2], sin[dim/2]
// interleave: pairs (2i, 2i+1) rotate by frequency i and the result is written de-interleaved
// (first halves then second halves), as transformers' DeepSeek-V3 does; else rotate_half layout.
void rope_apply(float* x, int n, int stride, int dim, const float* cos_sin, bool interleave);

// ---- silu_mul.cpp ----------------------------------------------------------------------------
// out = silu(gate) * up, elementwise.  gate, up, out [n]
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// ---- moe_route.cpp ---------------------------------------------------------------------------
struct MoeRouteParams {
  int num_tokens = 0;
  int num_experts = 0;
  int top_k = 0;
  int n_group = 1;
  int topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  const float* logits = nullptr;  // [num_tokens, num_experts] router logits (gate(x))
  const float* bias = nullptr;    // [num_experts] e_score_correction_bias (may be null)
  int* expert_ids = nullptr;      // [num_tokens, top_k] out: chosen experts
  float* weights = nullptr;       // [num_tokens, top_k] out: combine weights
};
// DeepSeek-V3 routing: sigmoid scores, group-limited selection on biased scores, weights from
// unbiased scores (renormalised if norm_topk_prob) times routed_scaling_factor.
void moe_route(const MoeRouteParams& p);

// ---- attn_prefill.cpp ------------------------------------------------------------------------
struct AttnPrefillParams {
  int num_tokens = 0;  // T
  int num_heads = 0;   // H
  int qk_dim = 0;
  int v_dim = 0;
  float scale = 1.0f;
  const float* q = nullptr;  // [T, H, qk_dim]
  const float* k = nullptr;  // [T, H, qk_dim]
  const float* v = nullptr;  // [T, H, v_dim]
  float* out = nullptr;      // [T, H, v_dim]
};
// Causal softmax attention over a whole prompt (the naive, decompressed form of MLA).
void attn_prefill(const AttnPrefillParams& p);

// ---- mla_decode.cpp --------------------------------------------------------------------------
struct MlaDecodeParams {
  int num_heads = 0;     // H (local heads)
  int kv_lora_rank = 0;  // latent width
  int rope_dim = 0;      // qk_rope_head_dim
  int num_blocks = 0;
  float scale = 1.0f;
  const float* q = nullptr;              // [H, kv_lora_rank + rope_dim] = [W_UK^T q_nope, q_pe]
  const float* const* blocks = nullptr;  // [num_blocks] -> [block_len[i], kv_lora_rank + rope_dim]
  const int* block_len = nullptr;        // [num_blocks] valid tokens per block
  float* out = nullptr;                  // [H, kv_lora_rank] latent output, softmax-normalised
  float* lse = nullptr;                  // [H] natural-log sum of exp(scores); -inf if no tokens
};
// Absorbed MLA decode attention for one query token over a paged latent cache.
void mla_decode(const MlaDecodeParams& p);

// ---- kv_fp8.cpp ------------------------------------------------------------------------------
// FP8 latent KV rows (--kv-cache-dtype fp8), the layout the CUDA writer (mla_kv_write_cuda in
// ops/cuda/mla_decode_bf16.h) produces, byte for byte:
//   [c (L e4m3), k_pe (R bf16), scale (fp32), zero pad to a multiple of 16 bytes]
// c ~= e4m3 * scale with scale = max|c| / 448 per token (1 when c is all zero); each c is
// encoded from c * (1 / scale), round-to-nearest-even, saturated to +-448; k_pe is rounded to
// bf16 (nearest even).
// The element codec (fp8_e4m3_from_float / fp8_e4m3_to_float, bf16_from_float / bf16_to_float)
// is core/float_codec.h, included above.
// Bytes of one FP8 row for (L, R) (656 at 512/64; bf16 rows take 2 (L + R) = 1152).
size_t kv_fp8_row_bytes(int kv_lora_rank, int rope_dim);
// Quantises one latent row src [L + R] (fp32) into row [kv_fp8_row_bytes(L, R)].
void kv_fp8_write_row(const float* src, int kv_lora_rank, int rope_dim, uint8_t* row);
// Dequantises one row back to fp32: dst [L + R] = [e4m3 * scale (fp32 product), k_pe].
void kv_fp8_read_row(const uint8_t* row, int kv_lora_rank, int rope_dim, float* dst);

// ---- attn_combine.cpp ------------------------------------------------------------------------
// Online-softmax state of one (token, head) row: lse = log sum exp(scores).
struct SoftmaxState {
  float lse = -std::numeric_limits<float>::infinity();
  // Weight of a partial whose state is `part` inside the combined state `*this`.
  float weight_of(float part_lse) const {
    return std::isinf(lse) ? 0.0f : std::exp(part_lse - lse);
  }
  void merge(float other_lse) {
    if (std::isinf(other_lse) && other_lse < 0) return;
    if (std::isinf(lse) && lse < 0) {
      lse = other_lse;
      return;
    }
    float m = std::max(lse, other_lse);
    lse = m + std::log(std::exp(lse - m) + std::exp(other_lse - m));
  }
};
struct AttnCombineParams {
  int num_parts = 0;             // partials, e.g. CP ranks
  int rows = 0;                  // (token, head) rows
  int dim = 0;                   // kv_lora_rank
  const float* parts = nullptr;  // [num_parts, rows, dim] partial outputs (each normalised)
  const float* lse = nullptr;    // [num_parts, rows] their log-sum-exp (-inf: no keys)
  float* out = nullptr;          // [rows, dim] exact combination
  float* out_lse = nullptr;      // [rows] combined log-sum-exp (may be null)
};
// Exact combine: O = sum_i exp(lse_i - LSE) O_i with LSE = log sum_i exp(lse_i); rows whose
// parts are all -inf give O = 0, lse = -inf (never NaN).
void attn_combine(const AttnCombineParams& p);

}  // namespace helix
