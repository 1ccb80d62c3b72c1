// CudaOps: the Ops interface on one GPU and one stream, over the launchers of ops_cuda.h,
// cuda_ops.h (MLA decode, combine) and backend_kernels.h. Activations F32 (float32 mode) or BF16
// (fp32 accumulation); weights F32 or BF16. Memory: weights with cudaMalloc, per-step tensors
// stream-ordered (cudaMallocAsync), so a step never waits on an allocation.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include <cuda_runtime.h>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/cuda_gemm_dispatch.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/mla_decode_bf16.h"
#include "ops/cuda/op_timer.h"
#include "ops/cuda/ops_cuda.h"

namespace helix {

namespace {

using cudaops::cdt;
using cudaops::ck;

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

class CudaOps final : public Ops {
 public:
  CudaOps(int index, DType act) : index_(index), act_(act) {
    HELIX_CHECK(act == DType::F32 || act == DType::BF16, "--dtype: float32 or bfloat16");
    ck(cudaSetDevice(index), "cudaSetDevice");
    ck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ck(cuda_ops_context_create(&ctx_), "cuBLAS context");
    // HELIX_GEMM=legacy|mma pins the GEMM kernels (A/B runs of the whole model); unset: auto.
    if (const char* g = std::getenv("HELIX_GEMM")) {
      const std::string v = g;
      HELIX_CHECK(v == "auto" || v == "legacy" || v == "mma", "HELIX_GEMM: auto, legacy or mma");
      algo_ = v == "legacy" ? GemmAlgo::kLegacy : v == "mma" ? GemmAlgo::kMma : GemmAlgo::kAuto;
    }
  }
  ~CudaOps() override {
    cudaStreamSynchronize(stream_);
    for (auto& [k, p] : plans_) mla_plan_release(&p);
    cuda_ops_context_destroy(&ctx_);
    cudaStreamDestroy(stream_);
  }
  Device device() const override { return Device::cuda(index_); }
  DType act_dtype() const override { return act_; }
  std::string name() const override { return "cuda"; }

