// One rank of the persistent engine: its model, its KV, its share of every step. Every rank runs
// the same control flow (SPMD): rank 0 plans each step and broadcasts the plan, then all ranks
// free the requests that leave, prefill the ones that join, and decode the batch; rank 0 samples
// and broadcasts the ids (with a "done" mark), so all ranks retire the same requests.
#include <algorithm>
#include <cstdio>
#include <set>

#include <unistd.h>

#include "core/error.h"
#include "core/finite.h"
#include "engine/core.h"
#include "engine/report.h"
#include "model/deepseek.h"
#include "moe/eplb.h"
#include "parallel/mapping.h"

namespace helix {

namespace {

class RankRunner {
 public:
  RankRunner(EngineCore& core, Communicator& comm)
      : core_(core),
        cfg_(core.cfg),
        mc_(core.mc),
        comm_(comm),
        map_(core.world, comm.rank(), cfg_.tp, cfg_.cp, cfg_.ep > 1),
        model_(mc_, *core.ws, map_, comm, cfg_.tokens_per_block, core.kv_blocks, core.model_opt),
        lead_(comm.rank() == 0) {
    model_.set_hopb(cfg_.hopb);
    rep_.rank = map_.rank;
    rep_.cp_rank = map_.cp_rank();
    rep_.tp_rank = map_.tp_rank();
    // The context (prefill) model of disaggregated serving: one rank, all heads, no Helix. Its
    // KV holds one prompt at a time.
    if (core.world > 1 && cfg_.prefill == "context" && lead_) {
      const int longest =
          cfg_.max_prompt_tokens > 0 ? cfg_.max_prompt_tokens : mc_.max_position_embeddings;
      ctx_comm_ = make_single_comm();
      ctx_ = std::make_unique<DeepseekModel>(
          mc_, *core.ws, Mapping(1, 0, 1, 1, false), *ctx_comm_, cfg_.tokens_per_block,
          kv_blocks_on_rank(longest, cfg_.tokens_per_block, 1, 0));
    }
  }

  void run(Clock::time_point t_load) {
    eplb_setup();
    if (lead_) {
      std::lock_guard lk(core_.report_mu);
      core_.report.load_ms = ms_since(t_load);
      core_.report.hopb = model_.hopb();
    }
    {
      std::lock_guard lk(core_.mu);
      // A pool sized by --gpu-memory-fraction: admission counts its blocks (nothing is queued
      // before every rank has loaded).
      if (lead_ && core_.world == 1 && model_.kv().config().max_blocks != core_.kv_blocks) {
        core_.kv_blocks = model_.kv().config().max_blocks;
        SchedulerConfig sc = core_.sched->config();
        sc.kv_blocks = core_.kv_blocks;
        core_.sched = std::make_unique<Scheduler>(sc);
      }
      core_.loaded++;
      if (lead_ && cfg_.ep > 1 &&
          (cfg_.eplb_interval > 0 || cfg_.eplb_slots > 0 || !cfg_.eplb_placement.empty())) {
        core_.eplb_layers = model_.moe_layers();
        core_.eplb_balance.assign(num_moe(), 1.0);
      }
    }
    core_.cv.notify_all();
    while (true) {
      StepPlan plan = exchange_plan();
      if (plan.shutdown) break;
      execute(plan);
    }
    if (tty_) std::fprintf(stderr, "\r");
    rep_.comm = stats_minus(comm_.stats(), control_);
    report_moe();
    report_rank();
  }

 private:
  // ---- the plan -----------------------------------------------------------------------------
  // Rank 0's plan reaches every rank: a fixed header, then the words when there are any. The
  // bytes are control traffic and are left out of the reported communication.
  StepPlan exchange_plan() {
    StepPlan plan;
    std::vector<int64_t> words;
    if (lead_) {
      plan = core_.next_plan();
      words = plan.encode();
    }
    if (core_.world == 1) return plan;
    const CommStats before = comm_.stats();
    int64_t n = static_cast<int64_t>(words.size());
    comm_.broadcast_bytes(&n, sizeof(n), 0);
    words.resize(n);
    comm_.broadcast_bytes(words.data(), n * sizeof(int64_t), 0);
    stats_add(control_, stats_minus(comm_.stats(), before));
    return lead_ ? plan : StepPlan::decode(words);
  }

