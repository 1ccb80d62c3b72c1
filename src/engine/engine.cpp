#include "engine/engine.h"

#include <algorithm>
#include <thread>

#include <unistd.h>

#include "core/checked.h"
#include "core/file_io.h"
#include "engine/core.h"
#include "model/deepseek.h"
#include "model/weights_check.h"
#include "moe/eplb.h"
#include "parallel/mapping.h"

namespace helix {

// ---- Request ----------------------------------------------------------------------------------

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None:
      return "none";
    case FinishReason::Length:
      return "length";
    case FinishReason::Eos:
      return "stop";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "none";
}

bool Request::wait_tokens(size_t have, std::vector<int>* out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return tokens_.size() > have || reason_ != FinishReason::None; });
  out->clear();
  if (tokens_.size() > have) out->assign(tokens_.begin() + have, tokens_.end());
  return reason_ == FinishReason::None || tokens_.size() > have;
}

void Request::wait() const {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return reason_ != FinishReason::None; });
}

bool Request::finished() const {
  std::lock_guard lk(mu_);
  return reason_ != FinishReason::None;
}
FinishReason Request::reason() const {
  std::lock_guard lk(mu_);
  return reason_;
}
std::string Request::error() const {
  std::lock_guard lk(mu_);
  return error_;
}
std::vector<int> Request::tokens() const {
  std::lock_guard lk(mu_);
  return tokens_;
}
std::vector<float> Request::logits() const {
  std::lock_guard lk(mu_);
  return logits_;
}
Clock::time_point Request::first_token_at() const {
  std::lock_guard lk(mu_);
  return tokens_.empty() ? t_submit_ : t_first_;
}
Clock::time_point Request::last_token_at() const {
  std::lock_guard lk(mu_);
  return tokens_.empty() ? t_submit_ : t_last_;
}

void Request::push(int token, const float* logits, int vocab) {
  {
    std::lock_guard lk(mu_);
    if (reason_ != FinishReason::None) return;
    t_last_ = Clock::now();
    if (tokens_.empty()) t_first_ = t_last_;
    tokens_.push_back(token);
    if (logits) logits_.insert(logits_.end(), logits, logits + vocab);
  }
  cv_.notify_all();
}

