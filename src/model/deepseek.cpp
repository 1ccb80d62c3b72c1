#include "model/deepseek.h"

#include <chrono>
#include <cstring>

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
                             Communicator& world, int tokens_per_block, int kv_blocks)
    : cfg_(cfg), map_(map), world_(world), ws_(ws) {
  HELIX_CHECK(world.size() == map.world_size && world.rank() == map.rank,
              "communicator (rank {} of {}) does not match the mapping ({})", world.rank(),
              world.size(), map.str());
  map_.validate(cfg.num_attention_heads, cfg.n_routed_experts);
  // Ranks of one CP group share the TP rank; the CP all-to-all runs inside it.
  cp_comm_ = world.split(map.dp_rank() * map.tp + map.tp_rank(), map.cp_rank());
  attn_comm_ = world.split(map.dp_rank(), map.rank);
  hl_ = cfg.num_attention_heads / map.tp;
  std::tie(ho_begin_, ho_end_) = split_range(hl_, map.cp, map.cp_rank());
  inv_freq_ = cfg.rope_inv_freq();
  rope_mult_ = cfg.rope_attention_factor();
  scale_ = static_cast<float>(cfg.softmax_scale());
  load_weights(ws);
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
  kv_ = std::make_unique<KvCache>(kc);
}

void DeepseekModel::load_weights(const WeightStore& ws) {
  const ModelConfig& c = cfg_;
  const int64_t H = c.num_attention_heads, D = c.hidden_size, L = c.kv_lora_rank,
                R = c.qk_rope_head_dim, NOPE = c.qk_nope_head_dim, V = c.v_head_dim,
                QK = c.qk_head_dim();
  const int N = map_.ffn_size(), r = map_.ffn_rank();
  const int64_t h0 = static_cast<int64_t>(map_.tp_rank()) * hl_;  // first global head of my group

  embed = ws.load("model.embed_tokens.weight", {c.vocab_size, D});
  norm = ws.load("model.norm.weight", {D});
  if (ws.has("lm_head.weight")) {
    lm_head = ws.load("lm_head.weight", {c.vocab_size, D});
  } else if (c.tie_word_embeddings) {
    lm_head = embed;
  } else {
    fail("missing tensor 'lm_head.weight' (and tie_word_embeddings is false)");
  }

  auto load_mlp = [&](const std::string& p, int64_t inter, int part, int parts) {
    auto [a, b] = split_range(static_cast<int>(inter), parts, part);
    MlpWeights m;
    m.inter = b - a;
    Tensor g = load_rows_checked(ws, p + "gate_proj.weight", {inter, D}, a, b);
    Tensor u = load_rows_checked(ws, p + "up_proj.weight", {inter, D}, a, b);
    m.gate_up = stack_rows(g, u);
    Tensor d = ws.load(p + "down_proj.weight", {D, inter});
    m.down = slice_cols(d, a, b);
    return m;
  };

  layers_.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& lw = layers_[i];
    lw.input_norm = ws.load(p + "input_layernorm.weight", {D});
    lw.post_norm = ws.load(p + "post_attention_layernorm.weight", {D});
    AttnWeights& a = lw.attn;
    const std::string ap = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      a.q_a = ws.load(ap + "q_a_proj.weight", {c.q_lora_rank, D});
      if (c.attention_bias) a.q_a_bias = ws.load(ap + "q_a_proj.bias", {c.q_lora_rank});
      a.q_a_norm = ws.load(ap + "q_a_layernorm.weight", {c.q_lora_rank});
      a.q_b = load_rows_checked(ws, ap + "q_b_proj.weight", {H * QK, c.q_lora_rank}, h0 * QK,
                                (h0 + hl_) * QK);
    } else {
      a.q_proj = load_rows_checked(ws, ap + "q_proj.weight", {H * QK, D}, h0 * QK, (h0 + hl_) * QK);
    }
    a.kv_a = ws.load(ap + "kv_a_proj_with_mqa.weight", {L + R, D});
    if (c.attention_bias) a.kv_a_bias = ws.load(ap + "kv_a_proj_with_mqa.bias", {L + R});
    a.kv_a_norm = ws.load(ap + "kv_a_layernorm.weight", {L});
    Tensor kvb = load_rows_checked(ws, ap + "kv_b_proj.weight", {H * (NOPE + V), L},
                                   h0 * (NOPE + V), (h0 + hl_) * (NOPE + V));
    a.w_uk = Tensor({hl_, NOPE, L});
    a.w_uv = Tensor({hl_, V, L});
    for (int h = 0; h < hl_; ++h) {
      const float* src = kvb.ptr() + h * (NOPE + V) * L;
      std::memcpy(a.w_uk.ptr() + h * NOPE * L, src, NOPE * L * sizeof(float));
      std::memcpy(a.w_uv.ptr() + h * V * L, src + NOPE * L, V * L * sizeof(float));
    }
    Tensor o = ws.load(ap + "o_proj.weight", {D, H * V});
    a.o_proj = slice_cols(o, (h0 + ho_begin_) * V, (h0 + ho_end_) * V);
    if (c.attention_bias && map_.rank == 0) a.o_bias = ws.load(ap + "o_proj.bias", {D});

    lw.moe = c.is_moe_layer(i);
    const std::string mp = p + "mlp.";
    if (!lw.moe) {
      lw.dense = load_mlp(mp, c.intermediate_size, r, N);
      continue;
    }
    const int64_t E = c.n_routed_experts, IE = c.moe_intermediate_size;
    lw.router = ws.load(mp + "gate.weight", {E, D});
    lw.router_bias = ws.has(mp + "gate.e_score_correction_bias")
                         ? ws.load(mp + "gate.e_score_correction_bias", {E})
                         : Tensor({E}, 0.0f);
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
    Tensor g = load_rows_checked(ws, ep + "gate_proj.weight", {IE, D}, a0, a1);
    Tensor u = load_rows_checked(ws, ep + "up_proj.weight", {IE, D}, a0, a1);
    m.gate_up = stack_rows(g, u);
    m.down = slice_cols(ws.load(ep + "down_proj.weight", {D, IE}), a0, a1);
    return m;
  }
  // Fused 3-D tensors (transformers' in-memory layout): gate_up [E, 2*IE, D], down [E, D, IE].
  expect_shape(ws, mp + "experts.gate_up_proj", {E, 2 * IE, D});
  expect_shape(ws, mp + "experts.down_proj", {E, D, IE});
  Tensor gu = ws.load_rows(mp + "experts.gate_up_proj", e, e + 1);
  Tensor dn = ws.load_rows(mp + "experts.down_proj", e, e + 1);
  m.gate_up = Tensor({2 * m.inter, D});
  std::memcpy(m.gate_up.ptr(), gu.ptr() + a0 * D, m.inter * D * sizeof(float));
  std::memcpy(m.gate_up.ptr() + m.inter * D, gu.ptr() + (IE + a0) * D, m.inter * D * sizeof(float));
  dn.shape = {D, IE};
  m.down = slice_cols(dn, a0, a1);
  return m;
}