  DTensor alloc(const std::vector<int64_t>& shape, DType dtype) override {
    OpScope ts(timer_, stream_, "alloc+memset");
    const size_t bytes = static_cast<size_t>(Tensor::numel_of(shape)) * dtype_size(dtype);
    auto buf = std::make_shared<Buffer>();
    buf->bytes = bytes;
    buf->device = device();
    if (bytes) {
      cudaError_t e = cudaMallocAsync(&buf->ptr, bytes, stream_);
      if (e != cudaSuccess)
        fail("GPU out of memory: cannot allocate {:.1f} MiB ({})", bytes / 1048576.0,
             cudaGetErrorString(e));
      ck(cudaMemsetAsync(buf->ptr, 0, bytes, stream_), "cudaMemsetAsync");
      cudaStream_t s = stream_;
      buf->release = [s](void* p) { cudaFreeAsync(p, s); };
    }
    return DTensor(buf, TensorView::make(buf->ptr, dtype, device(), shape.data(),
                                         static_cast<int>(shape.size())));
  }
  // Long-lived memory (weights): plain cudaMalloc.
  DTensor alloc_static(const std::vector<int64_t>& shape, DType dtype) {
    const size_t bytes = static_cast<size_t>(Tensor::numel_of(shape)) * dtype_size(dtype);
    auto buf = std::make_shared<Buffer>();
    buf->bytes = bytes;
    buf->device = device();
    if (bytes) {
      cudaError_t e = cudaMalloc(&buf->ptr, bytes);
      if (e != cudaSuccess)
        fail("GPU out of memory loading weights: cannot allocate {:.1f} MiB ({})",
             bytes / 1048576.0, cudaGetErrorString(e));
      buf->release = [](void* p) { cudaFree(p); };
    }
    return DTensor(buf, TensorView::make(buf->ptr, dtype, device(), shape.data(),
                                         static_cast<int>(shape.size())));
  }
  DTensor upload(Tensor&& host, DType dtype) override {
    DTensor t = alloc_static(host.shape, dtype);
    if (t.empty()) return t;
    if (dtype == DType::F32) {
      ck(cudaMemcpy(t.view().data, host.ptr(), t.view().bytes(), cudaMemcpyHostToDevice), "upload");
    } else {
      HELIX_CHECK(dtype == DType::BF16, "CudaOps::upload: float32 or bfloat16 weights");
      std::vector<uint16_t> b(host.data.size());
      // Rounding 28 GB of weights is the load's bottleneck: split it over the cores.
      const size_t n = b.size(), nt = n < (1u << 20) ? 1 : 16;
      std::vector<std::thread> th;
      for (size_t j = 0; j < nt; ++j)
        th.emplace_back([&, j] {
          for (size_t i = n * j / nt; i < n * (j + 1) / nt; ++i) b[i] = to_bf16(host.data[i]);
        });
      for (auto& t : th) t.join();
      ck(cudaMemcpy(t.view().data, b.data(), t.view().bytes(), cudaMemcpyHostToDevice), "upload");
    }
    return t;
  }
  DTensor upload_raw(const void* data, const std::vector<int64_t>& shape, DType dtype) override {
    DTensor t = alloc(shape, dtype);
    if (!t.empty())
      ck(cudaMemcpyAsync(t.view().data, data, t.view().bytes(), cudaMemcpyHostToDevice, stream_),
         "upload");
    return t;
  }
  void to_host(const TensorView& src, float* dst) override {
    if (src.dtype == DType::F32) {
      to_host_raw(src, dst);
      return;
    }
    HELIX_CHECK(src.dtype == DType::BF16, "CudaOps::to_host: float tensors only");
    std::vector<uint16_t> b(static_cast<size_t>(src.numel()));
    to_host_raw(src, b.data());
    for (size_t i = 0; i < b.size(); ++i) dst[i] = from_bf16(b[i]);
  }
  void to_host_raw(const TensorView& src, void* dst) override {
    if (src.bytes() == 0) return;
    ck(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_), "to_host");
    ck(cudaStreamSynchronize(stream_), "to_host");
  }
  void from_host(const void* src, const TensorView& dst) override {
    ck(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_), "from_host");
  }
  void copy2d(const TensorView& dst, int64_t ld_dst, const TensorView& src, int64_t ld_src,
              int64_t rows, int64_t cols) override {
    OpScope ts(timer_, stream_, "copy2d");
    if (rows <= 0 || cols <= 0) return;
    const size_t es = dtype_size(src.dtype);
    ck(cudaMemcpy2DAsync(dst.data, ld_dst * es, src.data, ld_src * es, cols * es, rows,
                         cudaMemcpyDeviceToDevice, stream_),
       "copy2d");
  }
  void fill_zero(const TensorView& t) override {
    OpScope ts(timer_, stream_, "fill_zero");
    if (t.bytes()) ck(cudaMemsetAsync(t.data, 0, t.bytes(), stream_), "fill_zero");
  }
  void cast(const TensorView& dst, const TensorView& src) override {
    OpScope ts(timer_, stream_, "cast");
    CastCudaParams p;
    p.n = src.numel();
    p.in_dtype = cdt(src.dtype);
    p.out_dtype = cdt(dst.dtype);
    p.in = src.data;
    p.out = dst.data;
    ck(cast_cuda(p, stream_), "cast");
  }
  void sync() override { ck(cudaStreamSynchronize(stream_), "sync"); }
  size_t free_bytes() const override {
    size_t f = 0, t = 0;
    cudaStreamSynchronize(stream_);
    cudaMemGetInfo(&f, &t);
    return f;
  }

