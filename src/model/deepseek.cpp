#include "model/deepseek.h"

#include <chrono>
#include <cstdio>
#include <cstring>

#include <unistd.h>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/finite.h"
#include "model/helix_combine.h"
#include "ops/ops.h"

namespace helix {

namespace {

void expect_shape(const WeightStore& ws, const std::string& name, std::vector<int64_t> shape) {
  const auto& v = ws.view(name);
  if (v.shape != shape)
    fail("tensor '{}' has shape {}, expected {} from config.json", name, shape_str(v.shape),
         shape_str(shape));
}

Tensor load_rows_checked(const WeightStore& ws, const std::string& name,
                         std::vector<int64_t> full_shape, int64_t r0, int64_t r1) {
  expect_shape(ws, name, full_shape);
  return ws.load_rows(name, r0, r1);
}

// Columns [c0, c1) of a 2-D tensor.
Tensor slice_cols(const Tensor& t, int64_t c0, int64_t c1) {
  const int64_t rows = t.dim(0), cols = t.dim(1);
  Tensor out({rows, c1 - c0});
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.ptr() + r * (c1 - c0), t.ptr() + r * cols + c0,
                static_cast<size_t>(c1 - c0) * sizeof(float));
  return out;
}

// Stacks gate rows and up rows into one [2 * rows, in] matrix: one GEMM computes both.
Tensor stack_rows(const Tensor& a, const Tensor& b) {
  Tensor out({a.dim(0) + b.dim(0), a.dim(1)});
  std::memcpy(out.ptr(), a.ptr(), a.data.size() * sizeof(float));
  std::memcpy(out.ptr() + a.numel(), b.ptr(), b.data.size() * sizeof(float));
  return out;
}

}  // namespace