void DeepseekModel::rope_table(int pos, float* cos_sin) const {
  const int half = cfg_.qk_rope_head_dim / 2;
  for (int i = 0; i < half; ++i) {
    // transformers forms the angle in float32: position * inv_freq.
    const float ang = static_cast<float>(pos) * static_cast<float>(inv_freq_[i]);
    cos_sin[i] = static_cast<float>(std::cos(ang) * rope_mult_);
    cos_sin[half + i] = static_cast<float>(std::sin(ang) * rope_mult_);
  }
}

void DeepseekModel::mlp_apply(const MlpWeights& m, const float* x, int rows, float* out,
                              bool accumulate) {
  const int D = cfg_.hidden_size, I = m.inter;
  if (rows == 0) return;
  if (I == 0) {
    if (!accumulate) std::memset(out, 0, sizeof(float) * rows * D);
    return;
  }
  std::vector<float> gu(static_cast<size_t>(rows) * 2 * I), act(static_cast<size_t>(rows) * I);
  matmul(x, m.gate_up.ptr(), gu.data(), rows, 2 * I, D);
  for (int t = 0; t < rows; ++t)
    silu_mul(gu.data() + t * 2 * I, gu.data() + t * 2 * I + I, act.data() + t * I, I);
  matmul(act.data(), m.down.ptr(), out, rows, D, I, accumulate);
}

