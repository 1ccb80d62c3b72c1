// One forward step of the layer graph (DESIGN.md "Graph-stable decode steps"): the KV rows a step
// reserves, its host metadata (StepBatch) and the one upload of it, the layers over it, the
// logits or the ids sampled on the backend, and the decode steps captured as CUDA graphs and
// replayed (sampling inside the graph).
#include <algorithm>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/finite.h"
#include "model/deepseek.h"

namespace helix {

void DeepseekModel::reserve_kv(const std::vector<SeqStep>& seqs) {
  for (const auto& s : seqs)
    HELIX_CHECK(kv_->global_len(s.id) == s.start, "request {}: step starts at {} but {} cached",
                s.id, s.start, kv_->global_len(s.id));
  // Check the whole step first: a pool that runs out fails before any request grew.
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
}

StepBatch DeepseekModel::make_step(const std::vector<SeqStep>& seqs, bool upload) {
  const ModelConfig& c = cfg_;
  StepBatch st;
  for (const auto& s : seqs) {
    HELIX_CHECK(!s.tokens.empty(), "empty token list for request {}", s.id);
    HELIX_CHECK(s.start == 0 || s.tokens.size() == 1,
                "request {}: a step is a whole prompt or one decode token", s.id);
    const int n = static_cast<int>(s.tokens.size());
    HELIX_CHECK(kv_->global_len(s.id) == s.start + n,
                "request {}: KV holds {} tokens, expected {} (reserve_kv before forward)", s.id,
                kv_->global_len(s.id), s.start + n);
    if (s.start > 0) {
      st.decode_rows.push_back(static_cast<int>(st.tok.size()));
      st.decode_ids.push_back(s.id);
    }
    for (int i = 0; i < n; ++i) {
      const int t = s.tokens[i], p = s.start + i;
      if (t < 0 || t >= c.vocab_size) fail("token id {} is out of range [0, {})", t, c.vocab_size);
      if (p >= c.max_position_embeddings)
        fail("position {} exceeds max_position_embeddings ({})", p, c.max_position_embeddings);
      st.tok.push_back(t);
      st.pos.push_back(p);
      st.slots.push_back(kv_->owns(p) ? kv_->slot(s.id, p) : -1);
    }
  }
  st.T = static_cast<int>(st.tok.size());
  const int B = static_cast<int>(st.decode_ids.size());
  for (int b = 0; b < B; ++b) {
    st.max_blocks = std::max(st.max_blocks, kv_->local_blocks(st.decode_ids[b]));
    st.max_len = std::max(st.max_len, kv_->local_tokens(st.decode_ids[b]));
  }
  st.block_table.assign(static_cast<size_t>(B) * std::max(st.max_blocks, 1), 0);
  for (int b = 0; b < B; ++b) {
    const auto& ids = kv_->block_ids(st.decode_ids[b]);
    std::copy(ids.begin(), ids.end(), st.block_table.begin() + b * std::max(st.max_blocks, 1));
    st.seq_lens.push_back(kv_->local_tokens(st.decode_ids[b]));
  }
  st.max_blocks = std::max(st.max_blocks, 1);
  // One upload per step for every index the kernels read (the CPU reads the host copies).
  if (upload && !ops_->device().is_cpu()) {
    auto put = [&](const void* p, int64_t n, DType t) {
      return n > 0 ? ops_->upload_raw(p, {n}, t) : DTensor();
    };
    st.tok_d = put(st.tok.data(), st.T, DType::I32);
    st.pos_d = put(st.pos.data(), st.T, DType::I32);
    st.slots_d = put(st.slots.data(), st.T, DType::I64);
    st.block_table_d =
        put(st.block_table.data(), static_cast<int64_t>(st.block_table.size()), DType::I32);
    st.seq_lens_d = put(st.seq_lens.data(), B, DType::I32);
  }
  return st;
}

Tensor DeepseekModel::forward(const std::vector<SeqStep>& seqs, bool all_logits) {
  Tensor logits;
  step(seqs, all_logits, nullptr, &logits, nullptr);
  return logits;
}

std::vector<int> DeepseekModel::forward_sample(const std::vector<SeqStep>& seqs,
                                               const std::vector<SampleRow>& sampling,
                                               Tensor* logits) {
  HELIX_CHECK(sampling.size() == seqs.size(), "forward_sample: {} sampling rows for {} sequences",
              sampling.size(), seqs.size());
  std::vector<int> ids;
  step(seqs, false, &sampling, logits, &ids);
  return ids;
}

void DeepseekModel::step(const std::vector<SeqStep>& seqs, bool all_logits,
                         const std::vector<SampleRow>* sampling, Tensor* logits,
                         std::vector<int>* ids) {
  bool decode_only = !seqs.empty();
  for (const auto& s : seqs) decode_only = decode_only && s.start > 0 && s.tokens.size() == 1;
  // CUDA graphs need the split-KV plan of the bf16/FP8 MLA kernel (sizes read on the device).
  const DType kv_dt = kv_->layer_pool(0).dtype;
  if (decode_only && opt_.cuda_graphs && ops_->supports_graphs() &&
      (kv_dt == DType::BF16 || kv_dt == DType::F8E4M3)) {
    forward_graph(seqs, sampling, logits, ids);
    return;
  }
  const StepBatch st = make_step(seqs, true);
  std::vector<int> rows;
  if (all_logits) {
    for (int t = 0; t < st.T; ++t) rows.push_back(t);
  } else {
    int off = 0;
    for (const auto& s : seqs) {
      off += static_cast<int>(s.tokens.size());
      rows.push_back(off - 1);
    }
  }
  const int n = static_cast<int>(rows.size());
  DTensor logits_d = ops_->alloc({n, cfg_.vocab_size}, DType::F32), ids_d;
  run_step(seqs, st, rows, logits_d);
  if (sampling) {
    DTensor params = ops_->upload_raw(sampling->data(), {n, 5}, DType::I64);
    ids_d = ops_->alloc({n}, DType::I32);
    ops_->sample(logits_d.view(), params.view(), ids_d.view(), n, cfg_.vocab_size);
  }
  fetch(logits_d, ids_d, n, logits, ids);
}

void DeepseekModel::fetch(const DTensor& logits_d, const DTensor& ids_d, int n, Tensor* logits,
                          std::vector<int>* ids) {
  if (logits) {
    *logits = Tensor({n, cfg_.vocab_size});
    ops_->to_host(logits_d.view(), logits->ptr());
    require_finite(logits->ptr(), logits->numel(), -1, "logits");
  }
  if (ids) {
    ids->assign(n, 0);
    ops_->to_host_raw(ids_d.view(), ids->data());
    for (int i = 0; i < n; ++i)
      if ((*ids)[i] < 0)
        throw NonFiniteError(fmt::format(
            "non-finite value in the logits (row {}); check the weights with --check-weights", i));
  }
}

// Decode steps on a CUDA-graph backend: the step's indices (and sampling rows) go into fixed
// device buffers of its batch shape (batch, block-table width), then a graph recorded once per
// shape replays the whole step, sampling included. The first step of a shape runs eagerly (it
// makes the MLA plan and warms cuBLAS), the second records the graph.
void DeepseekModel::forward_graph(const std::vector<SeqStep>& seqs,
                                  const std::vector<SampleRow>* sampling, Tensor* logits,
                                  std::vector<int>* ids) {
  StepBatch st = make_step(seqs, false);
  const int B = st.T;
  int width = 16;
  while (width < st.max_blocks) width *= 2;
  DecodeGraph& g = graphs_[{B, width}];
  if (g.logits.empty()) {
    g.tok = ops_->alloc({B}, DType::I32);
    g.pos = ops_->alloc({B}, DType::I32);
    g.slots = ops_->alloc({B}, DType::I64);
    g.block_table = ops_->alloc({B, width}, DType::I32);
    g.seq_lens = ops_->alloc({B}, DType::I32);
    g.logits = ops_->alloc({B, cfg_.vocab_size}, DType::F32);
    g.params = ops_->alloc({B, 5}, DType::I64);
    g.ids = ops_->alloc({B}, DType::I32);
    // The split-KV plan of this batch shape, made before any capture.
    ops_->mla_plan(hl_, cfg_.kv_lora_rank, cfg_.qk_rope_head_dim, B, kv_->layer_pool(0).dtype);
  }
  std::vector<int> table(static_cast<size_t>(B) * width, 0);
  for (int b = 0; b < B; ++b)
    std::copy(st.block_table.begin() + static_cast<int64_t>(b) * st.max_blocks,
              st.block_table.begin() + static_cast<int64_t>(b + 1) * st.max_blocks,
              table.begin() + static_cast<int64_t>(b) * width);
  st.block_table = std::move(table);
  st.max_blocks = width;
  st.max_len = width * kv_->config().tokens_per_block;
  // Without sampling rows the graph's sampler runs greedy (its ids are not read).
  const std::vector<SampleRow> greedy(sampling ? 0 : B);
  ops_->from_host(st.tok.data(), g.tok.view());
  ops_->from_host(st.pos.data(), g.pos.view());
  ops_->from_host(st.slots.data(), g.slots.view());
  ops_->from_host(st.block_table.data(), g.block_table.view());
  ops_->from_host(st.seq_lens.data(), g.seq_lens.view());
  ops_->from_host(sampling ? sampling->data() : greedy.data(), g.params.view());
  st.tok_d = g.tok;
  st.pos_d = g.pos;
  st.slots_d = g.slots;
  st.block_table_d = g.block_table;
  st.seq_lens_d = g.seq_lens;
  std::vector<int> rows(B);
  for (int b = 0; b < B; ++b) rows[b] = b;
  auto body = [&] {
    run_step(seqs, st, rows, g.logits);
    ops_->sample(g.logits.view(), g.params.view(), g.ids.view(), B, cfg_.vocab_size);
  };
  if (g.exec) {
    ops_->graph_launch(g.exec);
  } else if (g.warm) {
    ops_->graph_begin();
    try {
      body();
    } catch (...) {
      ops_->graph_end();
      throw;
    }
    g.exec = ops_->graph_end();
    ops_->graph_launch(g.exec);
  } else {
    body();
    g.warm = true;
  }
  fetch(g.logits, g.ids, B, logits, ids);
}

void DeepseekModel::run_step(const std::vector<SeqStep>& seqs, const StepBatch& st,
                             const std::vector<int>& rows, const DTensor& logits_d) {
  const ModelConfig& c = cfg_;
  const int D = c.hidden_size;
  Ops& o = *ops_;
  const int T = st.T;
  // The residual stream stays fp32 on every backend (bf16 rounding of x at every layer costs
  // more accuracy than the bf16 matmuls); norms read it and write the activation dtype.
  DTensor x = o.alloc({T, D}, DType::F32), h = act({T, D}), y = act({T, D});
  DTensor h32 = o.act_dtype() == DType::F32 ? DTensor() : o.alloc({T, D}, DType::F32);
  const float eps = static_cast<float>(c.rms_norm_eps);
  // h[rows] = rms_norm(x[rows]) * w in the activation dtype.
  auto norm_to = [&](const TensorView& xs, const DTensor& w, const TensorView& hs, int rows) {
    if (hs.dtype == DType::F32) {
      o.rms_norm(xs, 0, w.view(), hs, 0, rows, D, eps);
    } else {
      const TensorView t = h32.view().rows(0, rows);
      o.rms_norm(xs, 0, w.view(), t, 0, rows, D, eps);
      o.cast(hs, t);
    }
  };
  o.embed(embed.view(), st.tok_d.view(), st.tok.data(), x.view(), T);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = layers_[l];
    norm_to(x.view(), lw.input_norm, h.view(), T);
    auto t0 = Clock::now();
    attention(l, seqs, st, h, y);
    stats_.attn_ms += ms_since(t0);
    o.add(x.view(), D, y.view(), D, T, D, false);
    norm_to(x.view(), lw.post_norm, h.view(), T);
    t0 = Clock::now();
    ffn(l, h, h32, y);
    stats_.ffn_ms += ms_since(t0);
    o.add(x.view(), D, y.view(), D, T, D, false);
    // Non-finite guard (issue 10) on the host; on a GPU the logits check below covers it (a
    // per-layer copy back would break the graph-stable step).
    if (o.device().is_cpu()) require_finite(x.f32(), x.numel(), l, "hidden state");
  }
  const int n = static_cast<int>(rows.size());
  DTensor hn = opt_.lm_head_f32 ? o.alloc({n, D}, DType::F32) : act({n, D});
  // One norm per run of consecutive rows (a decode step's rows are all consecutive): the norm
  // is row-wise, so this is bitwise the per-row result with 2 launches instead of 2 per row.
  for (int i = 0; i < n;) {
    int j = i + 1;
    while (j < n && rows[j] == rows[j - 1] + 1) ++j;
    norm_to(x.view().rows(rows[i], rows[i] + (j - i)), norm, hn.view().rows(i, j), j - i);
    i = j;
  }
  linear(hn.view(), 0, lm_head, logits_d.view(), 0, n, c.vocab_size, D);
}

}  // namespace helix