DeepseekModel::DeepseekModel(const ModelConfig& cfg, const WeightStore& ws, const Mapping& map,
                             Communicator& world, int tokens_per_block, int kv_blocks,
                             const ModelOptions& opt)
    : cfg_(cfg), map_(map), world_(world), opt_(opt), ws_(ws) {
  ops_ = opt.ops ? opt.ops : std::shared_ptr<Ops>(make_cpu_ops());
  // The GPU path is single-GPU for now: the collectives below run on host buffers.
  HELIX_CHECK(ops_->device().is_cpu() || map.world_size == 1,
              "--device cuda runs one GPU: --tp, --cp and --ep must be 1 (got {})", map.str());
  HELIX_CHECK(world.size() == map.world_size && world.rank() == map.rank,
              "communicator (rank {} of {}) does not match the mapping ({})", world.rank(),
              world.size(), map.str());
  map_.validate(cfg.num_attention_heads, cfg.n_routed_experts);
  // Ranks of one CP group share the TP rank; the CP all-to-all runs inside it.
  cp_comm_ = world.split(map.dp_rank() * map.tp + map.tp_rank(), map.cp_rank());
  attn_comm_ = world.split(map.dp_rank(), map.rank);
  attn_data_ = std::make_unique<HostDataComm>(*attn_comm_);
  world_data_ = std::make_unique<HostDataComm>(world);
  hl_ = cfg.num_attention_heads / map.tp;
  std::tie(ho_begin_, ho_end_) = split_range(hl_, map.cp, map.cp_rank());
  rope_.inv_freq = cfg.rope_inv_freq();
  rope_.mult = cfg.rope_attention_factor();
  rope_.interleave = cfg.rope_interleave;
  if (!ops_->device().is_cpu()) {
    Tensor f({static_cast<int64_t>(rope_.inv_freq.size())});
    for (size_t i = 0; i < rope_.inv_freq.size(); ++i)
      f.data[i] = static_cast<float>(rope_.inv_freq[i]);
    rope_.inv_freq_dev = ops_->upload(std::move(f), DType::F32);
  }
  scale_ = static_cast<float>(cfg.softmax_scale());
  loading_ = true;
  load_weights(ws);
  loading_ = false;
  if (loaded_bytes_ > 0 && map_.rank == 0 && isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  stats_.expert_tokens.assign(cfg.num_hidden_layers,
                              std::vector<int64_t>(std::max(cfg.n_routed_experts, 0), 0));
  stats_.dispatch_sent = stats_.dispatch_recv = stats_.expert_tokens;
  moe_index_.assign(cfg.num_hidden_layers, -1);
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.is_moe_layer(l)) {
      moe_index_[l] = static_cast<int>(moe_layers_.size());
      moe_layers_.push_back(l);
    }
  // Identity placement (slot s = expert s) until an EPLB placement is installed.
  if (map.moe_ep && cfg.n_routed_experts > 0) {
    Placement id;
    id.num_slots = id.num_experts = cfg.n_routed_experts;
    id.num_ranks = map.ffn_size();
    for (int e = 0; e < cfg.n_routed_experts; ++e) id.slot_to_expert.push_back(e);
    for (size_t i = 0; i < moe_layers_.size(); ++i) {
      placement_.push_back(id);
      routers_.emplace_back(id);
    }
  }
  KvCacheConfig kc;
  kc.num_layers = cfg.num_hidden_layers;
  kc.row_width = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
  kc.tokens_per_block = tokens_per_block;
  kc.max_blocks = kv_blocks;
  kc.cp_size = map.cp;
  kc.cp_rank = map.cp_rank();
  // FP8 rows (e4m3 latent, bf16 rope part, fp32 scale): kv_fp8_row_bytes bytes per token.
  const bool fp8 = opt.kv_dtype == DType::F8E4M3;
  if (fp8)
    kc.row_stride = static_cast<int>(kv_fp8_row_bytes(cfg.kv_lora_rank, cfg.qk_rope_head_dim));
  if (opt.kv_memory_fraction > 0 && !ops_->device().is_cpu()) {
    // The fraction sizes the pool by its row bytes (the engine's admission then counts these
    // blocks): an FP8 pool holds 2 (L + R) / kv_fp8_row_bytes (1.76 at 512/64) as many tokens
    // as a bf16 one.
    const double block_bytes = static_cast<double>(kc.num_layers) * kc.tokens_per_block *
                               kc.stride() * dtype_size(opt.kv_dtype);
    const double free = static_cast<double>(ops_->free_bytes());
    kc.max_blocks = static_cast<int>(std::min(1e9, free * opt.kv_memory_fraction / block_bytes));
    HELIX_CHECK(kc.max_blocks >= 1,
                "--gpu-memory-fraction {} of the {:.1f} GiB free leaves no room for one KV block "
                "({:.0f} bytes)",
                opt.kv_memory_fraction, free / 1073741824.0, block_bytes);
  }
  DTensor pool;
  if (!ops_->device().is_cpu() || fp8) {
    try {
      pool = ops_->alloc({kc.num_layers, kc.max_blocks, kc.tokens_per_block, kc.stride()},
                         opt.kv_dtype);
    } catch (const std::bad_alloc&) {
      fail("cannot allocate the {} KV cache: {} blocks x {} layers x {} tokens x {} x {} bytes",
           dtype_name(opt.kv_dtype), kc.max_blocks, kc.num_layers, kc.tokens_per_block, kc.stride(),
           dtype_size(opt.kv_dtype));
    }
  }
  kv_ = std::make_unique<KvCache>(kc, std::move(pool));
}

void DeepseekModel::note_loaded(uint64_t bytes) const {
  static const bool tty = isatty(STDERR_FILENO);
  if (loaded_bytes_ == 0) load_t0_ = Clock::now();
  loaded_bytes_ += bytes;
  if (tty && loading_ && map_.rank == 0) {
    const double s = std::max(1e-3, ms_since(load_t0_) / 1000.0);
    std::fprintf(stderr, "\rloading weights: %.0f MB, %.0f MB/s   ", loaded_bytes_ / 1e6,
                 loaded_bytes_ / 1e6 / s);
  }
}

DTensor DeepseekModel::up(Tensor&& t) const {
  note_loaded(static_cast<uint64_t>(t.numel()) * sizeof(float));
  if (opt_.round_weights_bf16)  // the experiment's bf16 weights in fp32 arithmetic
    for (float& v : t.data) v = bf16_to_float(bf16_from_float(v));
  return ops_->upload(std::move(t), opt_.weight_dtype);
}

bool DeepseekModel::keep_fp8(const WeightStore& ws, const std::string& name) const {
  return !ops_->device().is_cpu() && opt_.weight_dtype == DType::BF16 && map_.world_size == 1 &&
         ws.has(name) && ws.view(name).dtype == StDType::F8_E4M3 && ws.has(name + "_scale_inv") &&
         ws.view(name).shape.size() == 2;
}