Tensor DeepseekModel::forward(const std::vector<SeqStep>& seqs, bool all_logits) {
  const ModelConfig& c = cfg_;
  const int D = c.hidden_size;
  std::vector<int> tok, pos;
  for (const auto& s : seqs) {
    HELIX_CHECK(!s.tokens.empty(), "empty token list for request {}", s.id);
    HELIX_CHECK(s.start == 0 || s.tokens.size() == 1,
                "request {}: a step is a whole prompt or one decode token", s.id);
    HELIX_CHECK(kv_->global_len(s.id) == s.start, "request {}: step starts at {} but {} cached",
                s.id, s.start, kv_->global_len(s.id));
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int t = s.tokens[i], p = s.start + static_cast<int>(i);
      if (t < 0 || t >= c.vocab_size) fail("token id {} is out of range [0, {})", t, c.vocab_size);
      if (p >= c.max_position_embeddings)
        fail("position {} exceeds max_position_embeddings ({})", p, c.max_position_embeddings);
      tok.push_back(t);
      pos.push_back(p);
    }
  }
  // Reserve KV slots first: a pool that runs out fails before any layer ran and before any
  // request of the step grew, so the caller can retry the step with fewer requests.
  int need = 0;
  for (const auto& s : seqs)
    need += kv_->blocks_needed(s.id, s.start, static_cast<int>(s.tokens.size()));
  if (need > kv_->free_blocks())
    fail(
        "KV cache out of memory on CP rank {}: the step needs {} new blocks of {} tokens but {} "
        "of {} are free (raise --kv-blocks)",
        map_.cp_rank(), need, kv_->config().tokens_per_block, kv_->free_blocks(),
        kv_->config().max_blocks);
  for (const auto& s : seqs)
    for (size_t i = 0; i < s.tokens.size(); ++i) kv_->append(s.id, s.start + static_cast<int>(i));

  const int T = static_cast<int>(tok.size());
  Tensor x({T, D}), h({T, D}), y({T, D});
  for (int t = 0; t < T; ++t)
    std::memcpy(x.ptr() + static_cast<int64_t>(t) * D,
                embed.ptr() + static_cast<int64_t>(tok[t]) * D, D * sizeof(float));
  const float eps = static_cast<float>(c.rms_norm_eps);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = layers_[l];
    rms_norm(x.ptr(), lw.input_norm.ptr(), h.ptr(), T, D, eps);
    auto t0 = Clock::now();
    attention(l, seqs, pos, h, y);
    stats_.attn_ms += ms_since(t0);
    for (int64_t i = 0; i < x.numel(); ++i) x.data[i] += y.data[i];
    rms_norm(x.ptr(), lw.post_norm.ptr(), h.ptr(), T, D, eps);
    t0 = Clock::now();
    ffn(l, h, y);
    stats_.ffn_ms += ms_since(t0);
    for (int64_t i = 0; i < x.numel(); ++i) x.data[i] += y.data[i];
    require_finite(x.ptr(), x.numel(), l, "hidden state");  // non-finite guard (issue 10)
  }
  std::vector<int> rows;
  if (all_logits) {
    for (int t = 0; t < T; ++t) rows.push_back(t);
  } else {
    int off = 0;
    for (const auto& s : seqs) {
      off += static_cast<int>(s.tokens.size());
      rows.push_back(off - 1);
    }
  }
  const int n = static_cast<int>(rows.size());
  Tensor hn({n, D});
  for (int i = 0; i < n; ++i)
    rms_norm(x.ptr() + static_cast<int64_t>(rows[i]) * D, norm.ptr(),
             hn.ptr() + static_cast<int64_t>(i) * D, 1, D, eps);
  Tensor logits({n, c.vocab_size});
  matmul(hn.ptr(), lm_head.ptr(), logits.ptr(), n, c.vocab_size, D);
  require_finite(logits.ptr(), logits.numel(), -1, "logits");
  return logits;
}