  void execute(const StepPlan& plan) {
    for (int64_t id : plan.leave) retire(id, true);
    if (!plan.join.empty()) {
      const auto t0 = Clock::now();
      for (const auto& j : plan.join) {
        model_.kv().add_request(j.id);
        running_.push_back(j.id);
        try {  // the non-finite guard names the layer; say which phase
          if (core_.world > 1 && cfg_.prefill == "context")
            prefill_handoff(j.id, j.prompt);
          else
            prefill_local(j.id, j.prompt);
        } catch (const NonFiniteError& e) {
          fail("prefill: {}", e.what());
        }
        core_.prefills += lead_ ? 1 : 0;
      }
      if (lead_) add_ms(&GenerateResult::prefill_ms, ms_since(t0));
      retire_done();
    }
    if (!running_.empty()) decode_step();
    core_.kv_used[map_.rank] = model_.kv().used_blocks();
  }

  // Rank 0 samples; everyone receives the same ids so that all ranks step in lockstep. A
  // negative id -(t+1) means token t ended its request (length, end of sequence). `drawn`: the
  // ids sampled on the device (then logits holds rows only when some request keeps them).
  void pick(const Tensor& logits, const std::vector<int64_t>& reqs,
            const std::vector<int>* drawn = nullptr) {
    std::vector<int32_t> ids(reqs.size());
    if (lead_) {
      for (size_t i = 0; i < reqs.size(); ++i) {
        const float* lr =
            logits.numel() > 0 ? logits.ptr() + static_cast<int64_t>(i) * mc_.vocab_size : nullptr;
        auto req = core_.find(reqs[i]);
        const RequestSpec& spec = req->spec();
        const int t = drawn          ? (*drawn)[i]
                      : spec.sampler ? spec.sampler->sample(lr, mc_.vocab_size)
                                     : argmax(lr, mc_.vocab_size);
        req->push(t, spec.keep_logits ? lr : nullptr, mc_.vocab_size);
        const auto& eos = mc_.eos_token_ids;
        const bool is_eos = !spec.ignore_eos && std::find(eos.begin(), eos.end(), t) != eos.end();
        const bool full = static_cast<int>(req->tokens().size()) >= spec.max_new_tokens;
        if (is_eos || full) req->finish(is_eos ? FinishReason::Eos : FinishReason::Length);
        ids[i] = (is_eos || full) ? -(t + 1) : t;
        core_.tokens++;
      }
    }
    comm_.broadcast_bytes(ids.data(), ids.size() * sizeof(int32_t), 0);
    for (size_t i = 0; i < reqs.size(); ++i) {
      last_[reqs[i]] = ids[i] < 0 ? -ids[i] - 1 : ids[i];
      if (ids[i] < 0) done_.push_back(reqs[i]);
    }
  }

  void retire_done() {
    for (int64_t id : done_) retire(id, false);
    done_.clear();
  }

  // A request leaves the batch: its KV goes back to the pool.
  void retire(int64_t id, bool cancelled) {
    auto it = std::find(running_.begin(), running_.end(), id);
    if (it == running_.end()) return;
    running_.erase(it);
    rep_.kv_tokens += model_.kv().local_tokens(id);
    rep_.kv_blocks += model_.kv().local_blocks(id);
    if (id < cfg_.record_requests) frozen_blocks_[id] = model_.kv().local_blocks(id);
    model_.kv().free_request(id);
    last_.erase(id);
    if (lead_) {
      if (cancelled) core_.find(id)->finish(FinishReason::Cancelled);
      core_.released(id);
    }
  }

  // Positions of a prompt of n tokens whose blocks live on CP rank cp_rank.
  std::vector<int> owned_positions(int n, int cp_rank) const {
    std::vector<int> pos;
    for (int p = 0; p < n; ++p)
      if ((p / cfg_.tokens_per_block) % cfg_.cp == cp_rank) pos.push_back(p);
    return pos;
  }

  // The context model on rank 0 runs the prompt, then hands every KV block to the ranks that
  // own it (block b -> CP rank b % cp) with one all-to-all; only owned blocks travel, to every
  // TP (and DP) rank of that CP rank.
  // A prompt prefilled on this rank: reserve its KV rows, run it, sample.
  void prefill_local(int64_t id, const std::vector<int>& prompt) {
    const std::vector<SeqStep> step = {SeqStep{id, prompt, 0}};
    model_.reserve_kv(step);
    forward_pick(step, {id});
  }