  void gemm(const GemmArgs& a) override {
    OpScope ts(timer_, stream_,
               timer_.on() ? "gemm " + std::string(dtype_name(a.w.dtype)) + " " +
                                 std::to_string(a.batch) + "x" + std::to_string(a.m) + "x" +
                                 std::to_string(a.n) + "x" + std::to_string(a.k)
                           : std::string());
    cudaops::gemm(ctx_, algo_, a, stream_);
  }
  void rms_norm(const TensorView& x, int64_t ldx, const TensorView& w, const TensorView& y,
                int64_t ldy, int rows, int dim, float eps) override {
    OpScope ts(timer_, stream_, "rms_norm");
    RmsNormCudaParams p;
    p.rows = rows;
    p.dim = dim;
    p.eps = eps;
    p.dtype = cdt(x.dtype);
    p.w_dtype = cdt(w.dtype);
    p.x = x.data;
    p.ldx = static_cast<int>(ldx);
    p.w = w.data;
    p.y = y.data;
    p.ldy = static_cast<int>(ldy);
    ck(rms_norm_cuda(p, stream_), "rms_norm");
  }
  void add(const TensorView& y, int64_t ldy, const TensorView& x, int64_t ldx, int rows, int cols,
           bool bias_row) override {
    OpScope ts(timer_, stream_, "add");
    ck(add_rows_cuda(y.data, ldy ? ldy : cols, y.dtype == DType::BF16, x.data, ldx ? ldx : cols,
                     x.dtype == DType::BF16, rows, cols, bias_row, stream_),
       "add");
  }
  void embed(const TensorView& table, const TensorView& ids, const int*, const TensorView& out,
             int num_tokens) override {
    OpScope ts(timer_, stream_, "embed");
    EmbedCudaParams p;
    p.num_tokens = num_tokens;
    p.dim = static_cast<int>(table.dim(1));
    p.vocab = static_cast<int>(table.dim(0));
    p.table_dtype = cdt(table.dtype);
    p.out_dtype = cdt(out.dtype);
    p.ids = ids.i32();
    p.table = table.data;
    p.out = out.data;
    ck(embed_cuda(p, stream_), "embed");
  }
  void rope(const RopeArgs& a) override {
    OpScope ts(timer_, stream_, "rope");
    RopeCudaParams p;
    p.num_tokens = a.num_tokens;
    p.num_vecs = a.num_vecs;
    p.dim = a.dim;
    p.dtype = cdt(a.x.dtype);
    p.x = a.x.data;
    p.token_stride = a.token_stride;
    p.vec_stride = a.vec_stride;
    p.positions = a.positions.i32();
    p.inv_freq = a.table->inv_freq_dev.f32();
    p.mult = static_cast<float>(a.table->mult);
    p.interleave = a.table->interleave;
    ck(rope_cuda(p, stream_), "rope");
  }
  void kv_write(const TensorView& pool, const TensorView& lat, int64_t ld, int num_tokens,
                int kv_lora_rank, int rope_dim, const TensorView& slots, const int64_t*) override {
    OpScope ts(timer_, stream_, "kv_write");
    const int R = rope_dim, width = kv_lora_rank + rope_dim;
    if (num_tokens == 0) return;
    HELIX_CHECK(lat.dtype == DType::F32 || lat.dtype == DType::BF16,
                "kv_write: latent rows must be float32 or bfloat16");
    if (pool.dtype == DType::BF16 || pool.dtype == DType::F8E4M3) {
      // The bf16 / FP8 rows the MLA kernels read: one writer for both (mla_kv_write.cu); FP8
      // rows are quantised per token.
      MlaKvWriteParams w;
      w.num_tokens = num_tokens;
      w.kv_lora_rank = kv_lora_rank;
      w.rope_dim = rope_dim;
      w.kv_dtype = pool.dtype == DType::BF16 ? MlaKvDtype::kBf16 : MlaKvDtype::kFp8E4m3;
      w.src = lat.data;
      w.src_bf16 = lat.dtype == DType::BF16;
      w.src_stride = ld;
      w.slot_mapping = static_cast<const int64_t*>(slots.data);
      w.kv_pool = pool.data;
      ck(mla_kv_write_cuda(w, stream_), "kv_write");
      return;
    }
    HELIX_CHECK(pool.dtype == DType::F32, "kv_write: the KV pool must be float32, bfloat16 or fp8");
    KvWriteCudaParams p;
    p.num_tokens = num_tokens;
    p.kv_lora_rank = width - R;
    p.rope_dim = R;
    p.src_dtype = cdt(lat.dtype);
    p.c = lat.data;
    p.ld_c = static_cast<int>(ld);
    p.k_pe = static_cast<const char*>(lat.data) + (width - R) * dtype_size(lat.dtype);
    p.ld_k_pe = static_cast<int>(ld);
    p.slots = static_cast<const int64_t*>(slots.data);
    p.pool = static_cast<float*>(pool.data);
    ck(kv_write_cuda(p, stream_), "kv_write");
  }
  void mla_plan(int num_heads, int kv_lora_rank, int rope_dim, int max_batch,
                DType kv_dtype) override {
    plan_for(num_heads, kv_lora_rank, rope_dim, max_batch, kv_dtype);
  }
  void mla_decode(const MlaDecodeArgs& a) override {
    OpScope ts(timer_, stream_, "mla_decode");
    if (a.batch == 0) return;
    if (a.pool.dtype == DType::BF16 || a.pool.dtype == DType::F8E4M3) {
      HELIX_CHECK(a.q.dtype == DType::BF16, "bf16/FP8 MLA decode: q must be bf16");
      MlaDecodeBf16Params p;
      p.batch = a.batch;
      p.block_size = a.block_size;
      p.max_blocks_per_seq = a.max_blocks_per_seq;
      p.scale = a.scale;
      p.q = a.q.data;
      p.kv_pool = a.pool.data;
      p.block_table = a.block_table.i32();
      p.seq_lens = a.seq_lens.i32();
      p.out = a.out.data;
      p.out_dtype = a.out.dtype == DType::BF16 ? MlaOutDtype::kBf16 : MlaOutDtype::kFloat32;
      p.lse = a.lse.f32();
      const MlaPlan& plan =
          plan_for(a.num_heads, a.kv_lora_rank, a.rope_dim, a.batch, a.pool.dtype);
      ck(mla_decode_bf16_cuda(p, plan, stream_), "mla_decode (bf16/fp8)");
      return;
    }
    HELIX_CHECK(a.q.dtype == DType::F32 && a.pool.dtype == DType::F32,
                "the CUDA MLA decode kernel reads a float32, bfloat16 or fp8 pool");
    MlaDecodeCudaParams p;
    p.batch = a.batch;
    p.num_heads = a.num_heads;
    p.kv_lora_rank = a.kv_lora_rank;
    p.rope_dim = a.rope_dim;
    p.block_size = a.block_size;
    p.max_blocks_per_seq = a.max_blocks_per_seq;
    p.max_seq_len = a.max_seq_len;
    p.scale = a.scale;
    p.q = a.q.f32();
    p.kv_pool = a.pool.f32();
    p.block_table = a.block_table.i32();
    p.seq_lens = a.seq_lens.i32();
    p.out = a.out.f32();
    p.lse = a.lse.f32();
    ck(mla_decode_cuda(p, stream_), "mla_decode");
  }
  void attn_combine(const TensorView& parts, const TensorView& lse, const TensorView& out,
                    const TensorView& out_lse, int num_parts, int rows, int dim) override {
    OpScope ts(timer_, stream_, "attn_combine");
    ck(attn_combine_cuda(parts.f32(), lse.f32(), out.f32(), out_lse.data ? out_lse.f32() : nullptr,
                         num_parts, rows, dim, stream_),
       "attn_combine");
  }
  void moe_route(const MoeRouteArgs& a) override {
    OpScope ts(timer_, stream_, "moe_route");
    MoeRouteCudaParams p;
    p.num_tokens = a.num_tokens;
    p.num_experts = a.num_experts;
    p.top_k = a.top_k;
    p.n_group = a.n_group;
    p.topk_group = a.topk_group;
    p.norm_topk_prob = a.norm_topk_prob;
    p.routed_scaling_factor = a.routed_scaling_factor;
    p.logits_dtype = cdt(a.logits.dtype);
    p.logits = a.logits.data;
    p.bias = a.bias;
    p.expert_ids = a.expert_ids.i32();
    p.weights = a.weights.f32();
    if (a.num_tokens > 0) ck(moe_route_cuda(p, stream_), "moe_route");
  }
  void silu_mul(const TensorView& gu, const TensorView& out, int rows, int dim) override {
    OpScope ts(timer_, stream_, "silu_mul");
    SiluMulCudaParams p;
    p.rows = rows;
    p.dim = dim;
    p.dtype = cdt(gu.dtype);
    p.gate = gu.data;
    p.ld_gate = 2 * dim;
    p.up = static_cast<const char*>(gu.data) + dim * dtype_size(gu.dtype);
    p.ld_up = 2 * dim;
    p.out = out.data;
    p.ld_out = dim;
    ck(silu_mul_cuda(p, stream_), "silu_mul");
  }
  void scatter_add_rows(const TensorView& out, const TensorView& y, const int* src_host,
                        const int* dst_host, const float* w_host, int n, int dim) override {
    if (n == 0) return;
    // Group the entries by destination row, keeping their order within a row.
    std::map<int, std::vector<int>> by_dst;
    for (int i = 0; i < n; ++i) by_dst[dst_host[i]].push_back(i);
    std::vector<int32_t> offsets{0}, dst, src;
    std::vector<float> w;
    for (const auto& [d, entries] : by_dst) {
      dst.push_back(d);
      for (int i : entries) {
        src.push_back(src_host[i]);
        w.push_back(w_host[i]);
      }
      offsets.push_back(static_cast<int32_t>(src.size()));
    }
    const int g = static_cast<int>(dst.size());
    DTensor od = upload_raw(offsets.data(), {g + 1}, DType::I32);
    DTensor dd = upload_raw(dst.data(), {g}, DType::I32);
    DTensor sd = upload_raw(src.data(), {n}, DType::I32);
    DTensor wd = upload_raw(w.data(), {n}, DType::F32);
    ck(scatter_add_rows_cuda(out.data, y.data, out.dtype == DType::BF16, od.view().i32(),
                             dd.view().i32(), sd.view().i32(), wd.f32(), g, dim, stream_),
       "scatter_add_rows");
  }
  void argmax(const TensorView& x, int rows, int n, int* out_host) override {
    OpScope ts(timer_, stream_, "argmax");
    DTensor o = alloc({rows}, DType::I32);
    ArgmaxCudaParams p;
    p.rows = rows;
    p.n = n;
    p.dtype = cdt(x.dtype);
    p.x = x.data;
    p.out = o.view().i32();
    ck(argmax_cuda(p, stream_), "argmax");
    to_host_raw(o.view(), out_host);
  }
  void sample(const TensorView& logits, const TensorView& params, const TensorView& out, int rows,
              int vocab) override {
    SampleCudaParams p;
    p.rows = rows;
    p.vocab = vocab;
    p.dtype = cdt(logits.dtype);
    p.logits = logits.data;
    p.params = static_cast<const SampleRow*>(params.data);
    p.out = out.i32();
    ck(sample_cuda(p, stream_), "sample");
  }
  void attn_prefill(const AttnPrefillArgs& a) override {
    AttnPrefillCudaParams p;
    p.num_tokens = a.num_tokens;
    p.num_heads = a.num_heads;
    p.qk_dim = a.qk_dim;
    p.v_dim = a.v_dim;
    p.scale = a.scale;
    p.dtype = cdt(a.q.dtype);
    p.q = a.q.data;
    p.k = a.k.data;
    p.v = a.v.data;
    p.out = a.out.data;
    ck(attn_prefill_cuda(p, stream_), "attn_prefill");
  }

