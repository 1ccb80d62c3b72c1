#pragma once
// The persistent decode engine. Weights load once on every rank of a deployment (ranks as
// threads by default, or MPI processes); a step loop driven by rank 0 then serves requests that
// come and go: at every step boundary rank 0 broadcasts a plan (requests leaving, requests
// joining with their prompts), all ranks free / prefill / decode the same requests, rank 0
// samples and broadcasts the ids. Admission by KV capacity lives in engine/scheduler.h.
//
// generate() and score() are the one-shot calls of the CLI, built on the same engine.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "engine/sampler.h"
#include "parallel/comm.h"

namespace helix {

// Where a model runs: "auto" (the GPU when there is one and the layout is one rank), "cpu",
// "cuda"; dtype "" = the device's default (float32 on the CPU, bfloat16 on CUDA).
struct DeviceConfig {
  std::string device = "cpu";  // the CLI's default is "auto"
  std::string dtype;
  // Latent KV pool: "auto" (the activation dtype: float32 on the CPU, the --dtype on CUDA),
  // "float32", "bfloat16" (CUDA) or "fp8" (e4m3 latent with a scale per token, bf16 rope part:
  // ops.h kv_fp8.cpp; 656 bytes per token and layer at DeepSeek-V3's 512/64 against bf16's 1152).
  // Prompts attend over their unquantised latents; decode steps read the pool.
  std::string kv_cache_dtype = "auto";
  // CUDA: fraction of the GPU memory free after the weights that the KV pool takes (0: just
  // the blocks the requests need, or --kv-blocks).
  double gpu_memory_fraction = 0;
  bool cuda_graph = true;  // capture decode steps as CUDA graphs (bfloat16 on CUDA)
  // CUDA: sample on the GPU (ops/sample.h) and copy back only the ids; false copies every step's
  // logits to the host and samples there with the requests' Sampler (tests compare the two).
  bool sample_on_device = true;
};

struct EngineConfig {
  std::string model_dir;
  DeviceConfig dev;
  int tp = 1;
  int cp = 1;
  int ep = 1;  // expert-parallel size: 1 = experts TP over tp*cp; else a multiple of tp*cp
               // (ep > tp*cp replicates the attention grid ep/(tp*cp) times)
  int tokens_per_block = 64;
  int kv_blocks = 0;             // physical KV blocks per rank; 0 = enough for the requests
  std::string comm = "threads";  // "threads" or "mpi"
  // Prompt KV: "context" = a context model on rank 0 prefills and hands each KV block to its
  // owner (disaggregated serving); "helix" = the decode ranks prefill in place, heads split.
  std::string prefill = "context";
  bool keep_logits = false;    // keep the logits of every generated position
  bool check_weights = false;  // scan every weight for NaN/Inf at load (--check-weights)
  bool progress = false;       // progress line on stderr
  // HOP-B: overlap the CP all-to-all of request i with the attention of request i+1 (decode
  // steps with several requests, cp > 1). Same outputs, bit for bit.
  bool hopb = false;
  // EPLB (needs ep): a fixed placement file, or online updates every eplb_interval steps over
  // eplb_slots slots; eplb_record writes the observed loads.
  std::string eplb_placement;
  std::string eplb_record;
  int eplb_slots = 0;
  int eplb_interval = 0;
  int eplb_layers_per_step = 2;  // layers switched per step once an update is ready
  double eplb_alpha = 0.8;       // decay of the load estimate per update window
  // Persistent engine (serving)
  int max_running = 0;        // requests decoded together; 0 = as many as the KV admits
  int max_waiting = 0;        // bound of the waiting queue; 0 = unbounded
  int max_prompt_tokens = 0;  // longest prompt (sizes rank 0's context-prefill KV); 0 = context
  // Batch runs: record per-step KV blocks of requests 0..record_requests-1 (reports).
  int record_requests = 0;
};

struct EplbLayerReport {
  int layer = 0;
  int updates = 0;
  uint64_t bytes_moved = 0;           // summed over ranks
  std::vector<double> before, after;  // max/mean rank load at each update, old vs new placement
};

struct RankReport {
  int rank = 0, cp_rank = 0, tp_rank = 0;
  int kv_tokens = 0, kv_blocks = 0;  // summed over requests, when each finished
  CommStats comm;                    // whole run (the engine's step plans not counted)
  CommStats decode_comm;             // decode steps only
  std::vector<int> blocks_per_step;  // [steps, record_requests] local KV blocks after each step
  // Time in attention and FFN (each including its communication) and in communication alone.
  double attn_ms = 0, ffn_ms = 0, comm_ms = 0;
};

struct GenerateResult {
  std::vector<std::vector<int>> outputs;   // [request] generated ids
  std::vector<std::vector<float>> logits;  // [request] [positions * vocab] when kept
  int vocab = 0;
  double load_ms = 0, prefill_ms = 0, decode_ms = 0;
  int decode_steps = 0, decode_tokens = 0;
  bool hopb = false;         // HOP-B ran (requested, cp > 1, and the backend allows it)
  int max_block_spread = 0;  // max over steps and requests of (max - min) KV blocks over ranks
  std::vector<RankReport> ranks;
  std::vector<double> step_ms;  // wall time of every decode step (rank 0, batch runs)
  // EPLB
  std::vector<EplbLayerReport> eplb;  // [MoE layer]
  int eplb_late = 0;                  // steps that waited for the worker
  double eplb_wait_ms = 0;
  std::vector<std::vector<double>> expert_load;    // [MoE layer][expert] routed pairs, all ranks
  std::vector<std::vector<double>> dispatch_sent;  // [MoE layer][expert] EP rows sent, all ranks
  std::vector<std::vector<double>> dispatch_recv;  // [MoE layer][expert] EP rows computed
  std::vector<double> final_balance;  // [MoE layer] max/mean of the load on the final placement
};

// ---- requests ---------------------------------------------------------------------------------

enum class FinishReason { None, Length, Eos, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

struct RequestSpec {
  std::vector<int> prompt;
  int max_new_tokens = 16;
  bool ignore_eos = false;
  bool keep_logits = false;
  // Rank 0 samples with it; several requests may share one (generate() does, as before).
  // Null = greedy.
  std::shared_ptr<Sampler> sampler;
  // CUDA (device sampling): token t of this request is the draw (seed, sample_stream, t) of
  // ops/sample.h, whatever the batch; generate() gives request r stream r.
  uint64_t sample_stream = 0;
};

// One request as its submitter sees it. Tokens are appended by the engine's rank-0 thread.
class Request {
 public:
  Request(int64_t id, RequestSpec spec) : id_(id), spec_(std::move(spec)) {}
  int64_t id() const { return id_; }
  const RequestSpec& spec() const { return spec_; }

