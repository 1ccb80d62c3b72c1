#pragma once
// Internal to the engine: the state its rank threads share with the submitting threads, the
// step plan rank 0 broadcasts, and one rank's step executor.
#include <atomic>
#include <exception>
#include <memory>

#include "engine/engine.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace helix {

// What every rank does at one step boundary, decided by rank 0.
struct StepPlan {
  bool shutdown = false;
  std::vector<int64_t> leave;  // running requests that were cancelled: free their KV
  struct Join {
    int64_t id = 0;
    std::vector<int> prompt;
  };
  std::vector<Join> join;  // prefilled in this order, then decoded with the batch

  // Wire format: int64 words [shutdown, n_leave, n_join, leave ids..., (id, len, tokens...)...]
  std::vector<int64_t> encode() const;
  static StepPlan decode(const std::vector<int64_t>& words);
};

struct EngineCore {
  EngineConfig cfg;
  ModelConfig mc;
  std::unique_ptr<WeightStore> ws;
  int world = 1;
  int kv_blocks = 0;
  std::unique_ptr<Communicator> mpi;  // MPI: this process's rank (handed to the loop thread)
  bool driver = true;
  Clock::time_point t_start = Clock::now();

  // Shared with submitters, under mu.
  mutable std::mutex mu;
  std::condition_variable cv;  // the loop waits for work; the constructor for loading
  std::unique_ptr<Scheduler> sched;
  std::map<int64_t, std::shared_ptr<Request>> live;  // waiting or running
  std::vector<int64_t> to_cancel;                    // running, leaving at the next boundary
  int64_t next_id = 0;
  bool stop = false;
  bool loop_ended = false;
  int loaded = 0;  // ranks of this process with their weights loaded
  std::exception_ptr error;

  // Written by the rank threads (reports under report_mu; counters atomic).
  std::mutex report_mu;
  GenerateResult report;
  std::unique_ptr<std::atomic<int>[]> kv_used;  // [rank]
  std::atomic<int64_t> steps{0}, prefills{0}, tokens{0};
  std::vector<int> eplb_layers;      // under mu
  std::vector<double> eplb_balance;  // under mu

  // Rank 0: the plan of the next step; blocks until there is work or a stop.
  StepPlan next_plan();
  // Rank 0: a request left the batch (finished or cancelled) and its KV is free.
  void released(int64_t id);
  std::shared_ptr<Request> find(int64_t id);
};

// The step loop of one rank (every rank runs it; rank 0 also plans and samples).
void rank_main(EngineCore& core, Communicator& comm);

}  // namespace helix