  // One forward over `step` (sequence i is request reqs[i]) and the pick of the next ids: on a
  // GPU sampled on the device (only the ids come back, the logits too when a request keeps
  // them), else from the host logits.
  void forward_pick(const std::vector<SeqStep>& step, const std::vector<int64_t>& reqs) {
    if (!device_sampling_) {
      pick(model_.forward(step, false), reqs);
      return;
    }
    std::vector<SampleRow> rows(reqs.size());
    bool keep = false;
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto req = core_.find(reqs[i]);
      const RequestSpec& spec = req->spec();
      keep = keep || spec.keep_logits;
      if (spec.sampler) {
        const SamplingConfig& sc = spec.sampler->config();
        rows[i].temperature = sc.temperature;
        rows[i].top_p = sc.top_p;
        rows[i].top_k = sc.top_k;
        rows[i].seed = sc.seed;
      }
      rows[i].stream = spec.sample_stream;
      rows[i].counter = req->tokens().size();
    }
    Tensor logits;
    const std::vector<int> drawn = model_.forward_sample(step, rows, keep ? &logits : nullptr);
    pick(logits, reqs, &drawn);
  }

  void prefill_handoff(int64_t r, const std::vector<int>& prompt) {
    const int n = static_cast<int>(prompt.size());
    const int W = mc_.kv_lora_rank + mc_.qk_rope_head_dim, NL = mc_.num_hidden_layers;
    Tensor logits;
    std::vector<float> send;
    std::vector<size_t> sc(core_.world, 0), rc(core_.world, 0);
    if (lead_) {
      ctx_->kv().add_request(r);
      const std::vector<SeqStep> step = {SeqStep{r, prompt, 0}};
      ctx_->reserve_kv(step);  // the caller reserves a step's KV rows before running it
      logits = ctx_->forward(step, false);
      for (int j = 0; j < core_.world; ++j) {
        const Mapping peer(core_.world, j, cfg_.tp, cfg_.cp, cfg_.ep > 1);
        const std::vector<int> pos = owned_positions(n, peer.cp_rank());
        for (int l = 0; l < NL; ++l)
          for (int p : pos) {
            const float* row = ctx_->kv().row(l, r, p);
            send.insert(send.end(), row, row + W);
          }
        sc[j] = static_cast<size_t>(NL) * pos.size() * W;
      }
      ctx_->kv().free_request(r);
    }
    const std::vector<int> mine = owned_positions(n, map_.cp_rank());
    rc[0] = static_cast<size_t>(NL) * mine.size() * W;
    std::vector<float> recv(rc[0]);
    comm_.all_to_all_v(send.data(), sc, recv.data(), rc);
    for (int p = 0; p < n; ++p) model_.kv().append(r, p);
    // The context model's fp32 rows go in through kv_write at this rank's slots: copied into an
    // fp32 pool, quantised into an FP8 one as a decode rank's own prefill would.
    std::vector<int64_t> slots;
    for (int p : mine) slots.push_back(model_.kv().slot(r, p));
    const int L = mc_.kv_lora_rank, R = mc_.qk_rope_head_dim, m = static_cast<int>(mine.size());
    for (int l = 0; l < NL && m > 0; ++l) {
      const int64_t shape[2] = {m, W};
      const TensorView rows = TensorView::make(recv.data() + static_cast<size_t>(l) * m * W,
                                               DType::F32, Device::cpu(), shape, 2);
      model_.ops().kv_write(model_.kv().layer_pool(l), rows, W, m, L, R, TensorView{},
                            slots.data());
    }
    pick(logits, {r});
  }