void DeepseekModel::attention(int layer, const std::vector<SeqStep>& seqs,
                              const std::vector<int>& pos, const Tensor& h, Tensor& out) {
  const ModelConfig& c = cfg_;
  const AttnWeights& a = layers_[layer].attn;
  const int T = h.dim(0), D = c.hidden_size, L = c.kv_lora_rank, R = c.qk_rope_head_dim,
            NOPE = c.qk_nope_head_dim, V = c.v_head_dim, QK = c.qk_head_dim(), W = L + R;
  const int Hl = hl_, Ho = ho_end_ - ho_begin_;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // q for every head of the TP group: [T, Hl, QK]
  Tensor q({T, Hl, QK});
  if (c.q_lora_rank > 0) {
    Tensor qa({T, c.q_lora_rank});
    matmul(h.ptr(), a.q_a.ptr(), qa.ptr(), T, c.q_lora_rank, D);
    if (!a.q_a_bias.empty())
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < c.q_lora_rank; ++i)
          qa.data[t * c.q_lora_rank + i] += a.q_a_bias.data[i];
    rms_norm(qa.ptr(), a.q_a_norm.ptr(), qa.ptr(), T, c.q_lora_rank, eps);
    matmul(qa.ptr(), a.q_b.ptr(), q.ptr(), T, Hl * QK, c.q_lora_rank);
  } else {
    matmul(h.ptr(), a.q_proj.ptr(), q.ptr(), T, Hl * QK, D);
  }
  // latent [c | k_pe] per token: [T, W]
  Tensor lat({T, W});
  matmul(h.ptr(), a.kv_a.ptr(), lat.ptr(), T, W, D);
  if (!a.kv_a_bias.empty())
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < W; ++i) lat.data[t * W + i] += a.kv_a_bias.data[i];
  rms_norm(lat.ptr(), a.kv_a_norm.ptr(), lat.ptr(), T, L, eps, W, W);
  std::vector<float> cs(static_cast<size_t>(R));
  for (int t = 0; t < T; ++t) {
    rope_table(pos[t], cs.data());
    rope_apply(lat.ptr() + t * W + L, 1, W, R, cs.data(), c.rope_interleave);
    rope_apply(q.ptr() + static_cast<int64_t>(t) * Hl * QK + NOPE, Hl, QK, R, cs.data(),
               c.rope_interleave);
  }

  Tensor attn_v({T, std::max(Ho, 0), V});  // values of the owned heads, per token
  std::vector<int> decode_rows;            // token rows of decode steps
  std::vector<int64_t> decode_ids;
  int row = 0;
  std::vector<const float*> ptrs;
  std::vector<int> lens;
  for (const auto& s : seqs) {
    const int n = static_cast<int>(s.tokens.size());
    for (int i = 0; i < n; ++i)
      if (kv_->owns(s.start + i))
        std::memcpy(kv_->row(layer, s.id, s.start + i), lat.ptr() + (row + i) * W,
                    W * sizeof(float));
    if (s.start == 0) {
      // Prompt: the naive (decompressed) causal attention over the whole prompt, for the heads
      // this rank owns; every rank holds the prompt's latents at this point.
      if (Ho > 0) {
        Tensor qh({n, Ho, QK}), kh({n, Ho, QK}), vh({n, Ho, V});
        for (int hh = 0; hh < Ho; ++hh) {
          const int hl = ho_begin_ + hh;
          std::vector<float> kn(static_cast<size_t>(n) * NOPE), vv(static_cast<size_t>(n) * V);
          matmul_strided(lat.ptr() + row * W, W, a.w_uk.ptr() + hl * NOPE * L, L, true, kn.data(),
                         NOPE, n, NOPE, L, 0.0f);
          matmul_strided(lat.ptr() + row * W, W, a.w_uv.ptr() + hl * V * L, L, true, vv.data(), V,
                         n, V, L, 0.0f);
          for (int t = 0; t < n; ++t) {
            float* qd = qh.ptr() + (t * Ho + hh) * QK;
            std::memcpy(qd, q.ptr() + ((row + t) * Hl + hl) * QK, QK * sizeof(float));
            float* kd = kh.ptr() + (t * Ho + hh) * QK;
            std::memcpy(kd, kn.data() + t * NOPE, NOPE * sizeof(float));
            std::memcpy(kd + NOPE, lat.ptr() + (row + t) * W + L, R * sizeof(float));
            std::memcpy(vh.ptr() + (t * Ho + hh) * V, vv.data() + t * V, V * sizeof(float));
          }
        }
        AttnPrefillParams pp;
        pp.num_tokens = n;
        pp.num_heads = Ho;
        pp.qk_dim = QK;
        pp.v_dim = V;
        pp.scale = scale_;
        pp.q = qh.ptr();
        pp.k = kh.ptr();
        pp.v = vh.ptr();
        pp.out = attn_v.ptr() + static_cast<int64_t>(row) * Ho * V;
        attn_prefill(pp);
      }
    } else {
      decode_rows.push_back(row);
      decode_ids.push_back(s.id);
    }
    row += n;
  }

  const int B = static_cast<int>(decode_rows.size());
  if (B > 0) {
    // Absorbed decode over the local KV shard, all Hl heads: O_r [B, Hl, L], lse_r [B, Hl].
    Tensor o({B, Hl, L}), lse({B, Hl});
    Tensor qc({Hl, W});
    const int cp = map_.cp;
    // Combined outputs of the owned heads [B, Ho, L]; with cp 1 the local ones are final.
    Tensor comb = cp > 1 ? Tensor({B, Ho, L}) : Tensor();
    // The Helix exchange + exact combine of requests [b0, b0 + nb).
    auto combine = [this, &o, &lse, &comb, Hl, Ho, L](int b0, int nb) {
      HelixCombineParams hp;
      hp.batch = nb;
      hp.local_heads = Hl;
      hp.kv_lora_rank = L;
      hp.o = o.ptr() + static_cast<int64_t>(b0) * Hl * L;
      hp.lse = lse.ptr() + static_cast<int64_t>(b0) * Hl;
      hp.out = comb.ptr() + static_cast<int64_t>(b0) * Ho * L;
      helix_combine(*cp_comm_, hp);
    };
    // HOP-B: the exchange of request b (on the worker) overlaps the attention of b+1 (here).
    // Per request, helix_combine is the batched one restricted to that request's rows: the
    // combine is row-wise, so the results are bitwise those of one exchange for the batch.
    CommWorker* pipe = cp > 1 && B > 1 ? hopb_worker_.get() : nullptr;
    struct CancelOnUnwind {  // never leave the worker reading o/lse or writing comb after a throw
      CommWorker* w;
      ~CancelOnUnwind() {
        if (w) w->cancel();
      }
    } guard{pipe};
    for (int b = 0; b < B; ++b) {
      const int t = decode_rows[b];
      for (int hh = 0; hh < Hl; ++hh) {
        const float* qn = q.ptr() + (static_cast<int64_t>(t) * Hl + hh) * QK;
        matmul_nn(qn, a.w_uk.ptr() + hh * NOPE * L, qc.ptr() + hh * W, 1, L, NOPE);
        std::memcpy(qc.ptr() + hh * W + L, qn + NOPE, R * sizeof(float));
      }
      kv_->local_blocks(layer, decode_ids[b], ptrs, lens);
      MlaDecodeParams mp;
      mp.num_heads = Hl;
      mp.kv_lora_rank = L;
      mp.rope_dim = R;
      mp.num_blocks = static_cast<int>(ptrs.size());
      mp.scale = scale_;
      mp.q = qc.ptr();
      mp.blocks = ptrs.data();
      mp.block_len = lens.data();
      mp.out = o.ptr() + static_cast<int64_t>(b) * Hl * L;
      mp.lse = lse.ptr() + static_cast<int64_t>(b) * Hl;
      mla_decode(mp);
      if (pipe) pipe->submit([&combine, b] { combine(b, 1); });
    }
    // Helix: all-to-all over CP split by heads, then the exact LSE combine.
    if (pipe) {
      // Only the exposed part of the exchanges counts as communication time here.
      auto t0 = Clock::now();
      pipe->wait();
      stats_.comm_ms += ms_since(t0);
    } else if (cp > 1) {
      auto t0 = Clock::now();
      combine(0, B);
      stats_.comm_ms += ms_since(t0);
    }
    // W_UV for the owned heads: v[b, h] = O[b, h] . W_UV[h]^T
    for (int b = 0; b < B; ++b)
      for (int hh = 0; hh < Ho; ++hh) {
        const int hl = ho_begin_ + hh;
        const float* src = cp == 1 ? o.ptr() + (static_cast<int64_t>(b) * Hl + hl) * L
                                   : comb.ptr() + (static_cast<int64_t>(b) * Ho + hh) * L;
        matmul(src, a.w_uv.ptr() + hl * V * L,
               attn_v.ptr() + (static_cast<int64_t>(decode_rows[b]) * Ho + hh) * V, 1, V, L);
      }
  }
  // o_proj, row-parallel over all tp*cp ranks, then one all-reduce.
  matmul(attn_v.ptr(), a.o_proj.ptr(), out.ptr(), T, D, Ho * V);
  if (!a.o_bias.empty())
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < D; ++i) out.data[t * D + i] += a.o_bias.data[i];
  auto t0 = Clock::now();
  attn_comm_->all_reduce_sum(out.ptr(), out.data.size());
  stats_.comm_ms += ms_since(t0);
}

