// The FFN of one layer (DESIGN.md "The GPU path": model/ffn): the dense MLP, and the MoE with
// routed experts tensor-parallel (every rank holds a slice of every expert) or expert-parallel
// (whole experts, tokens dispatched with all-to-all). Calls only Ops; the EP dispatch and the
// all-reduces move host buffers (CPU backend).
#include <cstring>

#include "core/clock.h"
#include "core/error.h"
#include "model/deepseek.h"

namespace helix {

namespace {
// The router op's arguments for `rows` tokens of one MoE layer (DeepSeek-V3 routing from config).
MoeRouteArgs route_args(const ModelConfig& cfg, const LayerWeights& lw, int rows,
                        const TensorView& logits, const TensorView& ids, const TensorView& w) {
  MoeRouteArgs ra;
  ra.num_tokens = rows;
  ra.num_experts = cfg.n_routed_experts;
  ra.top_k = cfg.num_experts_per_tok;
  ra.n_group = cfg.n_group;
  ra.topk_group = cfg.topk_group;
  ra.norm_topk_prob = cfg.norm_topk_prob;
  ra.routed_scaling_factor = static_cast<float>(cfg.routed_scaling_factor);
  ra.logits = logits;
  ra.bias = lw.router_bias.f32();
  ra.expert_ids = ids;
  ra.weights = w;
  return ra;
}
}  // namespace

void DeepseekModel::mlp_apply(const MlpWeights& m, const TensorView& x, int rows,
                              const TensorView& out, bool accumulate) {
  const int D = cfg_.hidden_size, I = m.inter;
  if (rows == 0) return;
  if (I == 0) {
    if (!accumulate) ops_->fill_zero(out.rows(0, rows));
    return;
  }
  DTensor gu = act({rows, 2 * I}), a = act({rows, I});
  linear(x, 0, m.gate_up, gu.view(), 0, rows, 2 * I, D);
  ops_->silu_mul(gu.view(), a.view(), rows, I);
  linear(a.view(), 0, m.down, out, 0, rows, D, I, accumulate);
}

void DeepseekModel::ffn(int layer, const DTensor& h, const DTensor& h32, const DTensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = static_cast<int>(h.dim(0));
  if (!lw.moe) {
    mlp_apply(lw.dense, h.view(), T, out.view(), false);
  } else if (map_.moe_ep) {
    moe_ep(layer, h, out);
  } else if (!ops_->device().is_cpu()) {
    moe_device(layer, h, h32, out);
  } else {
    std::vector<int> ids;
    std::vector<float> w;
    route(layer, h.view(), T, ids, w);
    moe_tp(layer, h, ids, w, out);
  }
  if (ops_->device().is_cpu()) {
    auto t0 = Clock::now();
    world_data_->all_reduce_sum(out.view());
    stats_.comm_ms += ms_since(t0);
  }
}

void DeepseekModel::moe_tp(int layer, const DTensor& h, const std::vector<int>& ids,
                           const std::vector<float>& w, const DTensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = static_cast<int>(h.dim(0)), D = cfg_.hidden_size, K = cfg_.num_experts_per_tok;
  // Shared experts (TP slice) write the output; routed experts add into it.
  if (cfg_.n_shared_experts > 0)
    mlp_apply(lw.shared, h.view(), T, out.view(), false);
  else
    ops_->fill_zero(out.view());
  // Group the (token, k) pairs by expert once, run each expert over its rows, then add the
  // weighted results in expert order (the order transformers accumulates in).
  std::vector<std::vector<int>> pairs_of(lw.experts.size());
  for (int p = 0; p < T * K; ++p) pairs_of[ids[p] - lw.expert_begin].push_back(p);
  DTensor y = act({static_cast<int64_t>(T) * K, D});
  const TensorView hv = h.view();
  experts_apply(
      lw.experts, pairs_of, [&](int p) { return hv.rows(p / K, p / K + 1); }, y);
  std::vector<int> src, dst;
  std::vector<float> wt;
  for (const auto& pairs : pairs_of)
    for (int p : pairs) {
      src.push_back(p);
      dst.push_back(p / K);
      wt.push_back(w[p]);
    }
  ops_->scatter_add_rows(out.view(), y.view(), src.data(), dst.data(), wt.data(),
                         static_cast<int>(src.size()), D);
}

void DeepseekModel::experts_apply(const std::vector<MlpWeights>& experts,
                                  const std::vector<std::vector<int>>& rows_of,
                                  const std::function<TensorView(int)>& in, const DTensor& y) {
  const int D = cfg_.hidden_size;
  for (size_t e = 0; e < rows_of.size(); ++e) {
    const int c = static_cast<int>(rows_of[e].size());
    if (c == 0) continue;
    DTensor xin = act({c, D}), yout = act({c, D});
    for (int i = 0; i < c; ++i)
      ops_->copy2d(xin.view().rows(i, i + 1), D, in(rows_of[e][i]), D, 1, D);
    mlp_apply(experts[e], xin.view(), c, yout.view(), false);
    for (int i = 0; i < c; ++i)
      ops_->copy2d(y.view().rows(rows_of[e][i], rows_of[e][i] + 1), D, yout.view().rows(i, i + 1),
                   D, 1, D);
  }
}

void DeepseekModel::route(int layer, const TensorView& x, int rows, std::vector<int>& ids,
                          std::vector<float>& w) {
  const LayerWeights& lw = layers_[layer];
  const int E = cfg_.n_routed_experts, K = cfg_.num_experts_per_tok, D = cfg_.hidden_size;
  DTensor logits = ops_->alloc({rows, E}, DType::F32);
  // The router runs in fp32 on every backend: the activations are cast up first.
  TensorView xv = x;
  DTensor x32;
  if (x.dtype != DType::F32) {
    x32 = ops_->alloc({rows, D}, DType::F32);
    ops_->cast(x32.view(), x.rows(0, rows));
    xv = x32.view();
  }
  linear(xv, 0, lw.router, logits.view(), 0, rows, E, D);
  DTensor ids_d = ops_->alloc({rows, K}, DType::I32), w_d = ops_->alloc({rows, K}, DType::F32);
  ops_->moe_route(route_args(cfg_, lw, rows, logits.view(), ids_d.view(), w_d.view()));
  ids.resize(static_cast<size_t>(rows) * K);
  w.resize(static_cast<size_t>(rows) * K);
  if (rows > 0) {
    ops_->to_host_raw(ids_d.view(), ids.data());
    ops_->to_host_raw(w_d.view(), w.data());
  }
  for (int id : ids) stats_.expert_tokens[layer][id]++;
}

void DeepseekModel::moe_device(int layer, const DTensor& h, const DTensor& h32,
                               const DTensor& out) {
  const LayerWeights& lw = layers_[layer];
  const int T = static_cast<int>(h.dim(0)), D = cfg_.hidden_size, E = cfg_.n_routed_experts,
            K = cfg_.num_experts_per_tok;
  if (cfg_.n_shared_experts > 0)
    mlp_apply(lw.shared, h.view(), T, out.view(), false);
  else
    ops_->fill_zero(out.view());
  // The router in fp32 (discrete choices: a top-k flip is a jump in the output), from the fp32
  // normed hidden state before its bf16 rounding; ids and weights stay on the device.
  DTensor x32, logits = ops_->alloc({T, E}, DType::F32);
  TensorView xr = h.view();
  if (h.dtype() != DType::F32) {
    if (opt_.router_f32_input && !h32.empty()) {
      xr = h32.view().rows(0, T);
    } else {
      x32 = ops_->alloc({T, D}, DType::F32);
      ops_->cast(x32.view(), h.view());
      xr = x32.view();
    }
  }
  linear(xr, 0, lw.router, logits.view(), 0, T, E, D);
  DTensor ids = ops_->alloc({T, K}, DType::I32), w = ops_->alloc({T, K}, DType::F32);
  ops_->moe_route(route_args(cfg_, lw, T, logits.view(), ids.view(), w.view()));
  if (opt_.record_routes) {
    std::vector<int> got(static_cast<size_t>(T) * K);
    ops_->to_host_raw(ids.view(), got.data());
    routes_.resize(cfg_.num_hidden_layers);
    routes_[layer].insert(routes_[layer].end(), got.begin(), got.end());
  }
  MoeExpertsArgs ma;
  ma.num_tokens = T;
  ma.top_k = K;
  ma.num_experts = E;
  ma.dim = D;
  ma.inter = lw.experts.empty() ? 0 : lw.experts[0].inter;
  ma.x = h.view();
  ma.expert_ids = ids.view();
  ma.weights = w.view();
  ma.gate_up_ptrs = lw.gate_up_ptrs.view();
  ma.down_ptrs = lw.down_ptrs.view();
  ma.gate_up = &lw.gate_up_list;
  ma.down = &lw.down_list;
  ma.w_dtype = lw.experts.empty() ? opt_.weight_dtype : lw.experts[0].gate_up.dtype();
  ma.gate_up_scale_ptrs = lw.gate_up_scale_ptrs.view();
  ma.down_scale_ptrs = lw.down_scale_ptrs.view();
  ma.out = out.view();
  ops_->moe_experts(ma);
}

// Expert parallel: every rank routes its slice of the (replicated) tokens, sends each
// (token, expert) row to the expert's owner with one all-to-all, the owner runs its experts,
// a second all-to-all brings the rows back, and the source adds them with their weights.
// Shared experts stay tensor-parallel; the caller's all-reduce sums both. Host buffers: CPU.
void DeepseekModel::moe_ep(int layer, const DTensor& hd, const DTensor& outd) {
  const LayerWeights& lw = layers_[layer];
  const int T = static_cast<int>(hd.dim(0)), D = cfg_.hidden_size, K = cfg_.num_experts_per_tok;
  const int N = map_.ffn_size();
  const float* h = hd.f32();
  float* out = outd.f32();
  auto [t0, t1] = split_range(T, N, map_.ffn_rank());
  const int n = t1 - t0;
  std::vector<int> ids;
  std::vector<float> w;
  route(layer, hd.view().rows(t0, t1), n, ids, w);

  if (cfg_.n_shared_experts > 0)
    mlp_apply(lw.shared, hd.view(), T, outd.view(), false);
  else
    ops_->fill_zero(outd.view());

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
      to[j].insert(to[j].end(), h + static_cast<int64_t>(t0 + t) * D,
                   h + static_cast<int64_t>(t0 + t + 1) * D);
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
  DTensor result = act({m, D});
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
      lw.experts, rows_of,
      [&](int i) {
        const int64_t one[2] = {1, D};
        return TensorView::make(recv.data() + static_cast<size_t>(i) * row + 1, DType::F32,
                                Device::cpu(), one, 2);
      },
      result);
  // Combine: send results back to their sources (the reverse split).
  std::vector<size_t> sc2(N), rc2(N);
  for (int j = 0; j < N; ++j) {
    sc2[j] = rc[j] / row * D;
    rc2[j] = pair_of[j].size() * D;
  }
  std::vector<float> back(static_cast<size_t>(n) * K * D);
  tc = Clock::now();
  const int64_t nb[2] = {static_cast<int64_t>(n) * K, D};
  world_data_->all_to_all_v(result.view(), std::vector<int64_t>(sc2.begin(), sc2.end()),
                            TensorView::make(back.data(), DType::F32, Device::cpu(), nb, 2),
                            std::vector<int64_t>(rc2.begin(), rc2.end()));
  stats_.comm_ms += ms_since(tc);
  size_t off = 0;
  for (int j = 0; j < N; ++j)
    for (int pk : pair_of[j]) {
      const int t = pk / K;
      const float wt = w[pk];
      float* o = out + static_cast<int64_t>(t0 + t) * D;
      const float* y = back.data() + off;
      for (int d = 0; d < D; ++d) o[d] += wt * y[d];
      off += D;
    }
}

}  // namespace helix