  // ---- decode -------------------------------------------------------------------------------
  void decode_step() {
    std::vector<SeqStep> batch;
    for (int64_t r : running_)
      batch.push_back(SeqStep{r, {last_.at(r)}, model_.kv().global_len(r)});
    const auto ts = Clock::now();
    const CommStats before = comm_.stats();
    model_.set_step(steps_);
    // A ready update switches a few layers per step; it was started at least one step ago, so
    // the worker had a whole step to run in the background.
    if (model_.eplb_pending() && steps_ > update_started_) {
      double waited = 0;
      model_.eplb_apply(cfg_.eplb_layers_per_step, &waited);
      if (lead_) {
        std::lock_guard lk(core_.report_mu);
        if (waited > 0.05) {
          core_.report.eplb_late++;
          core_.report.eplb_wait_ms += waited;
        }
      }
      if (lead_) publish_balance();
    }
    try {
      model_.reserve_kv(batch);
      forward_pick(batch, running_);
    } catch (const NonFiniteError& e) {
      fail("decode step {}: {}", steps_, e.what());
    }
    steps_++;
    if (cfg_.eplb_interval > 0 && steps_ % cfg_.eplb_interval == 0 && !model_.eplb_pending()) {
      eplb_update_estimate();
      model_.eplb_start_update(estimate_);
      update_started_ = steps_;
    }
    stats_add(decode_comm_, stats_minus(comm_.stats(), before));
    if (lead_) {
      const double ms = ms_since(ts);
      std::lock_guard lk(core_.report_mu);
      core_.report.decode_ms += ms;
      core_.report.decode_steps = steps_;
      core_.report.decode_tokens += static_cast<int>(batch.size());
      if (cfg_.record_requests > 0) core_.report.step_ms.push_back(ms);
      core_.steps++;
    }
    for (int64_t r = 0; r < cfg_.record_requests; ++r) {
      auto f = frozen_blocks_.find(r);
      rep_.blocks_per_step.push_back(f != frozen_blocks_.end()    ? f->second
                                     : model_.kv().has_request(r) ? model_.kv().local_blocks(r)
                                                                  : 0);
    }
    retire_done();
    if (tty_ && steps_ % 8 == 0) std::fprintf(stderr, "\rdecode step %d", steps_);
  }

  void add_ms(double GenerateResult::*field, double ms) {
    std::lock_guard lk(core_.report_mu);
    core_.report.*field += ms;
  }

  // ---- EPLB ---------------------------------------------------------------------------------
  int num_moe() const { return static_cast<int>(model_.moe_layers().size()); }

  void eplb_setup() {
    const int M = num_moe(), E = mc_.n_routed_experts;
    if (!cfg_.eplb_placement.empty()) {
      PlacementSet ps = placement_read(cfg_.eplb_placement, E);
      HELIX_CHECK(static_cast<int>(ps.layers.size()) == M,
                  "{}: {} layers but the model has {} MoE layers", cfg_.eplb_placement,
                  ps.layers.size(), M);
      model_.eplb_install(ps.layers);
    } else if (cfg_.eplb_interval > 0 || cfg_.eplb_slots > 0) {
      // Slots alone: a static placement with redundant experts; with an interval it evolves.
      // Start from the planner's answer for a flat load over the requested slots.
      const int S = cfg_.eplb_slots > 0 ? cfg_.eplb_slots : E;
      model_.eplb_install(
          eplb_plan(LoadMatrix(M, std::vector<double>(E, 1.0)), S, core_.world).layers);
    }
    estimate_.assign(M, std::vector<double>(E, 0.0));
    seen_.assign(M, std::vector<int64_t>(E, 0));
  }

  // The balance of the last applied update of every MoE layer, for /metrics.
  void publish_balance() {
    std::lock_guard lk(core_.mu);
    const auto& layers = model_.moe_layers();
    for (const auto& u : model_.eplb_updates()) {
      const size_t i = std::find(layers.begin(), layers.end(), u.layer) - layers.begin();
      if (i < core_.eplb_balance.size()) core_.eplb_balance[i] = u.after;
    }
  }

  // Per-MoE-layer counts [M][E] of every rank: EP ranks route disjoint token slices and are
  // summed with one all-reduce; without EP every rank routes every token.
  std::vector<std::vector<double>> global_counts(const std::vector<std::vector<int64_t>>& per_layer,
                                                 const std::vector<std::vector<int64_t>>* minus) {
    const int M = num_moe(), E = mc_.n_routed_experts;
    std::vector<float> c(static_cast<size_t>(M) * E);
    for (int i = 0; i < M; ++i)
      for (int e = 0; e < E; ++e)
        c[static_cast<size_t>(i) * E + e] =
            static_cast<float>(per_layer[model_.moe_layers()[i]][e] - (minus ? (*minus)[i][e] : 0));
    if (cfg_.ep > 1 && core_.world > 1) comm_.all_reduce_sum(c.data(), c.size());
    std::vector<std::vector<double>> out(M, std::vector<double>(E));
    for (int i = 0; i < M; ++i)
      for (int e = 0; e < E; ++e) out[i][e] = c[static_cast<size_t>(i) * E + e];
    return out;
  }

  // Decayed load estimate: alpha * previous + the routed pairs since the last update.
  void eplb_update_estimate() {
    const auto& counts = model_.stats().expert_tokens;
    const auto window = global_counts(counts, &seen_);
    for (int i = 0; i < num_moe(); ++i)
      for (size_t e = 0; e < window[i].size(); ++e) {
        estimate_[i][e] = cfg_.eplb_alpha * estimate_[i][e] + window[i][e];
        seen_[i][e] = counts[model_.moe_layers()[i]][e];
      }
  }