DTensor DeepseekModel::fp8_checked(const WeightStore& ws, const std::string& name,
                                   std::vector<int64_t> shape) const {
  expect_shape(ws, name, std::move(shape));
  return fp8_weight(ws, {name});
}

DTensor DeepseekModel::fp8_weight(const WeightStore& ws,
                                  const std::vector<std::string>& names) const {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  int64_t rows = 0, cols = 0, srows = 0, scols = 0;
  for (const auto& n : names) {
    const StView& v = ws.view(n);
    HELIX_CHECK(rows % 128 == 0, "FP8 weight '{}': stacked rows must align to 128-row blocks", n);
    cols = v.shape[1];
    rows += v.shape[0];
    bytes.insert(bytes.end(), v.data, v.data + v.nbytes);
    Tensor s = ws.load(n + "_scale_inv");
    scols = s.dim(1);
    srows += s.dim(0);
    scales.insert(scales.end(), s.data.begin(), s.data.end());
  }
  DTensor w = ops_->upload_raw(bytes.data(), {rows, cols}, DType::F8E4M3);
  Tensor st({srows, scols});
  st.data = std::move(scales);
  DTensor sc = ops_->upload(std::move(st), DType::F32);
  ops_->sync();  // the staging vectors go out of scope
  note_loaded(bytes.size());
  return w.with_scale(std::move(sc));
}

bool DeepseekModel::keep_bf16(const WeightStore& ws, const std::vector<NamedShape>& parts) const {
  if (ops_->device().is_cpu() || opt_.weight_dtype != DType::BF16 || map_.world_size != 1)
    return false;
  for (const auto& [name, shape] : parts)
    if (!ws.has(name) || ws.view(name).dtype != StDType::BF16 || shape.size() != 2) return false;
  return true;
}

DTensor DeepseekModel::bf16_weight(const WeightStore& ws,
                                   const std::vector<NamedShape>& parts) const {
  int64_t rows = 0;
  const int64_t cols = parts[0].second[1];
  for (const auto& [name, shape] : parts) {
    expect_shape(ws, name, shape);
    HELIX_CHECK(shape[1] == cols, "bf16 weight '{}': stacked parts differ in width", name);
    rows += shape[0];
  }
  DTensor w;
  if (parts.size() == 1) {
    w = ops_->upload_raw(ws.view(parts[0].first).data, {rows, cols}, DType::BF16);
  } else {
    std::vector<uint8_t> bytes;
    bytes.reserve(static_cast<size_t>(rows * cols) * 2);
    for (const auto& p : parts) {
      const StView& v = ws.view(p.first);
      bytes.insert(bytes.end(), v.data, v.data + v.nbytes);
    }
    w = ops_->upload_raw(bytes.data(), {rows, cols}, DType::BF16);
  }
  ops_->sync();  // the staging vector goes out of scope
  note_loaded(static_cast<uint64_t>(rows * cols) * 2);
  return w;
}