void DeepseekModel::ffn(int layer, const Tensor& h, Tensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = h.dim(0);
  if (!lw.moe) {
    mlp_apply(lw.dense, h.ptr(), T, out.ptr(), false);
  } else if (map_.moe_ep) {
    moe_ep(layer, h, out);
  } else {
    std::vector<int> ids;
    std::vector<float> w;
    route(layer, h.ptr(), T, ids, w);
    moe_tp(layer, h, ids, w, out);
  }
  auto t0 = Clock::now();
  world_.all_reduce_sum(out.ptr(), out.data.size());
  stats_.comm_ms += ms_since(t0);
}

void DeepseekModel::moe_tp(int layer, const Tensor& h, const std::vector<int>& ids,
                           const std::vector<float>& w, Tensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = h.dim(0), D = cfg_.hidden_size, K = cfg_.num_experts_per_tok;
  // Shared experts (TP slice) write the output; routed experts add into it.
  if (cfg_.n_shared_experts > 0)
    mlp_apply(lw.shared, h.ptr(), T, out.ptr(), false);
  else
    std::fill(out.data.begin(), out.data.end(), 0.0f);
  // Group the (token, k) pairs by expert once, run each expert over its rows, then add the
  // weighted results in expert order (the order transformers accumulates in).
  std::vector<std::vector<int>> pairs_of(lw.experts.size());
  for (int p = 0; p < T * K; ++p) pairs_of[ids[p] - lw.expert_begin].push_back(p);
  std::vector<float> y(static_cast<size_t>(T) * K * D);
  experts_apply(
      lw.experts, pairs_of, [&](int p) { return h.ptr() + static_cast<int64_t>(p / K) * D; },
      y.data());
  for (const auto& pairs : pairs_of)
    for (int p : pairs)
      for (int d = 0; d < D; ++d)
        out.data[static_cast<int64_t>(p / K) * D + d] += w[p] * y[static_cast<size_t>(p) * D + d];
}

