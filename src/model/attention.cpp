// The MLA attention of one layer (DESIGN.md "The GPU path": model/attention): projections, rope,
// KV write, then the naive causal attention for prompts and the absorbed latent decode (with the
// Helix all-to-all + LSE combine over CP) for decode tokens. Calls only Ops.
#include <cstring>

#include "core/clock.h"
#include "core/error.h"
#include "model/deepseek.h"
#include "model/helix_combine.h"

namespace helix {

namespace {

// A view of a typed device tensor starting `off` elements in, with `shape`.
TensorView sub(const TensorView& v, int64_t off, std::initializer_list<int64_t> shape) {
  std::vector<int64_t> s(shape);
  return TensorView::make(
      static_cast<char*>(v.data) + off * static_cast<int64_t>(dtype_size(v.dtype)), v.dtype,
      v.device, s.data(), static_cast<int>(s.size()));
}

}  // namespace

void DeepseekModel::attention(int layer, const std::vector<SeqStep>& seqs, const StepBatch& st,
                              const DTensor& h, const DTensor& out) {
  const ModelConfig& c = cfg_;
  Ops& o = *ops_;
  const AttnWeights& a = layers_[layer].attn;
  const int T = st.T, D = c.hidden_size, L = c.kv_lora_rank, R = c.qk_rope_head_dim,
            NOPE = c.qk_nope_head_dim, V = c.v_head_dim, QK = c.qk_head_dim(), W = L + R;
  const int Hl = hl_, Ho = ho_end_ - ho_begin_;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // q for every head of the TP group: [T, Hl, QK]
  DTensor q = act({T, Hl, QK});
  if (c.q_lora_rank > 0) {
    const int QL = c.q_lora_rank;
    DTensor qa = act({T, QL});
    linear(h.view(), 0, a.q_a, qa.view(), 0, T, QL, D);
    if (!a.q_a_bias.empty()) o.add(qa.view(), QL, a.q_a_bias.view(), 0, T, QL, true);
    o.rms_norm(qa.view(), 0, a.q_a_norm.view(), qa.view(), 0, T, QL, eps);
    linear(qa.view(), 0, a.q_b, q.view(), 0, T, Hl * QK, QL);
  } else {
    linear(h.view(), 0, a.q_proj, q.view(), 0, T, Hl * QK, D);
  }
  // latent [c | k_pe] per token: [T, W]
  DTensor lat = act({T, W});
  linear(h.view(), 0, a.kv_a, lat.view(), 0, T, W, D);
  if (!a.kv_a_bias.empty()) o.add(lat.view(), W, a.kv_a_bias.view(), 0, T, W, true);
  o.rms_norm(lat.view(), W, a.kv_a_norm.view(), lat.view(), W, T, L, eps);
  RopeArgs ra;
  ra.num_tokens = T;
  ra.dim = R;
  ra.positions = st.pos_d.view();
  ra.positions_host = st.pos.data();
  ra.table = &rope_;
  ra.x = sub(lat.view(), L, {T, W});
  ra.num_vecs = 1;
  ra.token_stride = ra.vec_stride = W;
  o.rope(ra);
  ra.x = sub(q.view(), NOPE, {T, Hl, QK});
  ra.num_vecs = Hl;
  ra.token_stride = static_cast<int64_t>(Hl) * QK;
  ra.vec_stride = QK;
  o.rope(ra);
  // This rank's rows of the step's tokens into the pool.
  o.kv_write(kv_->layer_pool(layer), lat.view(), W, T, L, R, st.slots_d.view(), st.slots.data());

  DTensor attn_v = act({T, std::max(Ho, 0), V});  // values of the owned heads, per token
  int row = 0;
  for (const auto& s : seqs) {
    const int n = static_cast<int>(s.tokens.size());
    if (s.start == 0 && Ho > 0) {
      // Prompt: the naive (decompressed) causal attention over the whole prompt, for the heads
      // this rank owns; every rank holds the prompt's latents at this point.
      DTensor qh = act({n, Ho, QK}), kh = act({n, Ho, QK}), vh = act({n, Ho, V});
      DTensor kn = act({n, NOPE}), vv = act({n, V});
      const TensorView lat_rows = sub(lat.view(), static_cast<int64_t>(row) * W, {n, W});
      for (int hh = 0; hh < Ho; ++hh) {
        const int hl = ho_begin_ + hh;
        GemmArgs g;
        g.x = lat_rows;
        g.ldx = W;
        g.trans_w = true;
        g.m = n;
        g.k = L;
        g.ldw = L;
        g.w = sub(a.w_uk.view(), static_cast<int64_t>(hl) * NOPE * L, {NOPE, L});
        g.y = kn.view();
        g.n = g.ldy = NOPE;
        o.gemm(g);
        g.w = sub(a.w_uv.view(), static_cast<int64_t>(hl) * V * L, {V, L});
        g.y = vv.view();
        g.n = g.ldy = V;
        o.gemm(g);
        o.copy2d(sub(qh.view(), hh * QK, {n, QK}), Ho * QK,
                 sub(q.view(), (static_cast<int64_t>(row) * Hl + hl) * QK, {n, QK}), Hl * QK, n,
                 QK);
        o.copy2d(sub(kh.view(), hh * QK, {n, NOPE}), Ho * QK, kn.view(), NOPE, n, NOPE);
        o.copy2d(sub(kh.view(), hh * QK + NOPE, {n, R}), Ho * QK, sub(lat_rows, L, {n, R}), W, n,
                 R);
        o.copy2d(sub(vh.view(), hh * V, {n, V}), Ho * V, vv.view(), V, n, V);
      }
      AttnPrefillArgs pa;
      pa.num_tokens = n;
      pa.num_heads = Ho;
      pa.qk_dim = QK;
      pa.v_dim = V;
      pa.scale = scale_;
      pa.q = qh.view();
      pa.k = kh.view();
      pa.v = vh.view();
      pa.out = sub(attn_v.view(), static_cast<int64_t>(row) * Ho * V, {n, Ho, V});
      o.attn_prefill(pa);
    }
    row += n;
  }

  const int B = static_cast<int>(st.decode_rows.size());
  if (B > 0) {
    // Decode rows are consecutive token rows in every step the engine makes (all-decode
    // batches); the projections below read them with one stride.
    const int r0 = st.decode_rows[0];
    for (int b = 0; b < B; ++b)
      HELIX_CHECK(st.decode_rows[b] == r0 + b, "a step mixes prompt and decode rows");
    // Absorbed decode over the local KV shard, all Hl heads: O_r [B, Hl, L], lse_r [B, Hl].
    DTensor ot = o.alloc({B, Hl, L}, DType::F32), lse = o.alloc({B, Hl}, DType::F32);
    // qc = [W_UK^T q_nope, q_pe] per head: [B, Hl, W] in the dtype the MLA kernel takes (bf16
    // for an FP8 pool on CUDA). float32 activations over a bf16 or FP8 pool: built in float32
    // (the GEMMs give no bf16 output of fp32 operands), then cast.
    const DType pool_dt = kv_->layer_pool(0).dtype;
    const DType q_dt = o.device().is_cpu()        ? DType::F32
                       : pool_dt == DType::F8E4M3 ? DType::BF16
                                                  : pool_dt;
    const bool via_f32 = o.act_dtype() == DType::F32 && q_dt == DType::BF16;
    DTensor qc = o.alloc({B, Hl, W}, via_f32 ? DType::F32 : q_dt);
    {
      GemmArgs g;
      g.x = sub(q.view(), static_cast<int64_t>(r0) * Hl * QK, {B, Hl, QK});
      g.ldx = static_cast<int64_t>(Hl) * QK;
      g.stride_x = QK;
      g.w = a.w_uk.view();
      g.ldw = L;
      g.stride_w = static_cast<int64_t>(NOPE) * L;
      g.trans_w = false;
      g.y = qc.view();
      g.ldy = static_cast<int64_t>(Hl) * W;
      g.stride_y = W;
      g.m = B;
      g.n = L;
      g.k = NOPE;
      g.batch = Hl;
      g.rowwise = true;
      o.gemm(g);
      const TensorView q_pe = sub(q.view(), static_cast<int64_t>(r0) * Hl * QK + NOPE, {B * Hl, R});
      if (qc.dtype() == q.dtype()) {
        o.copy2d(sub(qc.view(), L, {B * Hl, R}), W, q_pe, QK, B * Hl, R);
      } else {  // q in another dtype than the activations (the fp32-KV experiment)
        DTensor pe = act({B * Hl, R}), pe_c = o.alloc({B * Hl, R}, qc.dtype());
        o.copy2d(pe.view(), R, q_pe, QK, B * Hl, R);
        o.cast(pe_c.view(), pe.view());
        o.copy2d(sub(qc.view(), L, {B * Hl, R}), W, pe_c.view(), R, B * Hl, R);
      }
      if (via_f32) {
        DTensor qb = o.alloc({B, Hl, W}, q_dt);
        o.cast(qb.view(), qc.view());
        qc = qb;
      }
    }
    const int cp = map_.cp;
    // Combined outputs of the owned heads [B, Ho, L]; with cp 1 the local ones are final.
    DTensor comb = cp > 1 ? o.alloc({B, Ho, L}, DType::F32) : DTensor();
    // The Helix exchange + exact combine of requests [b0, b0 + nb) (host buffers: CPU only).
    auto combine = [this, &ot, &lse, &comb, Hl, Ho, L](int b0, int nb) {
      HelixCombineParams hp;
      hp.batch = nb;
      hp.local_heads = Hl;
      hp.kv_lora_rank = L;
      hp.o = ot.f32() + static_cast<int64_t>(b0) * Hl * L;
      hp.lse = lse.f32() + static_cast<int64_t>(b0) * Hl;
      hp.out = comb.f32() + static_cast<int64_t>(b0) * Ho * L;
      helix_combine(*cp_comm_, hp);
    };
    MlaDecodeArgs ma;
    ma.num_heads = Hl;
    ma.kv_lora_rank = L;
    ma.rope_dim = R;
    ma.block_size = kv_->config().tokens_per_block;
    ma.max_blocks_per_seq = st.max_blocks;
    ma.max_seq_len = st.max_len;
    ma.scale = scale_;
    ma.pool = kv_->layer_pool(layer);
    // Decode requests [b0, b0 + nb).
    auto decode = [&](int b0, int nb) {
      ma.batch = nb;
      ma.q = sub(qc.view(), static_cast<int64_t>(b0) * Hl * W, {nb, Hl, W});
      ma.block_table = sub(st.block_table_d.view(), static_cast<int64_t>(b0) * st.max_blocks,
                           {nb, st.max_blocks});
      ma.seq_lens = sub(st.seq_lens_d.view(), b0, {nb});
      ma.block_table_host = st.block_table.data() + static_cast<int64_t>(b0) * st.max_blocks;
      ma.seq_lens_host = st.seq_lens.data() + b0;
      ma.out = sub(ot.view(), static_cast<int64_t>(b0) * Hl * L, {nb, Hl, L});
      ma.lse = sub(lse.view(), static_cast<int64_t>(b0) * Hl, {nb, Hl});
      o.mla_decode(ma);
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
    if (pipe) {
      for (int b = 0; b < B; ++b) {
        decode(b, 1);
        pipe->submit([&combine, b] { combine(b, 1); });
      }
      // Only the exposed part of the exchanges counts as communication time here.
      auto t0 = Clock::now();
      pipe->wait();
      stats_.comm_ms += ms_since(t0);
    } else {
      decode(0, B);
      if (cp > 1) {
        auto t0 = Clock::now();
        combine(0, B);
        stats_.comm_ms += ms_since(t0);
      }
    }
    // W_UV for the owned heads: v[b, h] = O[b, h] . W_UV[h]^T
    if (Ho > 0) {
      DTensor src = cp == 1 ? ot : comb;
      DTensor src_act;  // the latent output in the activation dtype (fp32 on the CPU)
      TensorView sv = src.view();
      if (sv.dtype != o.act_dtype()) {
        src_act = act({B, cp == 1 ? Hl : Ho, L});
        o.cast(src_act.view(), sv);
        sv = src_act.view();
      }
      const int hs = cp == 1 ? Hl : Ho, h0 = cp == 1 ? ho_begin_ : 0;
      GemmArgs g;
      g.x = sub(sv, static_cast<int64_t>(h0) * L, {B, hs, L});
      g.ldx = static_cast<int64_t>(hs) * L;
      g.stride_x = L;
      g.w = sub(a.w_uv.view(), static_cast<int64_t>(ho_begin_) * V * L, {Ho, V, L});
      g.ldw = L;
      g.stride_w = static_cast<int64_t>(V) * L;
      g.trans_w = true;
      g.y = sub(attn_v.view(), static_cast<int64_t>(r0) * Ho * V, {B, Ho, V});
      g.ldy = static_cast<int64_t>(Ho) * V;
      g.stride_y = V;
      g.m = B;
      g.n = V;
      g.k = L;
      g.batch = Ho;
      g.rowwise = true;
      o.gemm(g);
    }
  }
  // o_proj, row-parallel over all tp*cp ranks, then one all-reduce.
  linear(attn_v.view(), 0, a.o_proj, out.view(), 0, T, D, Ho * V);
  if (!a.o_bias.empty()) o.add(out.view(), D, a.o_bias.view(), 0, T, D, true);
  if (o.device().is_cpu()) {
    auto t0 = Clock::now();
    attn_data_->all_reduce_sum(out.view());
    stats_.comm_ms += ms_since(t0);
  }
}

}  // namespace helix