void DeepseekModel::load_weights(const WeightStore& ws) {
  const ModelConfig& c = cfg_;
  const int64_t H = c.num_attention_heads, D = c.hidden_size, L = c.kv_lora_rank,
                R = c.qk_rope_head_dim, NOPE = c.qk_nope_head_dim, V = c.v_head_dim,
                QK = c.qk_head_dim();
  const int N = map_.ffn_size(), r = map_.ffn_rank();
  const int64_t h0 = static_cast<int64_t>(map_.tp_rank()) * hl_;  // first global head of my group

  const std::vector<NamedShape> embed_w = {{"model.embed_tokens.weight", {c.vocab_size, D}}};
  embed = keep_bf16(ws, embed_w) ? bf16_weight(ws, embed_w)
                                 : up(ws.load("model.embed_tokens.weight", {c.vocab_size, D}));
  norm = up(ws.load("model.norm.weight", {D}));
  if (opt_.lm_head_f32 && (ws.has("lm_head.weight") || c.tie_word_embeddings)) {
    lm_head = ops_->upload(
        ws.load(ws.has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight",
                {c.vocab_size, D}),
        DType::F32);
  } else if (ws.has("lm_head.weight")) {
    const std::vector<NamedShape> w = {{"lm_head.weight", {c.vocab_size, D}}};
    lm_head =
        keep_bf16(ws, w) ? bf16_weight(ws, w) : up(ws.load("lm_head.weight", {c.vocab_size, D}));
  } else if (c.tie_word_embeddings) {
    lm_head = embed;
  } else {
    fail("missing tensor 'lm_head.weight' (and tie_word_embeddings is false)");
  }

  auto load_mlp = [&](const std::string& p, int64_t inter, int part, int parts) {
    auto [a, b] = split_range(static_cast<int>(inter), parts, part);
    MlpWeights m;
    m.inter = b - a;
    if (keep_fp8(ws, p + "gate_proj.weight") && inter % 128 == 0) {
      expect_shape(ws, p + "gate_proj.weight", {inter, D});
      expect_shape(ws, p + "up_proj.weight", {inter, D});
      expect_shape(ws, p + "down_proj.weight", {D, inter});
      m.gate_up = fp8_weight(ws, {p + "gate_proj.weight", p + "up_proj.weight"});
      m.down = fp8_weight(ws, {p + "down_proj.weight"});
      return m;
    }
    const std::vector<NamedShape> gu = {{p + "gate_proj.weight", {inter, D}},
                                        {p + "up_proj.weight", {inter, D}}},
                                  dn = {{p + "down_proj.weight", {D, inter}}};
    if (parts == 1 && keep_bf16(ws, gu) && keep_bf16(ws, dn)) {
      m.gate_up = bf16_weight(ws, gu);
      m.down = bf16_weight(ws, dn);
      return m;
    }
    Tensor g = load_rows_checked(ws, p + "gate_proj.weight", {inter, D}, a, b);
    Tensor u = load_rows_checked(ws, p + "up_proj.weight", {inter, D}, a, b);
    m.gate_up = up(stack_rows(g, u));
    Tensor d = ws.load(p + "down_proj.weight", {D, inter});
    m.down = up(slice_cols(d, a, b));
    return m;
  };

  layers_.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& lw = layers_[i];
    lw.input_norm = up(ws.load(p + "input_layernorm.weight", {D}));
    lw.post_norm = up(ws.load(p + "post_attention_layernorm.weight", {D}));
    AttnWeights& a = lw.attn;
    const std::string ap = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      a.q_a = keep_fp8(ws, ap + "q_a_proj.weight")
                  ? fp8_checked(ws, ap + "q_a_proj.weight", {c.q_lora_rank, D})
                  : up(ws.load(ap + "q_a_proj.weight", {c.q_lora_rank, D}));
      if (c.attention_bias) a.q_a_bias = up(ws.load(ap + "q_a_proj.bias", {c.q_lora_rank}));
      a.q_a_norm = up(ws.load(ap + "q_a_layernorm.weight", {c.q_lora_rank}));
      a.q_b = keep_fp8(ws, ap + "q_b_proj.weight")
                  ? fp8_checked(ws, ap + "q_b_proj.weight", {H * QK, c.q_lora_rank})
                  : up(load_rows_checked(ws, ap + "q_b_proj.weight", {H * QK, c.q_lora_rank},
                                         h0 * QK, (h0 + hl_) * QK));
    } else {
      a.q_proj = keep_fp8(ws, ap + "q_proj.weight")
                     ? fp8_checked(ws, ap + "q_proj.weight", {H * QK, D})
                     : up(load_rows_checked(ws, ap + "q_proj.weight", {H * QK, D}, h0 * QK,
                                            (h0 + hl_) * QK));
    }
    a.kv_a = keep_fp8(ws, ap + "kv_a_proj_with_mqa.weight")
                 ? fp8_checked(ws, ap + "kv_a_proj_with_mqa.weight", {L + R, D})
                 : up(ws.load(ap + "kv_a_proj_with_mqa.weight", {L + R, D}));
    if (c.attention_bias) a.kv_a_bias = up(ws.load(ap + "kv_a_proj_with_mqa.bias", {L + R}));
    a.kv_a_norm = up(ws.load(ap + "kv_a_layernorm.weight", {L}));
    Tensor kvb = load_rows_checked(ws, ap + "kv_b_proj.weight", {H * (NOPE + V), L},
                                   h0 * (NOPE + V), (h0 + hl_) * (NOPE + V));
    Tensor w_uk({hl_, NOPE, L}), w_uv({hl_, V, L});
    for (int h = 0; h < hl_; ++h) {
      const float* src = kvb.ptr() + h * (NOPE + V) * L;
      std::memcpy(w_uk.ptr() + h * NOPE * L, src, NOPE * L * sizeof(float));
      std::memcpy(w_uv.ptr() + h * V * L, src + NOPE * L, V * L * sizeof(float));
    }
    a.w_uk = up(std::move(w_uk));
    a.w_uv = up(std::move(w_uv));
    if (keep_fp8(ws, ap + "o_proj.weight")) {
      a.o_proj = fp8_checked(ws, ap + "o_proj.weight", {D, H * V});
    } else {
      Tensor o = ws.load(ap + "o_proj.weight", {D, H * V});
      a.o_proj = up(slice_cols(o, (h0 + ho_begin_) * V, (h0 + ho_end_) * V));
    }
    if (c.attention_bias && map_.rank == 0) a.o_bias = up(ws.load(ap + "o_proj.bias", {D}));

    lw.moe = c.is_moe_layer(i);
    const std::string mp = p + "mlp.";
    if (!lw.moe) {
      lw.dense = load_mlp(mp, c.intermediate_size, r, N);
      continue;
    }
    const int64_t E = c.n_routed_experts, IE = c.moe_intermediate_size;
    // The router and its bias stay fp32 in every mode (routing decisions are discrete).
    lw.router = ops_->upload(ws.load(mp + "gate.weight", {E, D}), DType::F32);
    lw.router_bias = ops_->upload(ws.has(mp + "gate.e_score_correction_bias")
                                      ? ws.load(mp + "gate.e_score_correction_bias", {E})
                                      : Tensor({E}, 0.0f),
                                  DType::F32);
    if (c.n_shared_experts > 0)
      lw.shared = load_mlp(mp + "shared_experts.", IE * c.n_shared_experts, r, N);
    // TP: every expert, sharded. EP: one whole expert per slot of this rank (identity
    // placement, slot s = expert s, until an EPLB placement is installed).
    if (map_.moe_ep) {
      auto [e0, e1] = split_range(static_cast<int>(E), N, r);
      lw.expert_begin = e0;
      for (int e = e0; e < e1; ++e) lw.experts.push_back(load_expert(ws, i, e, true));
    } else {
      for (int e = 0; e < E; ++e) lw.experts.push_back(load_expert(ws, i, e, false));
    }
    if (!ops_->device().is_cpu()) {
      std::vector<int64_t> gu, dn;
      for (const MlpWeights& m : lw.experts) {
        gu.push_back(reinterpret_cast<int64_t>(m.gate_up.view().data));
        dn.push_back(reinterpret_cast<int64_t>(m.down.view().data));
        lw.gate_up_list.push_back(m.gate_up);
        lw.down_list.push_back(m.down);
      }
      lw.gate_up_ptrs = ops_->upload_raw(gu.data(), {E}, DType::I64);
      lw.down_ptrs = ops_->upload_raw(dn.data(), {E}, DType::I64);
      if (!lw.experts.empty() && lw.experts[0].gate_up.scale()) {
        std::vector<int64_t> gs, ds;
        for (const MlpWeights& m : lw.experts) {
          gs.push_back(reinterpret_cast<int64_t>(m.gate_up.scale()->view().data));
          ds.push_back(reinterpret_cast<int64_t>(m.down.scale()->view().data));
        }
        lw.gate_up_scale_ptrs = ops_->upload_raw(gs.data(), {E}, DType::I64);
        lw.down_scale_ptrs = ops_->upload_raw(ds.data(), {E}, DType::I64);
      }
    }
  }
}