  // ---- reports ------------------------------------------------------------------------------
  void report_moe() {
    const int M = num_moe();
    if (M == 0) return;
    const ModelStats& st = model_.stats();
    auto load = global_counts(st.expert_tokens, nullptr);
    auto sent = global_counts(st.dispatch_sent, nullptr);
    auto recv = global_counts(st.dispatch_recv, nullptr);
    const auto& layers = model_.moe_layers();
    std::vector<float> moved(M, 0.0f);
    for (const auto& u : model_.eplb_updates())
      moved[std::find(layers.begin(), layers.end(), u.layer) - layers.begin()] +=
          static_cast<float>(u.bytes_moved);
    if (core_.world > 1) comm_.all_reduce_sum(moved.data(), moved.size());
    if (!lead_) return;
    std::lock_guard lk(core_.report_mu);
    GenerateResult& res = core_.report;
    res.eplb.assign(M, {});
    for (int i = 0; i < M; ++i) {
      res.eplb[i].layer = layers[i];
      res.eplb[i].bytes_moved = static_cast<uint64_t>(moved[i]);
      if (cfg_.ep > 1)
        res.final_balance.push_back(
            placement_balance(model_.placement(i), load[i]).max_over_mean());
    }
    for (const auto& u : model_.eplb_updates()) {
      auto& lr = res.eplb[std::find(layers.begin(), layers.end(), u.layer) - layers.begin()];
      lr.updates++;
      lr.before.push_back(u.before);
      lr.after.push_back(u.after);
    }
    res.expert_load = std::move(load);
    res.dispatch_sent = std::move(sent);
    res.dispatch_recv = std::move(recv);
  }

  void report_rank() {
    rep_.attn_ms = model_.stats().attn_ms;
    rep_.ffn_ms = model_.stats().ffn_ms;
    rep_.comm_ms = model_.stats().comm_ms;
    rep_.decode_comm = decode_comm_;
    // Same keys as the whole-run counters (a kind unused while decoding reads 0).
    for (const auto& [k, v] : rep_.comm.calls) {
      rep_.decode_comm.calls[k] += 0;
      rep_.decode_comm.bytes_sent[k] += 0;
      rep_.decode_comm.bytes_received[k] += 0;
    }
    if (cfg_.comm == "mpi" && core_.world > 1) {
      // Every rank's report, gathered with one all_gather of fixed-size float records.
      std::vector<float> mine = report_encode(rep_);
      std::vector<float> all(mine.size() * core_.world);
      comm_.all_gather(mine.data(), all.data(), mine.size());
      std::lock_guard lk(core_.report_mu);
      for (int i = 0; i < core_.world; ++i)
        core_.report.ranks[i] =
            report_decode(all.data() + i * mine.size(), steps_ * cfg_.record_requests);
    } else {
      std::lock_guard lk(core_.report_mu);
      core_.report.ranks[map_.rank] = rep_;
    }
  }

  EngineCore& core_;
  const EngineConfig& cfg_;
  const ModelConfig& mc_;
  Communicator& comm_;
  Mapping map_;
  DeepseekModel model_;
  const bool lead_;
  const bool tty_ = core_.cfg.progress && lead_ && isatty(STDERR_FILENO);
  // One GPU rank (the CUDA path is single-rank): sample on the device.
  const bool device_sampling_ =
      !model_.ops().device().is_cpu() && core_.world == 1 && cfg_.dev.sample_on_device;
  std::vector<int64_t> running_;          // the decode batch, in admission order
  std::map<int64_t, int> last_;           // last sampled id of each running request
  std::vector<int64_t> done_;             // finished by the last pick, retired after the step
  std::map<int64_t, int> frozen_blocks_;  // recorded requests' local blocks when they ended
  RankReport rep_;
  CommStats control_, decode_comm_;
  int steps_ = 0, update_started_ = 0;
  LoadMatrix estimate_;                     // [MoE layer][expert] decayed load
  std::vector<std::vector<int64_t>> seen_;  // routed counts already in the estimate
  std::unique_ptr<Communicator> ctx_comm_;
  std::unique_ptr<DeepseekModel> ctx_;  // rank 0's context model (disaggregated prefill)
};

}  // namespace

void rank_main(EngineCore& core, Communicator& comm) {
  RankRunner(core, comm).run(core.t_start);
}

}  // namespace helix
