#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>

#include <unistd.h>

#include "core/error.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "model/safetensors.h"
#include "moe/eplb.h"
#include "parallel/mapping.h"

namespace helix {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int blocks_needed(int tokens, int tpb, int cp) {
  const int nb = (tokens + tpb - 1) / tpb;
  return (nb + cp - 1) / cp;
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
std::vector<float> encode(const RankReport& r) {
  std::vector<float> v = {float(r.rank), float(r.cp_rank), float(r.tp_rank), float(r.kv_tokens),
                          float(r.kv_blocks)};
  for (const CommStats* s : {&r.comm, &r.decode_comm})
    for (const char* k : kKinds) {
      put_u64(v, s->bytes_sent.count(k) ? s->bytes_sent.at(k) : 0);
      put_u64(v, s->bytes_received.count(k) ? s->bytes_received.at(k) : 0);
      put_u64(v, s->calls.count(k) ? s->calls.at(k) : 0);
    }
  for (int b : r.blocks_per_step) v.push_back(static_cast<float>(b));
  return v;
}
RankReport decode(const float* p, int steps) {
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
  for (int i = 0; i < steps; ++i) r.blocks_per_step.push_back(int(p[i]));
  return r;
}

}  // namespace

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling) {
  auto t_load = Clock::now();
  const ModelConfig mc = config_load(cfg.model_dir);
  check_prompts(mc, prompts, sampling.max_new_tokens);
  HELIX_CHECK(sampling.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  HELIX_CHECK(cfg.tp >= 1 && cfg.cp >= 1, "--tp and --cp must be >= 1");
  HELIX_CHECK(cfg.tokens_per_block >= 1, "--tokens-per-block must be >= 1");
  const WeightStore ws(cfg.model_dir);
  HELIX_CHECK(cfg.ep >= 1, "--ep must be >= 1");
  HELIX_CHECK(cfg.prefill == "context" || cfg.prefill == "helix",
              "unknown prefill mode '{}' (context, helix)", cfg.prefill);
  HELIX_CHECK(cfg.ep == 1 || cfg.ep % (cfg.tp * cfg.cp) == 0,
              "--ep {} must be 1 or a multiple of --tp {} x --cp {}", cfg.ep, cfg.tp, cfg.cp);
  const int world = std::max(cfg.tp * cfg.cp, cfg.ep);
  int kv_blocks = cfg.kv_blocks;
  if (kv_blocks <= 0) {
    kv_blocks = 0;
    for (const auto& p : prompts)
      kv_blocks += blocks_needed(static_cast<int>(p.size()) + sampling.max_new_tokens,
                                 cfg.tokens_per_block, cfg.cp);
  }
  const int R = static_cast<int>(prompts.size());
  HELIX_CHECK(cfg.ep > 1 || (cfg.eplb_placement.empty() && cfg.eplb_interval == 0),
              "--eplb-placement and --eplb-interval need expert parallelism (--ep)");
  HELIX_CHECK(cfg.eplb_interval >= 0 && cfg.eplb_slots >= 0, "EPLB sizes must be >= 0");
  HELIX_CHECK(cfg.eplb_slots == 0 || cfg.eplb_interval > 0,
              "--eplb-slots takes effect with --eplb-interval");
  GenerateResult res;
  res.vocab = mc.vocab_size;
  res.outputs.assign(R, {});
  if (cfg.keep_logits) res.logits.assign(R, {});
  res.ranks.resize(world);
  std::mutex mu;

  auto run_rank = [&](Communicator& comm) {
    const int rank = comm.rank();
    Mapping map(world, rank, cfg.tp, cfg.cp, cfg.ep > 1);
    DeepseekModel model(mc, ws, map, comm, cfg.tokens_per_block, kv_blocks);
    const bool lead = rank == 0;
    if (lead) res.load_ms = ms_since(t_load);
    Sampler sampler(sampling);
    std::vector<int> last(R), produced(R, 0);
    std::vector<char> done(R, 0);
    std::vector<float> row(mc.vocab_size);
    RankReport rep;
    rep.rank = rank;
    rep.cp_rank = map.cp_rank();
    rep.tp_rank = map.tp_rank();

    // Rank 0 samples; everyone receives the same ids so that all ranks step in lockstep.
    auto pick = [&](const Tensor& logits, const std::vector<int>& reqs) {
      std::vector<int32_t> ids(reqs.size());
      if (lead) {
        for (size_t i = 0; i < reqs.size(); ++i) {
          const float* lr = logits.ptr() + static_cast<int64_t>(i) * mc.vocab_size;
          ids[i] = sampler.sample(lr, mc.vocab_size);
          if (cfg.keep_logits)
            res.logits[reqs[i]].insert(res.logits[reqs[i]].end(), lr, lr + mc.vocab_size);
        }
      }
      comm.broadcast_bytes(ids.data(), ids.size() * sizeof(int32_t), 0);
      for (size_t i = 0; i < reqs.size(); ++i) {
        const int r = reqs[i];
        last[r] = ids[i];
        produced[r]++;
        if (lead) res.outputs[r].push_back(ids[i]);
        const bool eos = !sampling.ignore_eos &&
                         std::find(mc.eos_token_ids.begin(), mc.eos_token_ids.end(), ids[i]) !=
                             mc.eos_token_ids.end();
        if (produced[r] >= sampling.max_new_tokens || eos) done[r] = 1;
      }
    };

    // ---- EPLB set-up --------------------------------------------------------------------------
    const int M = static_cast<int>(model.moe_layers().size()), E = mc.n_routed_experts;
    const bool online = cfg.eplb_interval > 0;
    if (!cfg.eplb_placement.empty()) {
      PlacementSet ps = placement_read(cfg.eplb_placement, E);
      HELIX_CHECK(static_cast<int>(ps.layers.size()) == M,
                  "{}: {} layers but the model has {} MoE layers", cfg.eplb_placement,
                  ps.layers.size(), M);
      model.eplb_install(ps.layers);
    } else if (online) {
      // Start from the planner's answer for a flat load over the requested slots.
      const int S = cfg.eplb_slots > 0 ? cfg.eplb_slots : E;
      LoadMatrix flat(M, std::vector<double>(E, 1.0));
      model.eplb_install(eplb_plan(flat, S, world).layers);
    }
    LoadMatrix estimate(M, std::vector<double>(E, 0.0));
    std::vector<std::vector<int64_t>> seen(M, std::vector<int64_t>(E, 0));
    // Global routed counts since the last update: one all-reduce of [M, E].
    auto window_counts = [&]() {
      std::vector<float> c(static_cast<size_t>(M) * E);
      for (int i = 0; i < M; ++i)
        for (int e = 0; e < E; ++e) {
          const int64_t tot = model.stats().expert_tokens[model.moe_layers()[i]][e];
          c[static_cast<size_t>(i) * E + e] = static_cast<float>(tot - seen[i][e]);
          seen[i][e] = tot;
        }
      if (cfg.ep > 1) comm.all_reduce_sum(c.data(), c.size());  // EP ranks route disjoint tokens
      return c;
    };

    // The context (prefill) model of disaggregated serving: one rank, all heads, no Helix.
    const bool disaggregated = world > 1 && cfg.prefill == "context";
    std::unique_ptr<Communicator> ctx_comm;
    std::unique_ptr<DeepseekModel> ctx;
    if (disaggregated && lead) {
      int blocks = 0;
      for (const auto& p : prompts)
        blocks =
            std::max(blocks, blocks_needed(static_cast<int>(p.size()), cfg.tokens_per_block, 1));
      ctx_comm = make_single_comm();
      ctx = std::make_unique<DeepseekModel>(mc, ws, Mapping(1, 0, 1, 1, false), *ctx_comm,
                                            cfg.tokens_per_block, blocks);
    }
    auto t0 = Clock::now();
    for (int r = 0; r < R; ++r) {
      model.kv().add_request(r);
      if (sampling.max_new_tokens == 0) {
        done[r] = 1;
        continue;
      }
      if (!disaggregated) {
        Tensor logits = model.forward({SeqStep{r, prompts[r], 0}}, false);
        pick(logits, {r});
        continue;
      }
      // Disaggregated prefill: the context model on rank 0 runs the prompt (no Helix), then
      // hands every KV block to the ranks that own it (block b -> CP rank b % cp) with one
      // all-to-all; only owned blocks travel, each to every TP rank of its CP rank.
      const int n = static_cast<int>(prompts[r].size()), W = mc.kv_lora_rank + mc.qk_rope_head_dim;
      const int NL = mc.num_hidden_layers;
      auto owned = [&](int cp_rank) {
        std::vector<int> pos;
        for (int p = 0; p < n; ++p)
          if ((p / cfg.tokens_per_block) % cfg.cp == cp_rank) pos.push_back(p);
        return pos;
      };
      Tensor logits;
      std::vector<float> send;
      std::vector<size_t> sc(world, 0), rc(world, 0);
      if (lead) {
        ctx->kv().add_request(r);
        logits = ctx->forward({SeqStep{r, prompts[r], 0}}, false);
        for (int j = 0; j < world; ++j) {
          const std::vector<int> pos =
              owned(Mapping(world, j, cfg.tp, cfg.cp, cfg.ep > 1).cp_rank());
          for (int l = 0; l < NL; ++l)
            for (int p : pos) {
              const float* row = ctx->kv().row(l, r, p);
              send.insert(send.end(), row, row + W);
            }
          sc[j] = static_cast<size_t>(NL) * pos.size() * W;
        }
        ctx->kv().free_request(r);
      }
      const std::vector<int> mine = owned(map.cp_rank());
      rc[0] = static_cast<size_t>(NL) * mine.size() * W;
      std::vector<float> recv(rc[0]);
      comm.all_to_all_v(send.data(), sc, recv.data(), rc);
      for (int p = 0; p < n; ++p) model.kv().append(r, p);
      size_t off = 0;
      for (int l = 0; l < NL; ++l)
        for (int p : mine) {
          std::copy(recv.begin() + off, recv.begin() + off + W, model.kv().row(l, r, p));
          off += W;
        }
      pick(logits, {r});
    }
    if (lead) res.prefill_ms = ms_since(t0);
    const CommStats after_prefill = comm.stats();

    t0 = Clock::now();
    int steps = 0, tokens = 0, update_started = 0;
    const bool tty = cfg.progress && lead && isatty(STDERR_FILENO);
    while (true) {
      std::vector<SeqStep> batch;
      std::vector<int> reqs;
      for (int r = 0; r < R; ++r) {
        if (done[r]) continue;
        batch.push_back(SeqStep{r, {last[r]}, model.kv().global_len(r)});
        reqs.push_back(r);
      }
      if (batch.empty()) break;
      const auto ts = Clock::now();
      model.set_step(steps);
      // A ready update switches a few layers per step; it was started at least one step ago,
      // so the worker had a whole step to run in the background.
      if (model.eplb_pending() && steps > update_started) {
        double waited = 0;
        model.eplb_apply(cfg.eplb_layers_per_step, &waited);
        if (waited > 0.05 && lead) {
          res.eplb_late++;
          res.eplb_wait_ms += waited;
        }
      }
      Tensor logits = model.forward(batch, false);
      pick(logits, reqs);
      steps++;
      if (online && steps % cfg.eplb_interval == 0 && !model.eplb_pending()) {
        std::vector<float> c = window_counts();
        for (int i = 0; i < M; ++i)
          for (int e = 0; e < E; ++e)
            estimate[i][e] = cfg.eplb_alpha * estimate[i][e] + c[static_cast<size_t>(i) * E + e];
        model.eplb_start_update(estimate);
        update_started = steps;
      }
      if (lead) res.step_ms.push_back(ms_since(ts));
      tokens += static_cast<int>(batch.size());
      for (int r = 0; r < R; ++r) rep.blocks_per_step.push_back(model.kv().local_blocks(r));
      if (tty && steps % 8 == 0) std::fprintf(stderr, "\rdecode step %d", steps);
    }
    if (tty) std::fprintf(stderr, "\r");
    for (int r = 0; r < R; ++r) {
      rep.kv_tokens += model.kv().local_tokens(r);
      rep.kv_blocks += model.kv().local_blocks(r);
      model.kv().free_request(r);  // a finished request gives its blocks back
    }
    if (lead) {
      res.decode_ms = ms_since(t0);
      res.decode_steps = steps;
      res.decode_tokens = tokens;
    }
    rep.comm = comm.stats();
    rep.decode_comm = diff(rep.comm, after_prefill);
    // Routed loads and EP dispatch counts of all ranks (EP ranks route disjoint token slices;
    // without EP every rank routes every token, so rank 0's counts are the totals).
    if (M > 0) {
      auto gather = [&](const std::vector<std::vector<int64_t>>& per_layer, bool sum) {
        std::vector<float> c(static_cast<size_t>(M) * E);
        for (int i = 0; i < M; ++i)
          for (int e = 0; e < E; ++e)
            c[static_cast<size_t>(i) * E + e] =
                static_cast<float>(per_layer[model.moe_layers()[i]][e]);
        if (sum) comm.all_reduce_sum(c.data(), c.size());
        std::vector<std::vector<double>> out(M, std::vector<double>(E));
        for (int i = 0; i < M; ++i)
          for (int e = 0; e < E; ++e) out[i][e] = c[static_cast<size_t>(i) * E + e];
        return out;
      };
      auto load = gather(model.stats().expert_tokens, cfg.ep > 1 && world > 1);
      auto sent = gather(model.stats().dispatch_sent, cfg.ep > 1 && world > 1);
      auto recv = gather(model.stats().dispatch_recv, cfg.ep > 1 && world > 1);
      std::vector<float> moved(M, 0.0f);
      for (const auto& u : model.eplb_updates())
        moved[static_cast<size_t>(
            std::find(model.moe_layers().begin(), model.moe_layers().end(), u.layer) -
            model.moe_layers().begin())] += static_cast<float>(u.bytes_moved);
      if (world > 1) comm.all_reduce_sum(moved.data(), moved.size());
      if (lead) {
        res.expert_load = load;
        res.dispatch_sent = sent;
        res.dispatch_recv = recv;
        res.eplb.assign(M, {});
        for (int i = 0; i < M; ++i) {
          res.eplb[i].layer = model.moe_layers()[i];
          res.eplb[i].bytes_moved = static_cast<uint64_t>(moved[i]);
          if (cfg.ep > 1)
            res.final_balance.push_back(
                placement_balance(model.placement(i), load[i]).max_over_mean());
        }
        for (const auto& u : model.eplb_updates()) {
          for (auto& lr : res.eplb)
            if (lr.layer == u.layer) {
              lr.updates++;
              lr.before.push_back(u.before);
              lr.after.push_back(u.after);
            }
        }
      }
    }
    if (cfg.comm == "mpi" && world > 1) {
      // Every rank's report, gathered with one all_gather of fixed-size float records.
      std::vector<float> mine = encode(rep);
      std::vector<float> all(mine.size() * world);
      comm.all_gather(mine.data(), all.data(), mine.size());
      for (int i = 0; i < world; ++i)
        res.ranks[i] = decode(all.data() + i * mine.size(), steps * R);
    } else {
      std::lock_guard<std::mutex> lock(mu);
      res.ranks[rank] = rep;
    }
  };

  if (cfg.comm == "mpi") {
    auto comm = make_mpi_world();
    HELIX_CHECK(comm->size() == world, "mpirun started {} processes but --tp {} x --cp {} needs {}",
                comm->size(), cfg.tp, cfg.cp, world);
    run_rank(*comm);
    // Outputs are known on rank 0 only; share them so that any rank could report.
    for (int r = 0; r < R; ++r) {
      int32_t n = static_cast<int32_t>(res.outputs[r].size());
      comm->broadcast_bytes(&n, sizeof(n), 0);
      res.outputs[r].resize(n);
      comm->broadcast_bytes(res.outputs[r].data(), n * sizeof(int), 0);
    }
    res.ranks.resize(world);
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
  auto comm = make_single_comm();
  Mapping map(1, 0, 1, 1, false);
  const int tpb = 64;
  DeepseekModel model(mc, ws, map, *comm, tpb,
                      blocks_needed(static_cast<int>(tokens.size()), tpb, 1));
  model.kv().add_request(0);
  Tensor logits = model.forward({SeqStep{0, tokens, 0}}, true);
  *vocab = mc.vocab_size;
  return logits.data;
}

}  // namespace helix
