#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <new>
#include <thread>

#include <unistd.h>

#include "core/checked.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/finite.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "model/safetensors.h"
#include "model/weights_check.h"
#include "moe/eplb.h"
#include "parallel/mapping.h"

namespace helix {

namespace {

int blocks_needed(int64_t tokens, int64_t tpb, int64_t cp) {
  const int64_t nb = (tokens + tpb - 1) / tpb;
  return static_cast<int>((nb + cp - 1) / cp);
}

void check_prompts(const ModelConfig& mc, const std::vector<std::vector<int>>& prompts,
                   int max_new) {
  HELIX_CHECK(!prompts.empty(), "no prompt given");
  for (const auto& p : prompts) {
    HELIX_CHECK(!p.empty(), "empty prompt: give at least one token id");
    for (int t : p)
      HELIX_CHECK(t >= 0 && t < mc.vocab_size, "token id {} is out of range [0, {})", t,
                  mc.vocab_size);
    HELIX_CHECK(
        static_cast<int64_t>(p.size()) + std::max(max_new - 1, 0) <= mc.max_position_embeddings,
        "prompt of {} tokens plus {} new tokens is longer than max_position_embeddings "
        "({})",
        p.size(), max_new, mc.max_position_embeddings);
  }
}

CommStats diff(const CommStats& a, const CommStats& b) {
  CommStats d = a;
  for (auto& [k, v] : d.bytes_sent) v -= b.bytes_sent.count(k) ? b.bytes_sent.at(k) : 0;
  for (auto& [k, v] : d.bytes_received) v -= b.bytes_received.count(k) ? b.bytes_received.at(k) : 0;
  for (auto& [k, v] : d.calls) v -= b.calls.count(k) ? b.calls.at(k) : 0;
  return d;
}

// Fixed-layout float encoding of a RankReport, so MPI ranks can all_gather them.
const char* kKinds[] = {"all_reduce", "all_gather",   "reduce_scatter",
                        "all_to_all", "all_to_all_v", "broadcast"};
void put_u64(std::vector<float>& v, uint64_t x) {
  v.push_back(static_cast<float>(x >> 24));
  v.push_back(static_cast<float>(x & 0xFFFFFF));
}
uint64_t get_u64(const float*& p) {
  uint64_t hi = static_cast<uint64_t>(p[0]), lo = static_cast<uint64_t>(p[1]);
  p += 2;
  return (hi << 24) | lo;
}
std::vector<float> report_encode(const RankReport& r) {
  std::vector<float> v = {float(r.rank), float(r.cp_rank), float(r.tp_rank), float(r.kv_tokens),
                          float(r.kv_blocks)};
  for (const CommStats* s : {&r.comm, &r.decode_comm})
    for (const char* k : kKinds) {
      put_u64(v, s->bytes_sent.count(k) ? s->bytes_sent.at(k) : 0);
      put_u64(v, s->bytes_received.count(k) ? s->bytes_received.at(k) : 0);
      put_u64(v, s->calls.count(k) ? s->calls.at(k) : 0);
    }
  for (double t : {r.attn_ms, r.ffn_ms, r.comm_ms}) v.push_back(static_cast<float>(t));
  for (int b : r.blocks_per_step) v.push_back(static_cast<float>(b));
  return v;
}
RankReport report_decode(const float* p, int steps) {
  RankReport r;
  r.rank = int(p[0]);
  r.cp_rank = int(p[1]);
  r.tp_rank = int(p[2]);
  r.kv_tokens = int(p[3]);
  r.kv_blocks = int(p[4]);
  p += 5;
  for (CommStats* s : {&r.comm, &r.decode_comm})
    for (const char* k : kKinds) {
      uint64_t sent = get_u64(p), recv = get_u64(p), calls = get_u64(p);
      if (calls == 0) continue;
      s->bytes_sent[k] = sent;
      s->bytes_received[k] = recv;
      s->calls[k] = calls;
    }
  r.attn_ms = p[0];
  r.ffn_ms = p[1];
  r.comm_ms = p[2];
  p += 3;
  for (int i = 0; i < steps; ++i) r.blocks_per_step.push_back(int(p[i]));
  return r;
}

// Everything one generate() call shares between its ranks.
struct Job {
  const EngineConfig& cfg;
  const ModelConfig& mc;
  const WeightStore& ws;
  const std::vector<std::vector<int>>& prompts;
  const SamplingConfig& sampling;
  int world = 1;
  int kv_blocks = 0;
  const PlacementSet* placement = nullptr;  // --eplb-placement, read before the weights
  Clock::time_point t_load;
  GenerateResult& res;  // written by rank 0 (ranks[] by every rank, under mu)
  std::mutex mu;
};

// One rank of the deployment: its model, its KV, its share of the decode loop. Every rank runs
// the same control flow (SPMD); rank 0 samples and broadcasts the ids.
class RankRunner {
 public:
  RankRunner(Job& job, Communicator& comm)
      : job_(job),
        cfg_(job.cfg),
        mc_(job.mc),
        comm_(comm),
        map_(job.world, comm.rank(), cfg_.tp, cfg_.cp, cfg_.ep > 1),
        model_(mc_, job.ws, map_, comm, cfg_.tokens_per_block, job.kv_blocks),
        lead_(comm.rank() == 0),
        sampler_(job.sampling),
        R_(static_cast<int>(job.prompts.size())),
        last_(R_),
        produced_(R_, 0),
        done_(R_, 0) {
    if (lead_) job_.res.load_ms = ms_since(job_.t_load);
    model_.set_hopb(cfg_.hopb);
    if (lead_) job_.res.hopb = model_.hopb();
    rep_.rank = map_.rank;
    rep_.cp_rank = map_.cp_rank();
    rep_.tp_rank = map_.tp_rank();
  }

