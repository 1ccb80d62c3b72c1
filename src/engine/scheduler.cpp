#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace helix {

int kv_blocks_on_rank(int tokens, int tokens_per_block, int cp, int cp_rank) {
  const int nb = (tokens + tokens_per_block - 1) / tokens_per_block;
  return nb / cp + (cp_rank < nb % cp ? 1 : 0);
}

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(cfg), reserved_(cfg.cp, 0) {
  HELIX_CHECK(cfg.cp >= 1 && cfg.tokens_per_block >= 1 && cfg.kv_blocks >= 0 &&
                  cfg.max_running >= 0 && cfg.max_waiting >= 0,
              "bad scheduler configuration");
}

std::vector<int> Scheduler::need(int prompt_len, int max_new) const {
  std::vector<int> n(cfg_.cp);
  for (int c = 0; c < cfg_.cp; ++c)
    n[c] = kv_blocks_on_rank(prompt_len + max_new, cfg_.tokens_per_block, cfg_.cp, c);
  return n;
}

bool Scheduler::fits(const std::vector<int>& need) const {
  for (int c = 0; c < cfg_.cp; ++c)
    if (reserved_[c] + need[c] > cfg_.kv_blocks) return false;
  return true;
}

Scheduler::Enqueue Scheduler::enqueue(int64_t id, int prompt_len, int max_new) {
  std::vector<int> n = need(prompt_len, max_new);
  for (int c = 0; c < cfg_.cp; ++c)
    if (n[c] > cfg_.kv_blocks) return Enqueue::TooLarge;
  if (cfg_.max_waiting > 0 && waiting() >= cfg_.max_waiting) return Enqueue::QueueFull;
  waiting_.push_back({id, std::move(n)});
  return Enqueue::Queued;
}

std::vector<int64_t> Scheduler::admit() {
  std::vector<int64_t> out;
  while (!waiting_.empty()) {
    if (cfg_.max_running > 0 && running() >= cfg_.max_running) break;
    const Waiting& w = waiting_.front();
    if (!fits(w.need)) break;  // arrival order: the head waits for room, nobody overtakes it
    for (int c = 0; c < cfg_.cp; ++c) reserved_[c] += w.need[c];
    running_[w.id] = w.need;
    out.push_back(w.id);
    waiting_.pop_front();
  }
  return out;
}

void Scheduler::release(int64_t id) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  for (int c = 0; c < cfg_.cp; ++c) reserved_[c] -= it->second[c];
  running_.erase(it);
}

bool Scheduler::drop_waiting(int64_t id) {
  auto it =
      std::find_if(waiting_.begin(), waiting_.end(), [&](const Waiting& w) { return w.id == id; });
  if (it == waiting_.end()) return false;
  waiting_.erase(it);
  return true;
}

bool Scheduler::is_waiting(int64_t id) const {
  return std::any_of(waiting_.begin(), waiting_.end(),
                     [&](const Waiting& w) { return w.id == id; });
}

}  // namespace helix