void DeepseekModel::experts_apply(const std::vector<MlpWeights>& experts,
                                  const std::vector<std::vector<int>>& rows_of,
                                  const std::function<const float*(int)>& in, float* y) {
  const int D = cfg_.hidden_size;
  std::vector<float> xin, yout;
  for (size_t e = 0; e < rows_of.size(); ++e) {
    const int c = static_cast<int>(rows_of[e].size());
    if (c == 0) continue;
    xin.resize(static_cast<size_t>(c) * D);
    yout.resize(static_cast<size_t>(c) * D);
    for (int i = 0; i < c; ++i)
      std::memcpy(xin.data() + static_cast<size_t>(i) * D, in(rows_of[e][i]), D * sizeof(float));
    mlp_apply(experts[e], xin.data(), c, yout.data(), false);
    for (int i = 0; i < c; ++i)
      std::memcpy(y + static_cast<size_t>(rows_of[e][i]) * D,
                  yout.data() + static_cast<size_t>(i) * D, D * sizeof(float));
  }
}

void DeepseekModel::route(int layer, const float* x, int rows, std::vector<int>& ids,
                          std::vector<float>& w) {
  const LayerWeights& lw = layers_[layer];
  const int E = cfg_.n_routed_experts, K = cfg_.num_experts_per_tok, D = cfg_.hidden_size;
  std::vector<float> logits(static_cast<size_t>(rows) * E);
  matmul(x, lw.router.ptr(), logits.data(), rows, E, D);
  ids.resize(static_cast<size_t>(rows) * K);
  w.resize(static_cast<size_t>(rows) * K);
  MoeRouteParams rp;
  rp.num_tokens = rows;
  rp.num_experts = E;
  rp.top_k = K;
  rp.n_group = cfg_.n_group;
  rp.topk_group = cfg_.topk_group;
  rp.norm_topk_prob = cfg_.norm_topk_prob;
  rp.routed_scaling_factor = static_cast<float>(cfg_.routed_scaling_factor);
  rp.logits = logits.data();
  rp.bias = lw.router_bias.ptr();
  rp.expert_ids = ids.data();
  rp.weights = w.data();
  moe_route(rp);
  for (int id : ids) stats_.expert_tokens[layer][id]++;
}