  void run() {
    eplb_setup();
    auto t0 = Clock::now();
    try {
      prefill();
    } catch (const NonFiniteError& e) {
      fail("prefill: {}", e.what());
    }
    if (lead_) job_.res.prefill_ms = ms_since(t0);
    const CommStats after_prefill = comm_.stats();
    t0 = Clock::now();
    try {
      decode();
    } catch (const NonFiniteError& e) {
      fail("decode step {}: {}", steps_, e.what());
    }
    for (int r = 0; r < R_; ++r) {
      rep_.kv_tokens += model_.kv().local_tokens(r);
      rep_.kv_blocks += model_.kv().local_blocks(r);
      model_.kv().free_request(r);  // a finished request gives its blocks back
    }
    if (lead_) {
      job_.res.decode_ms = ms_since(t0);
      job_.res.decode_steps = steps_;
      job_.res.decode_tokens = tokens_;
    }
    rep_.comm = comm_.stats();
    rep_.decode_comm = diff(rep_.comm, after_prefill);
    report_moe();
    report_rank();
  }

 private:
  // Rank 0 samples; everyone receives the same ids so that all ranks step in lockstep.
  void pick(const Tensor& logits, const std::vector<int>& reqs) {
    std::vector<int32_t> ids(reqs.size());
    if (lead_) {
      for (size_t i = 0; i < reqs.size(); ++i) {
        const float* lr = logits.ptr() + static_cast<int64_t>(i) * mc_.vocab_size;
        ids[i] = sampler_.sample(lr, mc_.vocab_size);
        if (cfg_.keep_logits) {
          auto& kept = job_.res.logits[reqs[i]];
          kept.insert(kept.end(), lr, lr + mc_.vocab_size);
        }
      }
    }
    comm_.broadcast_bytes(ids.data(), ids.size() * sizeof(int32_t), 0);
    const auto& eos = mc_.eos_token_ids;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const int r = reqs[i];
      last_[r] = ids[i];
      produced_[r]++;
      if (lead_) job_.res.outputs[r].push_back(ids[i]);
      const bool stop =
          !job_.sampling.ignore_eos && std::find(eos.begin(), eos.end(), ids[i]) != eos.end();
      if (produced_[r] >= job_.sampling.max_new_tokens || stop) done_[r] = 1;
    }
  }

