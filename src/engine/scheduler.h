#pragma once
// Admission control and continuous batching, as plain bookkeeping (no threads, no model): rank 0
// of the engine asks it, at every step boundary, which waiting requests join the decode batch.
//
// KV policy: a request reserves, when it is admitted, every block it can ever need: prompt +
// max_new_tokens tokens, cut into blocks of tokens_per_block, block b on CP rank b % cp. It is
// admitted only when that reservation fits on every CP rank next to the reservations of the
// running requests, so a running request never runs out of KV (an admitted request is never
// dropped). Waiting requests are admitted in arrival order (no overtaking: a long prompt is not
// starved by short ones). The waiting queue is bounded; a full queue refuses new requests.
#include <cstdint>
#include <deque>
#include <map>
#include <vector>

namespace helix {

struct SchedulerConfig {
  int cp = 1;
  int tokens_per_block = 64;
  int kv_blocks = 0;    // physical KV blocks per rank
  int max_running = 0;  // requests in the decode batch at once; 0 = no limit but KV
  int max_waiting = 0;  // waiting queue bound; 0 = no limit
};

// Blocks a sequence of `tokens` tokens holds on CP rank `cp_rank` (block b on rank b % cp).
int kv_blocks_on_rank(int tokens, int tokens_per_block, int cp, int cp_rank);

class Scheduler {
 public:
  enum class Enqueue { Queued, QueueFull, TooLarge };

  explicit Scheduler(const SchedulerConfig& cfg);

  // A new request of prompt_len tokens that may generate max_new tokens. TooLarge: it could not
  // fit even in an empty cache (refuse it); QueueFull: the waiting queue is at its bound.
  Enqueue enqueue(int64_t id, int prompt_len, int max_new);
  // The requests that join the batch now, in arrival order; their blocks are reserved.
  std::vector<int64_t> admit();
  // A running request left the batch (finished or cancelled): its reservation is released.
  void release(int64_t id);
  // Removes a request that is still waiting; false if it is not waiting.
  bool drop_waiting(int64_t id);

  bool is_running(int64_t id) const { return running_.count(id) != 0; }
  bool is_waiting(int64_t id) const;
  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  // Reserved blocks per CP rank (sum over running requests).
  const std::vector<int>& reserved() const { return reserved_; }
  // Blocks the request needs on each CP rank.
  std::vector<int> need(int prompt_len, int max_new) const;
  const SchedulerConfig& config() const { return cfg_; }

 private:
  struct Waiting {
    int64_t id;
    std::vector<int> need;
  };
  bool fits(const std::vector<int>& need) const;

  SchedulerConfig cfg_;
  std::deque<Waiting> waiting_;
  std::map<int64_t, std::vector<int>> running_;  // id -> reserved blocks per CP rank
  std::vector<int> reserved_;
};

}  // namespace helix