  // Waits until more than `have` tokens exist or the request has finished (or the timeout
  // passed); copies tokens [have, ...) into *out. Returns true while more may come.
  bool wait_tokens(size_t have, std::vector<int>* out, std::chrono::milliseconds timeout);
  void wait() const;  // until finished
  bool finished() const;
  FinishReason reason() const;
  std::string error() const;  // FinishReason::Error: why
  std::vector<int> tokens() const;
  std::vector<float> logits() const;  // [tokens * vocab] when keep_logits
  Clock::time_point submitted() const { return t_submit_; }
  // Time of the first / last token; equal to submitted() before there is one.
  Clock::time_point first_token_at() const;
  Clock::time_point last_token_at() const;

  // ---- engine side ----
  void push(int token, const float* logits, int vocab);
  void finish(FinishReason r, std::string error = {});

 private:
  const int64_t id_;
  const RequestSpec spec_;
  const Clock::time_point t_submit_ = Clock::now();
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<int> tokens_;
  std::vector<float> logits_;
  Clock::time_point t_first_, t_last_;
  FinishReason reason_ = FinishReason::None;
  std::string error_;
};

// Thrown by submit() when the waiting queue is full (HTTP 503 + Retry-After).
class QueueFull : public Error {
 public:
  using Error::Error;
};

// Live numbers for /metrics.
struct EngineSnapshot {
  bool failed = false;
  int running = 0, waiting = 0;
  int kv_blocks = 0;                 // capacity per rank
  std::vector<int> kv_reserved;      // [cp rank] blocks reserved by running requests
  std::vector<int> kv_used;          // [rank] blocks allocated now (-1: another MPI process)
  std::vector<int> rank_cp;          // [rank] its CP rank
  int64_t steps = 0, prefills = 0;   // decode steps, prompts prefilled
  int64_t tokens = 0;                // tokens generated
  std::vector<int> eplb_layers;      // layer index of each MoE layer (EPLB on)
  std::vector<double> eplb_balance;  // [MoE layer] max/mean rank load of the last update
};

struct EngineCore;

class Engine {
 public:
  // Loads the model on every rank and starts the step loop. Returns when every rank of this
  // process has loaded its weights (throws helix::Error for a bad model, flags or layout).
  explicit Engine(const EngineConfig& cfg);
  ~Engine();  // cancels what is left, stops the loop
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Whether this process drives the loop (rank 0): only it may submit. With thread ranks, true.
  bool is_driver() const;
  const EngineConfig& config() const;
  int vocab() const;
  int max_context() const;  // max_position_embeddings
  const std::vector<int>& eos_ids() const;

  // Validates and queues requests (all at once: they join the same step). Throws QueueFull when
  // the queue is full and helix::Error for a bad request (ids out of range, too long, too large
  // for the KV cache).
  std::shared_ptr<Request> submit(RequestSpec spec);
  std::vector<std::shared_ptr<Request>> submit_batch(std::vector<RequestSpec> specs);
  // A waiting request ends at once; a running one leaves the batch at the next step boundary
  // and its KV is freed. Finished ones: no-op.
  void cancel(int64_t id);

  EngineSnapshot snapshot() const;
  // Stops the loop (cancelling what is left) and returns the per-rank reports. MPI ranks other
  // than 0 return when rank 0 shuts down. Rethrows an error that stopped the loop.
  GenerateResult shutdown();

 private:
  std::unique_ptr<EngineCore> core_;
  std::thread loop_;
  bool joined_ = false;
};

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling);

// Logits [n_tokens, vocab] of one full forward over the tokens (single rank).
std::vector<float> score(const std::string& model_dir, const std::vector<int>& tokens, int* vocab,
                         const DeviceConfig& dev = {});

}  // namespace helix
