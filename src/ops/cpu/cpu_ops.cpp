// CpuOps: the Ops interface over the fp32 reference ops of ops/ops.h, host memory only. Every
// method makes the same reference calls, in the same order, as the model made before the split:
// CPU results are bitwise unchanged.
#include <cstring>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace helix {

namespace {

float* F(const TensorView& v) {
  HELIX_CHECK(v.dtype == DType::F32 && v.device.is_cpu(),
              "CpuOps: expected a host float32 tensor, got {}", dtype_name(v.dtype));
  return v.f32();
}

class CpuOps final : public Ops {
 public:
  Device device() const override { return Device::cpu(); }
  DType act_dtype() const override { return DType::F32; }
  std::string name() const override { return "cpu"; }

  DTensor alloc(const std::vector<int64_t>& shape, DType dtype) override {
    const int64_t n = Tensor::numel_of(shape);
    const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
    auto buf = std::make_shared<Buffer>();
    buf->ptr = bytes ? ::operator new(bytes) : nullptr;
    if (bytes) std::memset(buf->ptr, 0, bytes);
    buf->bytes = bytes;
    buf->release = [](void* p) { ::operator delete(p); };
    return DTensor(buf, TensorView::make(buf->ptr, dtype, Device::cpu(), shape.data(),
                                         static_cast<int>(shape.size())));
  }
  DTensor upload(Tensor&& host, DType dtype) override {
    HELIX_CHECK(dtype == DType::F32, "the CPU backend keeps weights in float32");
    return DTensor::from_host(std::move(host));
  }
  DTensor upload_raw(const void* data, const std::vector<int64_t>& shape, DType dtype) override {
    DTensor t = alloc(shape, dtype);
    std::memcpy(t.view().data, data, t.view().bytes());
    return t;
  }
  void to_host(const TensorView& src, float* dst) override {
    std::memcpy(dst, F(src), src.bytes());
  }
  void to_host_raw(const TensorView& src, void* dst) override {
    std::memcpy(dst, src.data, src.bytes());
  }
  void from_host(const void* src, const TensorView& dst) override {
    std::memcpy(dst.data, src, dst.bytes());
  }
  void copy2d(const TensorView& dst, int64_t ld_dst, const TensorView& src, int64_t ld_src,
              int64_t rows, int64_t cols) override {
    const size_t es = dtype_size(src.dtype);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst.data) + r * ld_dst * es,
                  static_cast<const char*>(src.data) + r * ld_src * es, cols * es);
  }
  void fill_zero(const TensorView& t) override { std::memset(t.data, 0, t.bytes()); }
  void cast(const TensorView& dst, const TensorView& src) override {
    HELIX_CHECK(dst.dtype == src.dtype, "CpuOps computes in float32 only");
    std::memcpy(dst.data, src.data, src.bytes());
  }
  void sync() override {}

  void gemm(const GemmArgs& a) override {
    const int64_t ldx = a.ldx ? a.ldx : a.k, ldy = a.ldy ? a.ldy : a.n;
    const int64_t ldw = a.ldw ? a.ldw : (a.trans_w ? a.k : a.n);
    const float *x = F(a.x), *w = F(a.w);
    float* y = F(a.y);
    if (a.rowwise) {
      for (int i = 0; i < a.m; ++i)
        for (int b = 0; b < a.batch; ++b)
          matmul_strided(x + b * a.stride_x + i * ldx, static_cast<int>(ldx), w + b * a.stride_w,
                         static_cast<int>(ldw), a.trans_w, y + b * a.stride_y + i * ldy,
                         static_cast<int>(ldy), 1, a.n, a.k, a.beta);
      return;
    }
    for (int b = 0; b < a.batch; ++b)
      matmul_strided(x + b * a.stride_x, static_cast<int>(ldx), w + b * a.stride_w,
                     static_cast<int>(ldw), a.trans_w, y + b * a.stride_y, static_cast<int>(ldy),
                     a.m, a.n, a.k, a.beta);
  }
  void rms_norm(const TensorView& x, int64_t ldx, const TensorView& w, const TensorView& y,
                int64_t ldy, int rows, int dim, float eps) override {
    helix::rms_norm(F(x), F(w), F(y), rows, dim, eps, ldx ? static_cast<int>(ldx) : -1,
                    ldy ? static_cast<int>(ldy) : -1);
  }
  void add(const TensorView& y, int64_t ldy, const TensorView& x, int64_t ldx, int rows, int cols,
           bool bias_row) override {
    float* yp = F(y);
    const float* xp = F(x);
    if (ldy == 0) ldy = cols;
    if (ldx == 0) ldx = cols;
    if (!bias_row && ldy == cols && ldx == cols) {  // the residual add: one flat loop
      const int64_t n = static_cast<int64_t>(rows) * cols;
      for (int64_t i = 0; i < n; ++i) yp[i] += xp[i];
      return;
    }
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < cols; ++i) yp[r * ldy + i] += xp[(bias_row ? 0 : r * ldx) + i];
  }
  void embed(const TensorView& table, const TensorView&, const int* ids_host, const TensorView& out,
             int num_tokens) override {
    const int64_t D = table.dim(1);
    for (int t = 0; t < num_tokens; ++t)
      std::memcpy(F(out) + static_cast<int64_t>(t) * D,
                  F(table) + static_cast<int64_t>(ids_host[t]) * D, D * sizeof(float));
  }
  void rope(const RopeArgs& a) override {
    const RopeTable& tb = *a.table;
    const int half = a.dim / 2;
    std::vector<float> cs(static_cast<size_t>(a.dim));
    for (int t = 0; t < a.num_tokens; ++t) {
      const int pos = a.positions_host[t];
      for (int i = 0; i < half; ++i) {
        // transformers forms the angle in float32: position * inv_freq.
        const float ang = static_cast<float>(pos) * static_cast<float>(tb.inv_freq[i]);
        cs[i] = static_cast<float>(std::cos(ang) * tb.mult);
        cs[half + i] = static_cast<float>(std::sin(ang) * tb.mult);
      }
      rope_apply(F(a.x) + t * a.token_stride, a.num_vecs, static_cast<int>(a.vec_stride), a.dim,
                 cs.data(), tb.interleave);
    }
  }
  void kv_write(const TensorView& pool, const TensorView& lat, int64_t ld, int num_tokens,
                int kv_lora_rank, int rope_dim, const TensorView&,
                const int64_t* slots_host) override {
    const int width = kv_lora_rank + rope_dim;
    if (pool.dtype == DType::F8E4M3) {  // FP8 rows (kv_fp8.cpp), quantised as the CUDA writer
      const size_t rb = kv_fp8_row_bytes(kv_lora_rank, rope_dim);
      for (int t = 0; t < num_tokens; ++t)
        if (slots_host[t] >= 0)
          kv_fp8_write_row(F(lat) + t * ld, kv_lora_rank, rope_dim,
                           static_cast<uint8_t*>(pool.data) + slots_host[t] * rb);
      return;
    }
    for (int t = 0; t < num_tokens; ++t)
      if (slots_host[t] >= 0)
        std::memcpy(F(pool) + slots_host[t] * width, F(lat) + t * ld, width * sizeof(float));
  }
  void mla_decode(const MlaDecodeArgs& a) override {
    const int W = a.kv_lora_rank + a.rope_dim;
    const bool fp8 = a.pool.dtype == DType::F8E4M3;
    HELIX_CHECK(fp8 || (a.pool.dtype == DType::F32 && a.pool.device.is_cpu()),
                "CpuOps: the KV pool must be host float32 or FP8, got {}",
                dtype_name(a.pool.dtype));
    const size_t rb = fp8 ? kv_fp8_row_bytes(a.kv_lora_rank, a.rope_dim) : 0;
    std::vector<const float*> ptrs;
    std::vector<int> lens;
    std::vector<float> deq;  // FP8: the sequence's rows dequantised to fp32, block after block
    for (int b = 0; b < a.batch; ++b) {
      const int len = a.seq_lens_host[b];
      const int nb = (len + a.block_size - 1) / a.block_size;
      ptrs.clear();
      lens.clear();
      if (fp8) deq.resize(static_cast<size_t>(nb) * a.block_size * W);
      for (int i = 0; i < nb; ++i) {
        const int blk = a.block_table_host[static_cast<int64_t>(b) * a.max_blocks_per_seq + i];
        const int n = std::min(a.block_size, len - i * a.block_size);
        if (fp8) {
          float* d = deq.data() + static_cast<int64_t>(i) * a.block_size * W;
          const uint8_t* rows = static_cast<const uint8_t*>(a.pool.data) +
                                static_cast<int64_t>(blk) * a.block_size * rb;
          for (int t = 0; t < n; ++t)
            kv_fp8_read_row(rows + t * rb, a.kv_lora_rank, a.rope_dim, d + t * W);
          ptrs.push_back(d);
        } else {
          ptrs.push_back(F(a.pool) + static_cast<int64_t>(blk) * a.block_size * W);
        }
        lens.push_back(n);
      }
      MlaDecodeParams mp;
      mp.num_heads = a.num_heads;
      mp.kv_lora_rank = a.kv_lora_rank;
      mp.rope_dim = a.rope_dim;
      mp.num_blocks = nb;
      mp.scale = a.scale;
      mp.q = F(a.q) + static_cast<int64_t>(b) * a.num_heads * W;
      mp.blocks = ptrs.data();
      mp.block_len = lens.data();
      mp.out = F(a.out) + static_cast<int64_t>(b) * a.num_heads * a.kv_lora_rank;
      mp.lse = F(a.lse) + static_cast<int64_t>(b) * a.num_heads;
      helix::mla_decode(mp);
    }
  }
  void attn_combine(const TensorView& parts, const TensorView& lse, const TensorView& out,
                    const TensorView& out_lse, int num_parts, int rows, int dim) override {
    AttnCombineParams p;
    p.num_parts = num_parts;
    p.rows = rows;
    p.dim = dim;
    p.parts = F(parts);
    p.lse = F(lse);
    p.out = F(out);
    p.out_lse = out_lse.data ? F(out_lse) : nullptr;
    helix::attn_combine(p);
  }
  void moe_route(const MoeRouteArgs& a) override {
    MoeRouteParams rp;
    rp.num_tokens = a.num_tokens;
    rp.num_experts = a.num_experts;
    rp.top_k = a.top_k;
    rp.n_group = a.n_group;
    rp.topk_group = a.topk_group;
    rp.norm_topk_prob = a.norm_topk_prob;
    rp.routed_scaling_factor = a.routed_scaling_factor;
    rp.logits = F(a.logits);
    rp.bias = a.bias;
    rp.expert_ids = a.expert_ids.i32();
    rp.weights = F(a.weights);
    helix::moe_route(rp);
  }
  void silu_mul(const TensorView& gu, const TensorView& out, int rows, int dim) override {
    const float* g = F(gu);
    float* o = F(out);
    for (int t = 0; t < rows; ++t)
      helix::silu_mul(g + static_cast<int64_t>(t) * 2 * dim,
                      g + static_cast<int64_t>(t) * 2 * dim + dim,
                      o + static_cast<int64_t>(t) * dim, dim);
  }
  void scatter_add_rows(const TensorView& out, const TensorView& y, const int* src_host,
                        const int* dst_host, const float* w_host, int n, int dim) override {
    float* o = F(out);
    const float* yp = F(y);
    for (int i = 0; i < n; ++i) {
      float* od = o + static_cast<int64_t>(dst_host[i]) * dim;
      const float* yi = yp + static_cast<int64_t>(src_host[i]) * dim;
      const float wt = w_host[i];
      for (int d = 0; d < dim; ++d) od[d] += wt * yi[d];
    }
  }
  void argmax(const TensorView& x, int rows, int n, int* out_host) override {
    const float* p = F(x);
    for (int r = 0; r < rows; ++r) {
      const float* row = p + static_cast<int64_t>(r) * n;
      int best = 0;
      for (int i = 1; i < n; ++i)
        if (row[i] > row[best]) best = i;
      out_host[r] = best;
    }
  }
  void sample(const TensorView& logits, const TensorView& params, const TensorView& out, int rows,
              int vocab) override {
    const SampleRow* sp = static_cast<const SampleRow*>(params.data);
    for (int r = 0; r < rows; ++r)
      out.i32()[r] = sample_row(F(logits) + static_cast<int64_t>(r) * vocab, vocab, sp[r]);
  }
  void attn_prefill(const AttnPrefillArgs& a) override {
    AttnPrefillParams pp;
    pp.num_tokens = a.num_tokens;
    pp.num_heads = a.num_heads;
    pp.qk_dim = a.qk_dim;
    pp.v_dim = a.v_dim;
    pp.scale = a.scale;
    pp.q = F(a.q);
    pp.k = F(a.k);
    pp.v = F(a.v);
    pp.out = F(a.out);
    helix::attn_prefill(pp);
  }
  // Reference of the device MoE path: each (token, k) pair through its expert, added in k order.
  void moe_experts(const MoeExpertsArgs& a) override {
    const int D = a.dim, I = a.inter;
    std::vector<float> gu(2 * static_cast<size_t>(I)), act(I), y(D);
    for (int t = 0; t < a.num_tokens; ++t)
      for (int j = 0; j < a.top_k; ++j) {
        const int e = a.expert_ids.i32()[t * a.top_k + j];
        const float w = F(a.weights)[t * a.top_k + j];
        matmul(F(a.x) + static_cast<int64_t>(t) * D, (*a.gate_up)[e].f32(), gu.data(), 1, 2 * I, D);
        helix::silu_mul(gu.data(), gu.data() + I, act.data(), I);
        matmul(act.data(), (*a.down)[e].f32(), y.data(), 1, D, I);
        float* o = F(a.out) + static_cast<int64_t>(t) * D;
        for (int d = 0; d < D; ++d) o[d] += w * y[d];
      }
  }
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() {
  return std::make_unique<CpuOps>();
}

}  // namespace helix