// Expert parallel: every rank routes its slice of the (replicated) tokens, sends each
// (token, expert) row to the expert's owner with one all-to-all, the owner runs its experts,
// a second all-to-all brings the rows back, and the source adds them with their weights.
// Shared experts stay tensor-parallel; the caller's all-reduce sums both.
void DeepseekModel::moe_ep(int layer, const Tensor& h, Tensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = h.dim(0), D = cfg_.hidden_size, K = cfg_.num_experts_per_tok;
  const int N = map_.ffn_size();
  auto [t0, t1] = split_range(T, N, map_.ffn_rank());
  const int n = t1 - t0;
  std::vector<int> ids;
  std::vector<float> w;
  route(layer, h.ptr() + static_cast<int64_t>(t0) * D, n, ids, w);

  if (cfg_.n_shared_experts > 0)
    mlp_apply(lw.shared, h.ptr(), T, out.ptr(), false);
  else
    std::fill(out.data.begin(), out.data.end(), 0.0f);

  const int mi = moe_index_[layer];
  const Placement& pl = placement_[mi];
  const EplbRouter& router = routers_[mi];
  const int per_rank = pl.slots_per_rank();
  const int row = D + 1;  // [slot id, x]
  std::vector<std::vector<float>> to(N);
  std::vector<std::vector<int>> pair_of(N);  // (t - t0) * K + k of each row sent to rank j
  for (int t = 0; t < n; ++t)
    for (int k = 0; k < K; ++k) {
      const int e = ids[t * K + k];
      // One replica per (token, expert): local first, else spread deterministically.
      const int slot = router.route(e, t0 + t, map_.ffn_rank(), step_);
      const int j = slot / per_rank;
      stats_.dispatch_sent[layer][e]++;
      to[j].push_back(static_cast<float>(slot));
      to[j].insert(to[j].end(), h.ptr() + static_cast<int64_t>(t0 + t) * D,
                   h.ptr() + static_cast<int64_t>(t0 + t + 1) * D);
      pair_of[j].push_back(t * K + k);
    }
  std::vector<float> cnt_send(N), cnt_recv(N);
  for (int j = 0; j < N; ++j) cnt_send[j] = static_cast<float>(pair_of[j].size());
  auto tc = Clock::now();
  world_.all_to_all(cnt_send.data(), cnt_recv.data(), 1);
  std::vector<size_t> sc(N), rc(N);
  std::vector<float> send;
  for (int j = 0; j < N; ++j) {
    sc[j] = to[j].size();
    rc[j] = static_cast<size_t>(cnt_recv[j]) * row;
    send.insert(send.end(), to[j].begin(), to[j].end());
  }
  size_t total_recv = 0;
  for (size_t c : rc) total_recv += c;
  std::vector<float> recv(total_recv);
  world_.all_to_all_v(send.data(), sc, recv.data(), rc);
  stats_.comm_ms += ms_since(tc);

  // Run the local experts over the received rows, grouped by expert.
  const int m = static_cast<int>(total_recv / row);
  std::vector<float> result(static_cast<size_t>(m) * D);
  std::vector<std::vector<int>> rows_of(lw.experts.size());
  for (int i = 0; i < m; ++i) {
    const int slot = static_cast<int>(recv[static_cast<size_t>(i) * row]);
    const int e = slot - lw.expert_begin;
    HELIX_CHECK(e >= 0 && e < static_cast<int>(lw.experts.size()),
                "slot {} routed to rank {} which does not hold it", slot, map_.rank);
    stats_.dispatch_recv[layer][pl.slot_to_expert[slot]]++;
    rows_of[e].push_back(i);
  }
  experts_apply(
      lw.experts, rows_of, [&](int i) { return recv.data() + static_cast<size_t>(i) * row + 1; },
      result.data());
  // Combine: send results back to their sources (the reverse split).
  std::vector<size_t> sc2(N), rc2(N);
  for (int j = 0; j < N; ++j) {
    sc2[j] = rc[j] / row * D;
    rc2[j] = pair_of[j].size() * D;
  }
  std::vector<float> back(static_cast<size_t>(n) * K * D);
  tc = Clock::now();
  world_.all_to_all_v(result.data(), sc2, back.data(), rc2);
  stats_.comm_ms += ms_since(tc);
  size_t off = 0;
  for (int j = 0; j < N; ++j)
    for (int pk : pair_of[j]) {
      const int t = pk / K;
      const float wt = w[pk];
      float* o = out.ptr() + static_cast<int64_t>(t0 + t) * D;
      const float* y = back.data() + off;
      for (int d = 0; d < D; ++d) o[d] += wt * y[d];
      off += D;
    }
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
