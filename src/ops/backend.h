#pragma once
// The backend interface the layer graph calls (DESIGN.md "The GPU path"): memory plus one `Ops`
// method per op. CpuOps (ops/cpu/cpu_ops.cpp) is the exact fp32 reference, the same calls in the
// same order as before the split, so CPU results are bitwise unchanged; CudaOps
// (ops/cuda/cuda_backend.cpp) maps each method to a launcher of ops/cuda/ops_cuda.h on one stream.
//
// Tensors are TensorViews (pointer, dtype, device, shape, strides): activations are F32 (CPU,
// CUDA float32 mode) or BF16 (CUDA bf16 mode, fp32 accumulation); weights F32, BF16 or F8E4M3
// with 128x128 block scales. Integer index tensors are I32 (ids, positions, block tables,
// lengths) or I64 (KV slots). All methods are asynchronous on the backend's stream except the
// copies to the host, which return with the data.
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/sample.h"

namespace helix {

// y[b] (m x n, row stride ldy) = x[b] (m x k, ldx) . op(w[b]) + beta * y[b], b < batch.
// op(w) = w^T for w [n, k] (trans_w, the nn.Linear layout) else w for w [k, n]; ld* in elements,
// batch strides in elements. w F8E4M3 needs w_scale [ceil(n/128), ceil(k/128)] (batch 1).
struct GemmArgs {
  TensorView x, w, y;  // base pointers and dtypes (shapes unused: m, n, k and the strides rule)
  const float* w_scale = nullptr;
  int m = 0, n = 0, k = 0;
  int64_t ldx = 0, ldw = 0, ldy = 0;  // 0: dense (k, k or n, n)
  bool trans_w = true;
  float beta = 0.0f;
  int batch = 1;
  int64_t stride_x = 0, stride_w = 0, stride_y = 0;
  // The reference computes a batched product as m * batch separate one-row products, rows outer
  // (the order of the decode attention's per-head projections). Other backends ignore it.
  bool rowwise = false;
};

// Rotary table of the model: angle = float(pos) * inv_freq[i], cos/sin(angle) * mult.
struct RopeTable {
  std::vector<double> inv_freq;  // [dim / 2] (yarn applied)
  double mult = 1.0;
  bool interleave = true;
  DTensor inv_freq_dev;  // [dim / 2] fp32 on the backend's device (CUDA)
};

struct RopeArgs {
  TensorView x;  // vector v of token t at x + t*token_stride + v*vec_stride (elements)
  int num_tokens = 0, num_vecs = 0, dim = 0;
  int64_t token_stride = 0, vec_stride = 0;
  TensorView positions;                 // [num_tokens] I32, on the device
  const int* positions_host = nullptr;  // same, on the host (the CPU reference reads these)
  const RopeTable* table = nullptr;
};

// Absorbed MLA decode for `batch` sequences over one layer's paged latent pool.
struct MlaDecodeArgs {
  int batch = 0, num_heads = 0, kv_lora_rank = 0, rope_dim = 0, block_size = 0;
  int max_blocks_per_seq = 0;  // columns of block_table
  int max_seq_len = 0;         // host upper bound of seq_lens (plans the KV split)
  float scale = 1.0f;
  TensorView q;     // [B, H, L + R]
  TensorView pool;  // [num_blocks, block_size, L + R] of this layer (F8E4M3: row bytes, not L + R)
  TensorView block_table;                 // [B, max_blocks_per_seq] I32
  TensorView seq_lens;                    // [B] I32 valid local tokens
  const int* block_table_host = nullptr;  // host copies (the CPU reference walks the blocks)
  const int* seq_lens_host = nullptr;
  TensorView out;  // [B, H, L] F32
  TensorView lse;  // [B, H] F32
};

struct MoeRouteArgs {
  int num_tokens = 0, num_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  TensorView logits;            // [T, E]
  const float* bias = nullptr;  // [E] on the device, or null
  TensorView expert_ids;        // [T, top_k] I32 out
  TensorView weights;           // [T, top_k] F32 out
};

struct AttnPrefillArgs {
  int num_tokens = 0, num_heads = 0, qk_dim = 0, v_dim = 0;
  float scale = 1.0f;
  TensorView q, k, v, out;  // [T, H, qk], [T, H, qk], [T, H, v], [T, H, v]
};

// Routed experts of one MoE layer over a batch, all on the device (no host round trip): rows
// permuted by expert, grouped GEMMs (gate_up, then down after silu_mul), weighted unpermute
// added into out. Expert e's weights: gate_up_ptrs[e] -> [2I, D], down_ptrs[e] -> [D, I].
struct MoeExpertsArgs {
  int num_tokens = 0, top_k = 0, num_experts = 0, dim = 0, inter = 0;
  TensorView x;             // [T, D]
  TensorView expert_ids;    // [T, K] I32
  TensorView weights;       // [T, K] F32
  TensorView gate_up_ptrs;  // [E] device pointers (I64)
  TensorView down_ptrs;     // [E] device pointers (I64)
  // FP8 weights: [E] device pointers to their block scales (I64); empty otherwise.
  TensorView gate_up_scale_ptrs, down_scale_ptrs;
  const std::vector<DTensor>* gate_up = nullptr;  // the same weights, for the CPU reference
  const std::vector<DTensor>* down = nullptr;
  DType w_dtype = DType::F32;
  TensorView out;  // [T, D], accumulated into
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  // Activation dtype of this backend's layer graph (F32 on the CPU).
  virtual DType act_dtype() const = 0;
  virtual std::string name() const = 0;