  // ---- prefill ------------------------------------------------------------------------------
  void prefill() {
    // The context (prefill) model of disaggregated serving: one rank, all heads, no Helix.
    const bool disaggregated = job_.world > 1 && cfg_.prefill == "context";
    if (disaggregated && lead_) {
      int blocks = 0;
      for (const auto& p : job_.prompts)
        blocks =
            std::max(blocks, blocks_needed(static_cast<int>(p.size()), cfg_.tokens_per_block, 1));
      ctx_comm_ = make_single_comm();
      ctx_ = std::make_unique<DeepseekModel>(mc_, job_.ws, Mapping(1, 0, 1, 1, false), *ctx_comm_,
                                             cfg_.tokens_per_block, blocks);
    }
    for (int r = 0; r < R_; ++r) {
      model_.kv().add_request(r);
      if (job_.sampling.max_new_tokens == 0) {
        done_[r] = 1;
      } else if (disaggregated) {
        prefill_handoff(r);
      } else {
        pick(model_.forward({SeqStep{r, job_.prompts[r], 0}}, false), {r});
      }
    }
    ctx_.reset();
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
  void prefill_handoff(int r) {
    const int n = static_cast<int>(job_.prompts[r].size());
    const int W = mc_.kv_lora_rank + mc_.qk_rope_head_dim, NL = mc_.num_hidden_layers;
    Tensor logits;
    std::vector<float> send;
    std::vector<size_t> sc(job_.world, 0), rc(job_.world, 0);
    if (lead_) {
      ctx_->kv().add_request(r);
      logits = ctx_->forward({SeqStep{r, job_.prompts[r], 0}}, false);
      for (int j = 0; j < job_.world; ++j) {
        const Mapping peer(job_.world, j, cfg_.tp, cfg_.cp, cfg_.ep > 1);
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
    size_t off = 0;
    for (int l = 0; l < NL; ++l)
      for (int p : mine) {
        std::copy(recv.begin() + off, recv.begin() + off + W, model_.kv().row(l, r, p));
        off += W;
      }
    pick(logits, {r});
  }

  // ---- decode -------------------------------------------------------------------------------
  void decode() {
    const bool tty = cfg_.progress && lead_ && isatty(STDERR_FILENO);
    int update_started = 0;
    while (true) {
      std::vector<SeqStep> batch;
      std::vector<int> reqs;
      for (int r = 0; r < R_; ++r) {
        if (done_[r]) continue;
        batch.push_back(SeqStep{r, {last_[r]}, model_.kv().global_len(r)});
        reqs.push_back(r);
      }
      if (batch.empty()) break;
      const auto ts = Clock::now();
      model_.set_step(steps_);
      // A ready update switches a few layers per step; it was started at least one step ago,
      // so the worker had a whole step to run in the background.
      if (model_.eplb_pending() && steps_ > update_started) {
        double waited = 0;
        model_.eplb_apply(cfg_.eplb_layers_per_step, &waited);
        if (waited > 0.05 && lead_) {
          job_.res.eplb_late++;
          job_.res.eplb_wait_ms += waited;
        }
      }
      pick(model_.forward(batch, false), reqs);
      steps_++;
      if (cfg_.eplb_interval > 0 && steps_ % cfg_.eplb_interval == 0 && !model_.eplb_pending()) {
        eplb_update_estimate();
        model_.eplb_start_update(estimate_);
        update_started = steps_;
      }
      if (lead_) job_.res.step_ms.push_back(ms_since(ts));
      tokens_ += static_cast<int>(batch.size());
      for (int r = 0; r < R_; ++r) rep_.blocks_per_step.push_back(model_.kv().local_blocks(r));
      if (tty && steps_ % 8 == 0) std::fprintf(stderr, "\rdecode step %d", steps_);
    }
    if (tty) std::fprintf(stderr, "\r");
  }

  // ---- EPLB ---------------------------------------------------------------------------------
  int num_moe() const { return static_cast<int>(model_.moe_layers().size()); }

  void eplb_setup() {
    const int M = num_moe(), E = mc_.n_routed_experts;
    if (job_.placement) {
      const PlacementSet& ps = *job_.placement;
      HELIX_CHECK(static_cast<int>(ps.layers.size()) == M,
                  "{}: {} layers but the model has {} MoE layers", cfg_.eplb_placement,
                  ps.layers.size(), M);
      model_.eplb_install(ps.layers);
    } else if (cfg_.eplb_interval > 0 || cfg_.eplb_slots > 0) {
      // Slots alone: a static placement with redundant experts; with an interval it evolves.
      // Start from the planner's answer for a flat load over the requested slots.
      const int S = cfg_.eplb_slots > 0 ? cfg_.eplb_slots : E;
      model_.eplb_install(
          eplb_plan(LoadMatrix(M, std::vector<double>(E, 1.0)), S, job_.world).layers);
    }
    estimate_.assign(M, std::vector<double>(E, 0.0));
    seen_.assign(M, std::vector<int64_t>(E, 0));
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
    if (cfg_.ep > 1 && job_.world > 1) comm_.all_reduce_sum(c.data(), c.size());
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
    if (job_.world > 1) comm_.all_reduce_sum(moved.data(), moved.size());
    if (!lead_) return;
    GenerateResult& res = job_.res;
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
    if (cfg_.comm == "mpi" && job_.world > 1) {
      // Every rank's report, gathered with one all_gather of fixed-size float records.
      std::vector<float> mine = report_encode(rep_);
      std::vector<float> all(mine.size() * job_.world);
      comm_.all_gather(mine.data(), all.data(), mine.size());
      for (int i = 0; i < job_.world; ++i)
        job_.res.ranks[i] = report_decode(all.data() + i * mine.size(), steps_ * R_);
    } else {
      std::lock_guard<std::mutex> lock(job_.mu);
      job_.res.ranks[map_.rank] = rep_;
    }
  }

  Job& job_;
  const EngineConfig& cfg_;
  const ModelConfig& mc_;
  Communicator& comm_;
  Mapping map_;
  DeepseekModel model_;
  const bool lead_;
  Sampler sampler_;
  const int R_;
  std::vector<int> last_, produced_;
  std::vector<char> done_;
  RankReport rep_;
  int steps_ = 0, tokens_ = 0;
  LoadMatrix estimate_;                     // [MoE layer][expert] decayed load
  std::vector<std::vector<int64_t>> seen_;  // routed counts already in the estimate
  std::unique_ptr<Communicator> ctx_comm_;
  std::unique_ptr<DeepseekModel> ctx_;  // rank 0's context model (disaggregated prefill)
};

}  // namespace

namespace {

// Most ranks one process may run as threads: a few per hardware thread (ranks mostly wait in
// collectives), never fewer than 64 so tests of wide layouts run anywhere.
int max_thread_ranks() {
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::clamp(8 * hw, 64, 4096);
}

// Physical memory in bytes (0 when unknown).
int64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

// Every flag checked against the model and the machine before anything is loaded or allocated.
// Returns the world size.
int check_layout(const EngineConfig& cfg, const ModelConfig& mc, const SamplingConfig& sampling) {
  sampling_validate(sampling);
  HELIX_CHECK(sampling.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  HELIX_CHECK(cfg.tp >= 1 && cfg.cp >= 1, "--tp and --cp must be >= 1");
  HELIX_CHECK(cfg.tokens_per_block >= 1 && cfg.tokens_per_block <= mc.max_position_embeddings,
              "--tokens-per-block must be in [1, max_position_embeddings = {}]",
              mc.max_position_embeddings);
  HELIX_CHECK(cfg.ep >= 1, "--ep must be >= 1");
  HELIX_CHECK(cfg.kv_blocks >= 0, "--kv-blocks must be >= 0");
  HELIX_CHECK(cfg.prefill == "context" || cfg.prefill == "helix",
              "unknown prefill mode '{}' (context, helix)", printable(cfg.prefill));
  HELIX_CHECK(cfg.comm == "threads" || cfg.comm == "mpi", "unknown --comm '{}' (threads, mpi)",
              printable(cfg.comm));
  HELIX_CHECK(cfg.tp <= mc.num_attention_heads && mc.num_attention_heads % cfg.tp == 0,
              "--tp {} must divide num_attention_heads ({})", cfg.tp, mc.num_attention_heads);
  const int64_t grid = checked_mul(cfg.tp, cfg.cp, "--tp x --cp");
  const int64_t world = std::max<int64_t>(grid, cfg.ep);
  if (cfg.comm == "threads")
    HELIX_CHECK(world <= max_thread_ranks(),
                "--tp {} x --cp {} (--ep {}) needs {} ranks; the threads backend runs at most {} "
                "on this machine (use --comm mpi)",
                cfg.tp, cfg.cp, cfg.ep, world, max_thread_ranks());
  HELIX_CHECK(world <= (1 << 20), "--tp {} x --cp {} (--ep {}) = {} ranks is too many", cfg.tp,
              cfg.cp, cfg.ep, world);
  HELIX_CHECK(cfg.ep == 1 || cfg.ep % grid == 0,
              "--ep {} must be 1 or a multiple of --tp {} x --cp {}", cfg.ep, cfg.tp, cfg.cp);
  const int E = mc.n_routed_experts;
  HELIX_CHECK(cfg.ep == 1 || (E > 0 && E % cfg.ep == 0),
              "--ep {}: n_routed_experts ({}) must be a multiple of it", cfg.ep, E);
  HELIX_CHECK(
      cfg.ep > 1 || (cfg.eplb_placement.empty() && cfg.eplb_interval == 0 && cfg.eplb_slots == 0),
      "--eplb-placement, --eplb-slots and --eplb-interval need expert parallelism (--ep E > 1)");
  HELIX_CHECK(cfg.eplb_interval >= 0 && cfg.eplb_slots >= 0, "EPLB sizes must be >= 0");
  HELIX_CHECK(cfg.eplb_slots == 0 || cfg.eplb_placement.empty(),
              "--eplb-slots and --eplb-placement exclude each other (the file sets the slots)");
  if (cfg.eplb_slots > 0)
    HELIX_CHECK(cfg.eplb_slots >= E && cfg.eplb_slots % world == 0 &&
                    static_cast<int64_t>(cfg.eplb_slots) <= static_cast<int64_t>(E) * world,
                "--eplb-slots {} must be a multiple of the {} ranks in [{}, {}] (experts .. "
                "experts x ranks)",
                cfg.eplb_slots, world, E, static_cast<int64_t>(E) * world);
  return static_cast<int>(world);
}

// KV blocks per rank, and a check that they fit the machine's memory.
int plan_kv_blocks(const EngineConfig& cfg, const ModelConfig& mc,
                   const std::vector<std::vector<int>>& prompts, const SamplingConfig& sampling) {
  // Blocks these requests can ever use: their tokens, capped by max_position_embeddings. More
  // would only be allocated and zeroed, never touched, so a larger --kv-blocks is clamped.
  int64_t useful = 0;
  for (const auto& p : prompts) {
    const int64_t tokens = std::min<int64_t>(
        static_cast<int64_t>(p.size()) + sampling.max_new_tokens, mc.max_position_embeddings);
    useful = checked_add(useful, blocks_needed(tokens, cfg.tokens_per_block, cfg.cp), "KV blocks");
  }
  const int64_t kv_blocks = cfg.kv_blocks > 0 ? std::min<int64_t>(cfg.kv_blocks, useful) : useful;
  const int64_t bytes = checked_product({kv_blocks, cfg.tokens_per_block, mc.num_hidden_layers,
                                         int64_t{mc.kv_lora_rank} + mc.qk_rope_head_dim, 4},
                                        "KV cache size");
  const int64_t mem = physical_memory();
  HELIX_CHECK(mem == 0 || bytes <= mem,
              "the KV cache needs {:.1f} GiB per rank ({} blocks of {} tokens) but the machine "
              "has {:.1f} GiB",
              bytes / 1073741824.0, kv_blocks, cfg.tokens_per_block, mem / 1073741824.0);
  return checked_int(kv_blocks, "KV blocks per rank");
}

}  // namespace

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling) {
  const auto t_load = Clock::now();
  const ModelConfig mc = config_load(cfg.model_dir);
  check_prompts(mc, prompts, sampling.max_new_tokens);
  const int world = check_layout(cfg, mc, sampling);
  const int kv_blocks = plan_kv_blocks(cfg, mc, prompts, sampling);
  // The placement file is read and checked against the layout before any weight is loaded.
  std::unique_ptr<PlacementSet> placement;
  if (!cfg.eplb_placement.empty()) {
    placement =
        std::make_unique<PlacementSet>(placement_read(cfg.eplb_placement, mc.n_routed_experts));
    HELIX_CHECK(placement->num_ranks == world, "{}: placement is for {} ranks, the layout has {}",
                printable(cfg.eplb_placement), placement->num_ranks, world);
  }
  const WeightStore ws(cfg.model_dir);
  weights_check_config(mc, ws);
  if (cfg.check_weights) weights_check_finite(ws);
  const int R = static_cast<int>(prompts.size());
  GenerateResult res;
  res.vocab = mc.vocab_size;
  res.outputs.assign(R, {});
  if (cfg.keep_logits) res.logits.assign(R, {});
  res.ranks.resize(world);
  Job job{cfg, mc, ws, prompts, sampling, world, kv_blocks, placement.get(), t_load, res, {}};
  auto run_rank = [&](Communicator& comm) {
    try {
      RankRunner(job, comm).run();
    } catch (const std::bad_alloc&) {
      fail("out of memory while running rank {} of {} (model weights, KV cache or activations)",
           comm.rank(), world);
    }
  };

  if (cfg.comm == "mpi") {
    auto comm = make_mpi_world();
    HELIX_CHECK(comm->size() == world,
                "mpirun started {} processes but --tp {} x --cp {} (--ep {}) needs {}",
                comm->size(), cfg.tp, cfg.cp, cfg.ep, world);
    run_rank(*comm);
    // Outputs are known on rank 0 only; share them so that any rank could report.
    for (int r = 0; r < R; ++r) {
      int32_t n = static_cast<int32_t>(res.outputs[r].size());
      comm->broadcast_bytes(&n, sizeof(n), 0);
      res.outputs[r].resize(n);
      comm->broadcast_bytes(res.outputs[r].data(), n * sizeof(int), 0);
    }
    if (comm->rank() != 0) res.ranks.clear();  // only rank 0 reports
  } else if (cfg.comm == "threads") {
    if (world == 1) {
      auto comm = make_single_comm();
      run_rank(*comm);
    } else {
      run_threads(world, run_rank);
    }
  } else {
    fail("unknown --comm '{}' (threads, mpi)", cfg.comm);
  }
  if (!cfg.eplb_record.empty() && !res.expert_load.empty())
    load_write(cfg.eplb_record, res.expert_load);
  // KV balance of every request across the ranks, at every step.
  for (size_t s = 0; !res.ranks.empty() && s < res.ranks[0].blocks_per_step.size(); ++s) {
    int lo = 1 << 30, hi = 0;
    for (const auto& r : res.ranks) {
      lo = std::min(lo, r.blocks_per_step[s]);
      hi = std::max(hi, r.blocks_per_step[s]);
    }
    res.max_block_spread = std::max(res.max_block_spread, hi - lo);
  }
  return res;
}

std::vector<float> score(const std::string& model_dir, const std::vector<int>& tokens, int* vocab) {
  const ModelConfig mc = config_load(model_dir);
  check_prompts(mc, {tokens}, 1);
  const WeightStore ws(model_dir);
  weights_check_config(mc, ws);
  auto comm = make_single_comm();
  Mapping map(1, 0, 1, 1, false);
  const int tpb = 64;
  DeepseekModel model(mc, ws, map, *comm, tpb,
                      blocks_needed(static_cast<int>(tokens.size()), tpb, 1));
  model.kv().add_request(0);
  Tensor logits;
  try {
    logits = model.forward({SeqStep{0, tokens, 0}}, true);
  } catch (const NonFiniteError& e) {
    fail("score: {}", e.what());
  }
  *vocab = mc.vocab_size;
  return logits.data;
}

}  // namespace helix