  void moe_experts(const MoeExpertsArgs& a) override {
    cudaops::moe_experts(*this, algo_, timer_, a, stream_);
  }

  bool supports_graphs() const override { return true; }
  void graph_begin() override {
    timer_.set_capturing(true);
    ck(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "graph capture");
  }
  std::shared_ptr<void> graph_end() override {
    cudaGraph_t g = nullptr;
    ck(cudaStreamEndCapture(stream_, &g), "graph capture");
    timer_.set_capturing(false);
    cudaGraphExec_t exec = nullptr;
    cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    ck(e, "graph instantiate");
    return std::shared_ptr<void>(
        exec, [](void* p) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(p)); });
  }
  void graph_launch(const std::shared_ptr<void>& g) override {
    // Timed as one op per graph (its device time, without the host side of the step), named by
    // the order graphs were first replayed: with bench_model_decode, one per (batch, context).
    std::string name;
    if (timer_.on()) {
      auto it = graph_ids_.find(g.get());
      if (it == graph_ids_.end()) it = graph_ids_.emplace(g.get(), graph_ids_.size()).first;
      name = "graph replay #" + std::to_string(it->second);
    }
    OpScope ts(timer_, stream_, name);
    ck(cudaGraphLaunch(static_cast<cudaGraphExec_t>(g.get()), stream_), "graph launch");
  }

  cudaStream_t stream() const { return stream_; }

 private:
  // Split-KV plan per (heads, L, R, pool dtype), made once and again only when a larger batch
  // comes.
  const MlaPlan& plan_for(int heads, int L, int R, int batch, DType kv_dtype) {
    const bool fp8 = kv_dtype == DType::F8E4M3;
    const int64_t key = ((static_cast<int64_t>(heads) * 4096 + L) * 4096 + R) * 2 + (fp8 ? 1 : 0);
    auto it = plans_.find(key);
    if (it != plans_.end() && it->second.desc.max_batch >= batch) return it->second;
    int max_batch = 64;
    if (it != plans_.end()) {
      max_batch = std::max(batch, 2 * it->second.desc.max_batch);
      ck(cudaStreamSynchronize(stream_), "re-plan");
      mla_plan_release(&it->second);
      plans_.erase(it);
    }
    MlaPlanDesc d;
    d.num_heads = heads;
    d.kv_lora_rank = L;
    d.rope_dim = R;
    d.max_batch = std::max(max_batch, batch);
    d.kv_dtype = fp8 ? MlaKvDtype::kFp8E4m3 : MlaKvDtype::kBf16;
    MlaPlan plan;
    ck(helix::mla_plan(d, &plan), "mla_plan");
    return plans_[key] = plan;
  }
  std::map<int64_t, MlaPlan> plans_;

  int index_ = 0;
  DType act_;
  GemmAlgo algo_ = GemmAlgo::kAuto;
  OpTimer timer_;
  std::map<const void*, size_t> graph_ids_;
  cudaStream_t stream_ = nullptr;
  CudaOpsContext ctx_;
};

}  // namespace

std::unique_ptr<Ops> make_cuda_ops(int index, DType act) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    fail("--device cuda: no CUDA GPU is visible");
  HELIX_CHECK(index >= 0 && index < n, "--device cuda:{}: only {} GPU(s) visible", index, n);
  return std::make_unique<CudaOps>(index, act);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

}  // namespace helix