MlpWeights DeepseekModel::load_expert(const WeightStore& ws, int layer, int e, bool whole) const {
  const int64_t D = cfg_.hidden_size, IE = cfg_.moe_intermediate_size, E = cfg_.n_routed_experts;
  const int N = map_.ffn_size(), r = map_.ffn_rank();
  auto [a0, a1] = whole ? std::pair<int, int>{0, static_cast<int>(IE)}
                        : split_range(static_cast<int>(IE), N, r);
  const std::string mp = fmt::format("model.layers.{}.mlp.", layer);
  MlpWeights m;
  m.inter = a1 - a0;
  if (!ws.has(mp + "experts.gate_up_proj")) {  // per-expert tensors, as checkpoints store them
    const std::string ep = fmt::format("{}experts.{}.", mp, e);
    if (keep_fp8(ws, ep + "gate_proj.weight") && IE % 128 == 0) {
      expect_shape(ws, ep + "gate_proj.weight", {IE, D});
      expect_shape(ws, ep + "up_proj.weight", {IE, D});
      expect_shape(ws, ep + "down_proj.weight", {D, IE});
      m.gate_up = fp8_weight(ws, {ep + "gate_proj.weight", ep + "up_proj.weight"});
      m.down = fp8_weight(ws, {ep + "down_proj.weight"});
      return m;
    }
    const std::vector<NamedShape> gu = {{ep + "gate_proj.weight", {IE, D}},
                                        {ep + "up_proj.weight", {IE, D}}},
                                  dn = {{ep + "down_proj.weight", {D, IE}}};
    if (a0 == 0 && a1 == IE && keep_bf16(ws, gu) && keep_bf16(ws, dn)) {
      m.gate_up = bf16_weight(ws, gu);
      m.down = bf16_weight(ws, dn);
      return m;
    }
    Tensor g = load_rows_checked(ws, ep + "gate_proj.weight", {IE, D}, a0, a1);
    Tensor u = load_rows_checked(ws, ep + "up_proj.weight", {IE, D}, a0, a1);
    m.gate_up = up(stack_rows(g, u));
    m.down = up(slice_cols(ws.load(ep + "down_proj.weight", {D, IE}), a0, a1));
    return m;
  }
  // Fused 3-D tensors (transformers' in-memory layout): gate_up [E, 2*IE, D], down [E, D, IE].
  expect_shape(ws, mp + "experts.gate_up_proj", {E, 2 * IE, D});
  expect_shape(ws, mp + "experts.down_proj", {E, D, IE});
  Tensor gu = ws.load_rows(mp + "experts.gate_up_proj", e, e + 1);
  Tensor dn = ws.load_rows(mp + "experts.down_proj", e, e + 1);
  Tensor gate_up({2 * m.inter, D});
  std::memcpy(gate_up.ptr(), gu.ptr() + a0 * D, m.inter * D * sizeof(float));
  std::memcpy(gate_up.ptr() + m.inter * D, gu.ptr() + (IE + a0) * D, m.inter * D * sizeof(float));
  m.gate_up = up(std::move(gate_up));
  dn.shape = {D, IE};
  m.down = up(slice_cols(dn, a0, a1));
  return m;
}