  // ---- memory ---------------------------------------------------------------------------------
  // A zero-filled contiguous tensor on the device.
  virtual DTensor alloc(const std::vector<int64_t>& shape, DType dtype) = 0;
  // A weight on the device in `dtype` (F32 or BF16), from a host fp32 tensor (consumed).
  virtual DTensor upload(Tensor&& host, DType dtype) = 0;
  // Raw bytes (an FP8 checkpoint tensor, int tables) as they are, to the device.
  virtual DTensor upload_raw(const void* data, const std::vector<int64_t>& shape, DType dtype) = 0;
  // src (any float dtype, contiguous) -> host fp32 [src.numel()]; returns when the data is there.
  virtual void to_host(const TensorView& src, float* dst) = 0;
  virtual void to_host_raw(const TensorView& src, void* dst) = 0;
  // dst (contiguous) <- host bytes of dst's dtype.
  virtual void from_host(const void* src, const TensorView& dst) = 0;
  // rows x cols elements of one dtype between strided 2-D regions (ld in elements).
  virtual void copy2d(const TensorView& dst, int64_t ld_dst, const TensorView& src, int64_t ld_src,
                      int64_t rows, int64_t cols) = 0;
  virtual void fill_zero(const TensorView& t) = 0;
  // dst = src converted (F32 <-> BF16; a copy when the dtypes match), both contiguous.
  virtual void cast(const TensorView& dst, const TensorView& src) = 0;
  virtual void sync() = 0;
  // Device memory free now (0 on the CPU: no device pool to size).
  virtual size_t free_bytes() const { return 0; }

  // ---- ops (semantics: ops/ops.h) -------------------------------------------------------------
  virtual void gemm(const GemmArgs& a) = 0;
  // y[r] = rms_norm(x[r]) * w for rows x dim (ld 0: dim); x and y may alias.
  virtual void rms_norm(const TensorView& x, int64_t ldx, const TensorView& w, const TensorView& y,
                        int64_t ldy, int rows, int dim, float eps) = 0;
  // y[r, :cols] += x[bias_row ? 0 : r, :cols] for rows x cols (ld in elements, 0: cols).
  virtual void add(const TensorView& y, int64_t ldy, const TensorView& x, int64_t ldx, int rows,
                   int cols, bool bias_row) = 0;
  // out[t] = table[ids[t]]; ids I32 on the device, ids_host the same on the host.
  virtual void embed(const TensorView& table, const TensorView& ids, const int* ids_host,
                     const TensorView& out, int num_tokens) = 0;
  virtual void rope(const RopeArgs& a) = 0;
  // pool[slots[t]] = lat[t] = [c (L), k_pe (R)] (lat row stride ld); slots I64 (-1: skip).
  // An F8E4M3 pool holds FP8 rows of kv_fp8_row_bytes(L, R) bytes (ops.h, kv_fp8.cpp), quantised
  // here; mla_decode dequantises them.
  virtual void kv_write(const TensorView& pool, const TensorView& lat, int64_t ld, int num_tokens,
                        int kv_lora_rank, int rope_dim, const TensorView& slots,
                        const int64_t* slots_host) = 0;
  // Plans the split-KV work of mla_decode for batches up to max_batch of this head layout and
  // pool dtype (the engine calls it once per decode batch shape, outside graph capture;
  // mla_decode plans on first use otherwise). No-op where the kernel needs no plan.
  virtual void mla_plan(int num_heads, int kv_lora_rank, int rope_dim, int max_batch,
                        DType kv_dtype = DType::BF16) {}
  virtual void mla_decode(const MlaDecodeArgs& a) = 0;
  // Exact LSE combine of num_parts partials (attn_combine in ops.h).
  virtual void attn_combine(const TensorView& parts, const TensorView& lse, const TensorView& out,
                            const TensorView& out_lse, int num_parts, int rows, int dim) = 0;
  virtual void moe_route(const MoeRouteArgs& a) = 0;
  // out[r, :dim] = silu(gu[r, :dim]) * gu[r, dim:2dim] for each row.
  virtual void silu_mul(const TensorView& gu, const TensorView& out, int rows, int dim) = 0;
  // out[dst[i]] += w[i] * y[src[i]] for i in order (rows of width dim), index lists and weights
  // on the host (the reference order: routed experts add in expert order).
  virtual void scatter_add_rows(const TensorView& out, const TensorView& y, const int* src_host,
                                const int* dst_host, const float* w_host, int n, int dim) = 0;
  // out[r] = argmax(x[r, :n]) (first on ties), to the host.
  virtual void argmax(const TensorView& x, int rows, int n, int* out_host) = 0;
  // out[r] (I32) = sample_row(logits[r], vocab, params[r]) (ops/sample.h: greedy, temperature,
  // top-k, top-p, counter-based draws; -1 for a non-finite row). logits F32 [rows, vocab];
  // params [rows] SampleRow records (as I64 [rows, 5]); all on the device, nothing synchronises.
  virtual void sample(const TensorView& logits, const TensorView& params, const TensorView& out,
                      int rows, int vocab) = 0;
  virtual void attn_prefill(const AttnPrefillArgs& a) = 0;
  virtual void moe_experts(const MoeExpertsArgs& a) = 0;

  // ---- CUDA graphs: ops issued between graph_begin and graph_end are recorded, not run ------
  virtual bool supports_graphs() const { return false; }
  virtual void graph_begin() {}
  virtual std::shared_ptr<void> graph_end() { return nullptr; }  // an executable graph
  virtual void graph_launch(const std::shared_ptr<void>&) {}
};

std::unique_ptr<Ops> make_cpu_ops();
// The CUDA backend on device `index` computing in act (F32: the float32 mode, BF16). Throws
// helix::Error when there is no GPU or helix was built without CUDA.
std::unique_ptr<Ops> make_cuda_ops(int index, DType act);
// Number of CUDA devices visible (0 without a GPU or without CUDA support).
int cuda_device_count();

}  // namespace helix