void Request::finish(FinishReason r, std::string error) {
  {
    std::lock_guard lk(mu_);
    if (reason_ != FinishReason::None) return;
    reason_ = r;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

// ---- StepPlan ---------------------------------------------------------------------------------

std::vector<int64_t> StepPlan::encode() const {
  std::vector<int64_t> w = {shutdown ? 1 : 0, static_cast<int64_t>(leave.size()),
                            static_cast<int64_t>(join.size())};
  w.insert(w.end(), leave.begin(), leave.end());
  for (const auto& j : join) {
    w.push_back(j.id);
    w.push_back(static_cast<int64_t>(j.prompt.size()));
    w.insert(w.end(), j.prompt.begin(), j.prompt.end());
  }
  return w;
}

StepPlan StepPlan::decode(const std::vector<int64_t>& w) {
  HELIX_CHECK(w.size() >= 3, "step plan too short");
  StepPlan p;
  p.shutdown = w[0] != 0;
  size_t i = 3;
  for (int64_t k = 0; k < w[1]; ++k) p.leave.push_back(w.at(i++));
  for (int64_t k = 0; k < w[2]; ++k) {
    Join j;
    j.id = w.at(i++);
    const int64_t n = w.at(i++);
    for (int64_t t = 0; t < n; ++t) j.prompt.push_back(static_cast<int>(w.at(i++)));
    p.join.push_back(std::move(j));
  }
  return p;
}

// ---- EngineCore -------------------------------------------------------------------------------

StepPlan EngineCore::next_plan() {
  std::unique_lock lk(mu);
  cv.wait(lk, [&] {
    return stop || !to_cancel.empty() || sched->running() > 0 || sched->waiting() > 0;
  });
  StepPlan plan;
  if (stop) {
    // Whatever is left ends here; the ranks stop after this plan.
    plan.shutdown = true;
    for (auto& [id, req] : live) req->finish(FinishReason::Cancelled);
    live.clear();
    return plan;
  }
  for (int64_t id : to_cancel)
    if (sched->is_running(id)) plan.leave.push_back(id);
  to_cancel.clear();
  // Leaving requests give their blocks back before the next admissions (retire() on rank 0
  // releases them again, a no-op by then).
  for (int64_t id : plan.leave) sched->release(id);
  for (int64_t id : sched->admit()) plan.join.push_back({id, live.at(id)->spec().prompt});
  return plan;
}

void EngineCore::released(int64_t id) {
  std::lock_guard lk(mu);
  sched->release(id);
  live.erase(id);
  cv.notify_all();
}

std::shared_ptr<Request> EngineCore::find(int64_t id) {
  std::lock_guard lk(mu);
  return live.at(id);
}

// ---- Engine -----------------------------------------------------------------------------------

namespace {

// The backend and dtypes of a model on `world` ranks, from --device / --dtype.
ModelOptions model_options(const DeviceConfig& dev, int world) {
  HELIX_CHECK(dev.device == "auto" || dev.device == "cpu" || dev.device == "cuda",
              "--device '{}': auto, cpu or cuda", dev.device);
  HELIX_CHECK(dev.dtype.empty() || dev.dtype == "float32" || dev.dtype == "bfloat16",
              "--dtype '{}': float32 or bfloat16", dev.dtype);
  const std::string& kvd = dev.kv_cache_dtype;
  HELIX_CHECK(kvd == "auto" || kvd == "float32" || kvd == "bfloat16" || kvd == "fp8",
              "--kv-cache-dtype '{}': auto, float32, bfloat16 or fp8", printable(kvd));
  HELIX_CHECK(dev.gpu_memory_fraction >= 0 && dev.gpu_memory_fraction < 1,
              "--gpu-memory-fraction must be in [0, 1), got {}", dev.gpu_memory_fraction);
  const bool cuda =
      dev.device == "cuda" || (dev.device == "auto" && world == 1 && cuda_device_count() > 0);
  ModelOptions o;
  if (!cuda) {
    HELIX_CHECK(dev.dtype != "bfloat16",
                "--dtype bfloat16 needs --device cuda (the CPU computes "
                "in float32)");
    HELIX_CHECK(kvd != "bfloat16",
                "--kv-cache-dtype bfloat16 needs --device cuda (the CPU pool is float32 or fp8)");
    if (kvd == "fp8") o.kv_dtype = DType::F8E4M3;
    return o;
  }
  HELIX_CHECK(world == 1,
              "--device cuda runs on one GPU: --tp, --cp and --ep must be 1 (the layout has {} "
              "ranks)",
              world);
  const DType act = dev.dtype == "float32" ? DType::F32 : DType::BF16;
  o.ops = make_cuda_ops(0, act);
  o.weight_dtype = act;
  // The latent pool: by default in the activation dtype, bf16 (the bf16 MLA kernel) or fp32 (the
  // fp32 kernel). fp8 runs the bf16/FP8 MLA kernel in either mode (float32 activations: q is
  // cast to bf16 for it, as the bf16 pool does); a float32 pool under bf16 activations is the
  // fp32-KV accuracy experiment.
  o.kv_dtype = kvd == "fp8"        ? DType::F8E4M3
               : kvd == "float32"  ? DType::F32
               : kvd == "bfloat16" ? DType::BF16
                                   : act;
  o.kv_memory_fraction = dev.gpu_memory_fraction;
  o.cuda_graphs = dev.cuda_graph;
  return o;
}

void check_config(const EngineConfig& cfg) {
  HELIX_CHECK(cfg.tp >= 1 && cfg.cp >= 1, "--tp and --cp must be >= 1");
  HELIX_CHECK(cfg.tokens_per_block >= 1, "--tokens-per-block must be >= 1");
  HELIX_CHECK(cfg.ep >= 1, "--ep must be >= 1");
  HELIX_CHECK(cfg.kv_blocks >= 0, "--kv-blocks must be >= 0");
  HELIX_CHECK(cfg.prefill == "context" || cfg.prefill == "helix",
              "unknown prefill mode '{}' (context, helix)", printable(cfg.prefill));
  HELIX_CHECK(cfg.comm == "threads" || cfg.comm == "mpi", "unknown --comm '{}' (threads, mpi)",
              cfg.comm);
  HELIX_CHECK(cfg.ep == 1 || cfg.ep % checked_mul(cfg.tp, cfg.cp, "--tp x --cp") == 0,
              "--ep {} must be 1 or a multiple of --tp {} x --cp {}", cfg.ep, cfg.tp, cfg.cp);
  HELIX_CHECK(
      cfg.ep > 1 || (cfg.eplb_placement.empty() && cfg.eplb_interval == 0 && cfg.eplb_slots == 0),
      "--eplb-placement, --eplb-slots and --eplb-interval need expert parallelism (--ep E > 1)");
  HELIX_CHECK(cfg.eplb_interval >= 0 && cfg.eplb_slots >= 0, "EPLB sizes must be >= 0");
  HELIX_CHECK(cfg.eplb_slots == 0 || cfg.eplb_placement.empty(),
              "--eplb-slots and --eplb-placement exclude each other (the file sets the slots)");
  HELIX_CHECK(cfg.max_running >= 0 && cfg.max_waiting >= 0 && cfg.max_prompt_tokens >= 0,
              "engine limits must be >= 0");
}

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

// Every count that sizes memory or threads, checked against the model and the machine before
// any weight is loaded or buffer allocated (issue 10). Returns the world size.
int check_layout(const EngineConfig& cfg, const ModelConfig& mc) {
  HELIX_CHECK(cfg.tokens_per_block <= mc.max_position_embeddings,
              "--tokens-per-block must be in [1, max_position_embeddings = {}]",
              mc.max_position_embeddings);
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
  const int E = mc.n_routed_experts;
  HELIX_CHECK(cfg.ep == 1 || (E > 0 && E % cfg.ep == 0),
              "--ep {}: n_routed_experts ({}) must be a multiple of it", cfg.ep, E);
  if (cfg.eplb_slots > 0)
    HELIX_CHECK(cfg.eplb_slots >= E && cfg.eplb_slots % world == 0 &&
                    static_cast<int64_t>(cfg.eplb_slots) <= static_cast<int64_t>(E) * world,
                "--eplb-slots {} must be a multiple of the {} ranks in [{}, {}] (experts .. "
                "experts x ranks)",
                cfg.eplb_slots, world, E, static_cast<int64_t>(E) * world);
  if (!cfg.eplb_placement.empty()) {
    // Read (and bounded) before the weights; the ranks read it again when they install it.
    const PlacementSet ps = placement_read(cfg.eplb_placement, E);
    HELIX_CHECK(ps.num_ranks == world, "{}: placement is for {} ranks, the layout has {}",
                printable(cfg.eplb_placement), ps.num_ranks, world);
  }
  return static_cast<int>(world);
}

// KV blocks per rank, capped at what max_position_embeddings tokens of `requests` requests can
// use, and checked against the machine's memory.
int bounded_kv_blocks(const EngineConfig& cfg, const ModelConfig& mc, int64_t want,
                      int64_t requests) {
  const int64_t useful = checked_mul(
      std::max<int64_t>(requests, 1),
      kv_blocks_on_rank(mc.max_position_embeddings, cfg.tokens_per_block, cfg.cp, 0), "KV blocks");
  const int64_t blocks = std::min(want, useful);
  const int64_t bytes = checked_product({blocks, cfg.tokens_per_block, mc.num_hidden_layers,
                                         int64_t{mc.kv_lora_rank} + mc.qk_rope_head_dim, 4},
                                        "KV cache size");
  const int64_t mem = physical_memory();
  HELIX_CHECK(mem == 0 || bytes <= mem,
              "the KV cache needs {:.1f} GiB per rank ({} blocks of {} tokens) but the machine "
              "has {:.1f} GiB",
              bytes / 1073741824.0, blocks, cfg.tokens_per_block, mem / 1073741824.0);
  return checked_int(blocks, "KV blocks per rank");
}

}  // namespace

Engine::Engine(const EngineConfig& cfg) : core_(std::make_unique<EngineCore>()) {
  EngineCore& c = *core_;
  check_config(cfg);
  c.cfg = cfg;
  c.mc = config_load(cfg.model_dir);
  c.world = check_layout(cfg, c.mc);
  c.model_opt = model_options(cfg.dev, c.world);
  // Serving default: room for max_running (else 8) requests of the full context.
  const int64_t slots =
      cfg.record_requests > 0 ? cfg.record_requests : std::max(cfg.max_running, 8);
  c.kv_blocks = bounded_kv_blocks(cfg, c.mc, cfg.kv_blocks > 0 ? cfg.kv_blocks : INT64_MAX, slots);
  c.ws = std::make_unique<WeightStore>(cfg.model_dir);
  weights_check_config(c.mc, *c.ws);
  if (cfg.check_weights) weights_check_finite(*c.ws);
  SchedulerConfig sc;
  sc.cp = cfg.cp;
  sc.tokens_per_block = cfg.tokens_per_block;
  sc.kv_blocks = c.kv_blocks;
  sc.max_running = cfg.max_running;
  sc.max_waiting = cfg.max_waiting;
  c.sched = std::make_unique<Scheduler>(sc);
  c.report.vocab = c.mc.vocab_size;
  c.report.ranks.resize(c.world);
  c.kv_used.reset(new std::atomic<int>[c.world]);
  for (int r = 0; r < c.world; ++r) c.kv_used[r] = -1;
  int local_ranks = c.world;
  if (cfg.comm == "mpi") {
    c.mpi = make_mpi_world();
    HELIX_CHECK(c.mpi->size() == c.world,
                "mpirun started {} processes but --tp {} x --cp {} (--ep {}) needs {}",
                c.mpi->size(), cfg.tp, cfg.cp, cfg.ep, c.world);
    c.driver = c.mpi->rank() == 0;
    local_ranks = 1;
  }
  loop_ = std::thread([&c] {
    try {
      if (c.mpi) {
        rank_main(c, *c.mpi);
      } else if (c.world == 1) {
        auto comm = make_single_comm();
        rank_main(c, *comm);
      } else {
        run_threads(c.world, [&c](Communicator& comm) { rank_main(c, comm); });
      }
    } catch (...) {
      std::lock_guard lk(c.mu);
      c.error = std::current_exception();
    }
    std::lock_guard lk(c.mu);
    c.loop_ended = true;
    // Nothing will answer the requests that are left: they end with the error.
    std::string why = "the engine stopped";
    if (c.error) try {
        std::rethrow_exception(c.error);
      } catch (const std::exception& e) {
        why = e.what();
      }
    for (auto& [id, req] : c.live) req->finish(FinishReason::Error, why);
    c.live.clear();
    c.cv.notify_all();
  });
  std::unique_lock lk(c.mu);
  c.cv.wait(lk, [&] { return c.loaded == local_ranks || c.loop_ended; });
  if (c.loop_ended) {
    lk.unlock();
    loop_.join();
    joined_ = true;
    if (c.error) std::rethrow_exception(c.error);
    fail("the engine stopped while loading");
  }
}

Engine::~Engine() {
  try {
    shutdown();
  } catch (...) {
    // Destructors do not throw; shutdown() reports errors to callers that ask.
  }
}

bool Engine::is_driver() const {
  return core_->driver;
}
const EngineConfig& Engine::config() const {
  return core_->cfg;
}
int Engine::vocab() const {
  return core_->mc.vocab_size;
}
int Engine::max_context() const {
  return core_->mc.max_position_embeddings;
}
const std::vector<int>& Engine::eos_ids() const {
  return core_->mc.eos_token_ids;
}

std::shared_ptr<Request> Engine::submit(RequestSpec spec) {
  std::vector<RequestSpec> one;
  one.push_back(std::move(spec));
  return submit_batch(std::move(one)).front();
}

std::vector<std::shared_ptr<Request>> Engine::submit_batch(std::vector<RequestSpec> specs) {
  EngineCore& c = *core_;
  HELIX_CHECK(c.driver, "requests are submitted on rank 0 only");
  const ModelConfig& mc = c.mc;
  for (const auto& s : specs) {
    HELIX_CHECK(!s.prompt.empty(), "empty prompt: give at least one token id");
    for (int t : s.prompt)
      HELIX_CHECK(t >= 0 && t < mc.vocab_size, "token id {} is out of range [0, {})", t,
                  mc.vocab_size);
    HELIX_CHECK(s.max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", s.max_new_tokens);
    HELIX_CHECK(static_cast<int64_t>(s.prompt.size()) + std::max(s.max_new_tokens - 1, 0) <=
                    mc.max_position_embeddings,
                "prompt of {} tokens plus {} new tokens is longer than max_position_embeddings "
                "({})",
                s.prompt.size(), s.max_new_tokens, mc.max_position_embeddings);
    HELIX_CHECK(c.cfg.max_prompt_tokens == 0 ||
                    static_cast<int>(s.prompt.size()) <= c.cfg.max_prompt_tokens,
                "prompt of {} tokens is longer than the engine's limit of {}", s.prompt.size(),
                c.cfg.max_prompt_tokens);
  }
  std::vector<std::shared_ptr<Request>> out;
  {
    std::lock_guard lk(c.mu);
    if (c.loop_ended || c.stop) fail("the engine is not running");
    // All or nothing: every request of the batch must fit before any is queued.
    int queued = 0;
    for (const auto& s : specs) {
      const std::vector<int> need =
          c.sched->need(static_cast<int>(s.prompt.size()), s.max_new_tokens);
      for (int cp = 0; cp < c.cfg.cp; ++cp)
        if (need[cp] > c.kv_blocks)
          fail(
              "KV cache out of memory on CP rank {}: a request of {} prompt + {} new tokens "
              "needs {} blocks of {} tokens there but each rank holds {} (raise {})",
              cp, s.prompt.size(), s.max_new_tokens, need[cp], c.cfg.tokens_per_block, c.kv_blocks,
              c.cfg.dev.gpu_memory_fraction > 0 && c.model_opt.ops ? "--gpu-memory-fraction"
                                                                   : "--kv-blocks");
      if (s.max_new_tokens > 0) ++queued;
    }
    if (c.cfg.max_waiting > 0 && c.sched->waiting() + queued > c.cfg.max_waiting)
      throw QueueFull(fmt::format("the waiting queue is full ({} requests)", c.cfg.max_waiting));
    for (auto& s : specs) {
      auto req = std::make_shared<Request>(c.next_id++, std::move(s));
      out.push_back(req);
      if (req->spec().max_new_tokens == 0) {
        req->finish(FinishReason::Length);  // nothing to generate: no prefill either
        continue;
      }
      c.sched->enqueue(req->id(), static_cast<int>(req->spec().prompt.size()),
                       req->spec().max_new_tokens);
      c.live[req->id()] = req;
    }
  }
  c.cv.notify_all();
  return out;
}

void Engine::cancel(int64_t id) {
  EngineCore& c = *core_;
  std::shared_ptr<Request> gone;
  {
    std::lock_guard lk(c.mu);
    if (c.sched->drop_waiting(id)) {
      gone = c.live.at(id);
      c.live.erase(id);
    } else if (c.sched->is_running(id) &&
               std::find(c.to_cancel.begin(), c.to_cancel.end(), id) == c.to_cancel.end()) {
      c.to_cancel.push_back(id);
    }
  }
  if (gone) gone->finish(FinishReason::Cancelled);
  c.cv.notify_all();
}

EngineSnapshot Engine::snapshot() const {
  const EngineCore& c = *core_;
  EngineSnapshot s;
  std::lock_guard lk(c.mu);
  s.failed = c.error != nullptr;
  s.running = c.sched->running();
  s.waiting = c.sched->waiting();
  s.kv_blocks = c.kv_blocks;
  s.kv_reserved = c.sched->reserved();
  for (int r = 0; r < c.world; ++r) {
    s.kv_used.push_back(c.kv_used[r].load());
    s.rank_cp.push_back(Mapping(c.world, r, c.cfg.tp, c.cfg.cp, c.cfg.ep > 1).cp_rank());
  }
  s.steps = c.steps;
  s.prefills = c.prefills;
  s.tokens = c.tokens;
  s.eplb_layers = c.eplb_layers;
  s.eplb_balance = c.eplb_balance;
  return s;
}

GenerateResult Engine::shutdown() {
  EngineCore& c = *core_;
  if (!joined_) {
    {
      std::lock_guard lk(c.mu);
      c.stop = true;
    }
    c.cv.notify_all();
    loop_.join();
    joined_ = true;
  }
  if (c.error) std::rethrow_exception(c.error);
  std::lock_guard lk(c.report_mu);
  return c.report;
}

// ---- one-shot calls ---------------------------------------------------------------------------

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling) {
  HELIX_CHECK(!prompts.empty(), "no prompt given");
  HELIX_CHECK(sampling.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  sampling_validate(sampling);
  check_config(cfg);
  const int R = static_cast<int>(prompts.size());
  EngineConfig ec = cfg;
  ec.record_requests = R;
  ec.max_waiting = 0;
  ec.max_running = 0;
  for (const auto& p : prompts)
    ec.max_prompt_tokens = std::max(ec.max_prompt_tokens, static_cast<int>(p.size()));
  if (ec.kv_blocks <= 0) {
    // Room for every request at once: the whole batch decodes together.
    ec.kv_blocks = 0;
    for (const auto& p : prompts)
      ec.kv_blocks += kv_blocks_on_rank(static_cast<int>(p.size()) + sampling.max_new_tokens,
                                        cfg.tokens_per_block, cfg.cp, 0);
    ec.kv_blocks = std::max(ec.kv_blocks, 1);
  }
  {
    // Bad prompts fail before any weight is loaded.
    const ModelConfig mc = config_load(cfg.model_dir);
    for (const auto& p : prompts) {
      HELIX_CHECK(!p.empty(), "empty prompt: give at least one token id");
      for (int t : p)
        HELIX_CHECK(t >= 0 && t < mc.vocab_size, "token id {} is out of range [0, {})", t,
                    mc.vocab_size);
      HELIX_CHECK(static_cast<int64_t>(p.size()) + std::max(sampling.max_new_tokens - 1, 0) <=
                      mc.max_position_embeddings,
                  "prompt of {} tokens plus {} new tokens is longer than max_position_embeddings "
                  "({})",
                  p.size(), sampling.max_new_tokens, mc.max_position_embeddings);
    }
  }
  Engine engine(ec);
  GenerateResult res;
  if (!engine.is_driver()) {
    res = engine.shutdown();  // follows rank 0 until it is done
    res.ranks.clear();        // only rank 0 reports
    res.outputs.assign(R, {});
    return res;
  }
  // One sampler for the batch, drawn from in the order the ids are sampled (as before).
  auto sampler = std::make_shared<Sampler>(sampling);
  std::vector<RequestSpec> specs(R);
  for (int r = 0; r < R; ++r) {
    specs[r].prompt = prompts[r];
    specs[r].max_new_tokens = sampling.max_new_tokens;
    specs[r].ignore_eos = sampling.ignore_eos;
    specs[r].keep_logits = cfg.keep_logits;
    specs[r].sampler = sampler;
    specs[r].sample_stream = static_cast<uint64_t>(r);
  }
  auto reqs = engine.submit_batch(std::move(specs));
  for (auto& q : reqs) q->wait();
  res = engine.shutdown();
  res.outputs.assign(R, {});
  if (cfg.keep_logits) res.logits.assign(R, {});
  for (int r = 0; r < R; ++r) {
    if (reqs[r]->reason() == FinishReason::Error) fail("{}", reqs[r]->error());
    res.outputs[r] = reqs[r]->tokens();
    if (cfg.keep_logits) res.logits[r] = reqs[r]->logits();
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

std::vector<float> score(const std::string& model_dir, const std::vector<int>& tokens, int* vocab,
                         const DeviceConfig& dev) {
  const ModelConfig mc = config_load(model_dir);
  HELIX_CHECK(!tokens.empty(), "empty prompt: give at least one token id");
  for (int t : tokens)
    HELIX_CHECK(t >= 0 && t < mc.vocab_size, "token id {} is out of range [0, {})", t,
                mc.vocab_size);
  HELIX_CHECK(static_cast<int64_t>(tokens.size()) <= mc.max_position_embeddings,
              "prompt of {} tokens plus {} new tokens is longer than max_position_embeddings "
              "({})",
              tokens.size(), 1, mc.max_position_embeddings);
  const WeightStore ws(model_dir);
  auto comm = make_single_comm();
  Mapping map(1, 0, 1, 1, false);
  const int tpb = 64;
  DeepseekModel model(mc, ws, map, *comm, tpb,
                      kv_blocks_on_rank(static_cast<int>(tokens.size()), tpb, 1, 0),
                      model_options(dev, 1));
  model.kv().add_request(0);
  const std::vector<SeqStep> step = {SeqStep{0, tokens, 0}};
  model.reserve_kv(step);
  Tensor logits = model.forward(step, true);
  *vocab = mc.vocab_size;
  return logits.data;
}

}  // namespace helix