void DeepseekModel::linear(const TensorView& x, int64_t ldx, const DTensor& w, const TensorView& y,
                           int64_t ldy, int m, int n, int k, bool accumulate) {
  GemmArgs g;
  g.x = x;
  g.w = w.view();
  g.y = y;
  g.m = m;
  g.n = n;
  g.k = k;
  g.ldx = ldx;
  g.ldy = ldy;
  g.beta = accumulate ? 1.0f : 0.0f;
  g.w_scale = w.scale() ? w.scale()->f32() : nullptr;
  ops_->gemm(g);
}

DeepseekModel::~DeepseekModel() {
  if (worker_.joinable()) worker_.join();
  hopb_worker_.reset();  // before cp_comm_ goes
}

void DeepseekModel::set_hopb(bool on) {
  if (on && map_.cp > 1 && cp_comm_->supports_worker_thread()) {
    if (!hopb_worker_) hopb_worker_ = std::make_unique<CommWorker>();
  } else {
    hopb_worker_.reset();
  }
}

void DeepseekModel::eplb_install(const std::vector<Placement>& per_moe_layer) {
  HELIX_CHECK(map_.moe_ep, "an expert placement needs expert parallelism (--ep)");
  HELIX_CHECK(per_moe_layer.size() == moe_layers_.size(),
              "placement has {} layers but the model has {} MoE layers", per_moe_layer.size(),
              moe_layers_.size());
  HELIX_CHECK(!pending_, "cannot install a placement while an update is pending");
  for (size_t i = 0; i < per_moe_layer.size(); ++i) {
    const Placement& p = per_moe_layer[i];
    placement_validate(p, fmt::format("placement of MoE layer {}", i));
    HELIX_CHECK(p.num_ranks == map_.ffn_size(),
                "placement is for {} ranks but the FFN group has {}", p.num_ranks, map_.ffn_size());
    HELIX_CHECK(p.num_experts == cfg_.n_routed_experts,
                "placement is for {} experts but the model has {}", p.num_experts,
                cfg_.n_routed_experts);
    LayerWeights& lw = layers_[moe_layers_[i]];
    const int sp = p.slots_per_rank(), s0 = map_.ffn_rank() * sp;
    std::vector<MlpWeights> slots;
    for (int s = s0; s < s0 + sp; ++s)
      slots.push_back(load_expert(ws_, moe_layers_[i], p.slot_to_expert[s], true));
    lw.experts = std::move(slots);
    lw.expert_begin = s0;
    placement_[i] = p;
    routers_[i] = EplbRouter(p);
  }
}

bool DeepseekModel::eplb_start_update(const LoadMatrix& estimate) {
  if (pending_) return false;
  HELIX_CHECK(estimate.size() == moe_layers_.size(), "EPLB estimate has {} layers, expected {}",
              estimate.size(), moe_layers_.size());
  pending_ = true;
  next_applied_ = 0;
  worker_done_ = false;
  // The planner is deterministic and every rank holds the same estimate (all-reduced), so all
  // ranks compute the same placements without talking.
  worker_ = std::thread([this, estimate]() {
    // An exception must not escape the thread (std::terminate): keep it for eplb_apply.
    try {
      std::vector<Placement> next(moe_layers_.size());
      std::vector<std::vector<MlpWeights>> slots(moe_layers_.size());
      std::vector<EplbUpdate> ups(moe_layers_.size());
      const int64_t expert_bytes = int64_t(3) * cfg_.moe_intermediate_size * cfg_.hidden_size * 4;
      for (size_t i = 0; i < moe_layers_.size(); ++i) {
        const Placement& cur = placement_[i];
        next[i] = eplb_plan_layer(estimate[i], cur.num_slots, cur.num_ranks, {}, &cur);
        ups[i].layer = moe_layers_[i];
        ups[i].before = placement_balance(cur, estimate[i]).max_over_mean();
        ups[i].after = placement_balance(next[i], estimate[i]).max_over_mean();
        ups[i].slots_moved = slots_moved(cur, next[i]);
        const LayerWeights& lw = layers_[moe_layers_[i]];
        const int sp = cur.slots_per_rank(), s0 = map_.ffn_rank() * sp;
        for (int s = s0; s < s0 + sp; ++s) {
          if (next[i].slot_to_expert[s] == cur.slot_to_expert[s]) {
            slots[i].push_back(lw.experts[s - s0]);  // unchanged: a copy, read-only
          } else {
            slots[i].push_back(load_expert(ws_, moe_layers_[i], next[i].slot_to_expert[s], true));
            ups[i].bytes_moved += expert_bytes;
          }
        }
      }
      next_placement_ = std::move(next);
      next_slots_ = std::move(slots);
      next_updates_ = std::move(ups);
    } catch (...) {
      worker_error_ = std::current_exception();
    }
    worker_done_ = true;
  });
  return true;
}

int DeepseekModel::eplb_apply(int max_layers, double* waited_ms) {
  if (!pending_) return 0;
  if (!worker_done_) {
    auto t0 = Clock::now();
    worker_.join();
    if (waited_ms) *waited_ms += ms_since(t0);
  } else if (worker_.joinable()) {
    worker_.join();
  }
  if (worker_error_) {
    pending_ = false;
    std::rethrow_exception(std::exchange(worker_error_, nullptr));
  }
  int applied = 0;
  while (next_applied_ < moe_layers_.size() && applied < max_layers) {
    const size_t i = next_applied_++;
    LayerWeights& lw = layers_[moe_layers_[i]];
    lw.experts = std::move(next_slots_[i]);
    lw.expert_begin = map_.ffn_rank() * next_placement_[i].slots_per_rank();
    placement_[i] = next_placement_[i];
    routers_[i] = EplbRouter(placement_[i]);
    next_updates_[i].step = step_;
    updates_.push_back(next_updates_[i]);
    ++applied;
  }
  if (next_applied_ == moe_layers_.size()) pending_ = false;
  return applied;
}

}  // namespace helix
