#include "server/metrics.h"

#include <fmt/format.h>

namespace helix::server {

void Histogram::observe(double x) {
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i]) ++i;
  counts_[i]++;
  sum_ += x;
  n_++;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::string s = fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    s += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
  }
  cum += counts_.back();
  s += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, sum_,
                   name, n_);
  return s;
}

Metrics::Metrics()
    : ttft_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      tpot_({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void Metrics::request(const std::string& endpoint, const std::string& outcome) {
  std::lock_guard lk(mu_);
  requests_[{endpoint, outcome}]++;
}

void Metrics::latency(double ttft_s, double tpot_s, bool has_tpot) {
  std::lock_guard lk(mu_);
  ttft_.observe(ttft_s);
  if (has_tpot) tpot_.observe(tpot_s);
}

void Metrics::tokens(int prompt, int completion) {
  std::lock_guard lk(mu_);
  prompt_tokens_ += prompt;
  completion_tokens_ += completion;
}

std::string Metrics::render(const EngineSnapshot* e) const {
  std::lock_guard lk(mu_);
  std::string s;
  s += "# HELP helix_requests_total HTTP completion requests by endpoint and outcome.\n";
  s += "# TYPE helix_requests_total counter\n";
  for (const char* ep : {"completions", "chat"})
    for (const char* oc :
         {"ok", "cancelled", "queue_full", "bad_request", "unauthorized", "error"}) {
      auto it = requests_.find({ep, oc});
      s += fmt::format("helix_requests_total{{endpoint=\"{}\",outcome=\"{}\"}} {}\n", ep, oc,
                       it == requests_.end() ? 0 : it->second);
    }
  s += ttft_.render("helix_time_to_first_token_seconds",
                    "Time from arrival to the first generated token (answered requests).");
  s += tpot_.render("helix_time_per_output_token_seconds",
                    "Mean time between output tokens of a request (answered, 2+ tokens).");
  s += "# HELP helix_prompt_tokens_total Prompt tokens of answered requests.\n"
       "# TYPE helix_prompt_tokens_total counter\n";
  s += fmt::format("helix_prompt_tokens_total {}\n", prompt_tokens_);
  s += "# HELP helix_completion_tokens_total Tokens returned to clients (usage).\n"
       "# TYPE helix_completion_tokens_total counter\n";
  s += fmt::format("helix_completion_tokens_total {}\n", completion_tokens_);
  if (!e) return s;
  s += "# HELP helix_generated_tokens_total Tokens the engine sampled (cancelled ones too).\n"
       "# TYPE helix_generated_tokens_total counter\n";
  s += fmt::format("helix_generated_tokens_total {}\n", e->tokens);
  s += "# HELP helix_decode_steps_total Decode steps of the engine.\n"
       "# TYPE helix_decode_steps_total counter\n";
  s += fmt::format("helix_decode_steps_total {}\n", e->steps);
  s += "# HELP helix_prefills_total Prompts prefilled.\n# TYPE helix_prefills_total counter\n";
  s += fmt::format("helix_prefills_total {}\n", e->prefills);
  s += "# HELP helix_requests_running Requests in the decode batch.\n"
       "# TYPE helix_requests_running gauge\n";
  s += fmt::format("helix_requests_running {}\n", e->running);
  s += "# HELP helix_requests_waiting Requests waiting for admission.\n"
       "# TYPE helix_requests_waiting gauge\n";
  s += fmt::format("helix_requests_waiting {}\n", e->waiting);
  s += "# HELP helix_kv_blocks_capacity KV blocks per rank.\n"
       "# TYPE helix_kv_blocks_capacity gauge\n";
  s += fmt::format("helix_kv_blocks_capacity {}\n", e->kv_blocks);
  s += "# HELP helix_kv_blocks_reserved KV blocks reserved by admitted requests, per CP rank.\n"
       "# TYPE helix_kv_blocks_reserved gauge\n";
  for (size_t c = 0; c < e->kv_reserved.size(); ++c)
    s += fmt::format("helix_kv_blocks_reserved{{cp_rank=\"{}\"}} {}\n", c, e->kv_reserved[c]);
  s += "# HELP helix_kv_blocks_used KV blocks allocated on each rank.\n"
       "# TYPE helix_kv_blocks_used gauge\n";
  std::string free_lines;
  for (size_t r = 0; r < e->kv_used.size(); ++r) {
    if (e->kv_used[r] < 0) continue;  // another MPI process
    s += fmt::format("helix_kv_blocks_used{{rank=\"{}\",cp_rank=\"{}\"}} {}\n", r, e->rank_cp[r],
                     e->kv_used[r]);
    free_lines += fmt::format("helix_kv_blocks_free{{rank=\"{}\",cp_rank=\"{}\"}} {}\n", r,
                              e->rank_cp[r], e->kv_blocks - e->kv_used[r]);
  }
  s += "# HELP helix_kv_blocks_free KV blocks free on each rank.\n"
       "# TYPE helix_kv_blocks_free gauge\n" +
       free_lines;
  if (!e->eplb_layers.empty()) {
    s += "# HELP helix_eplb_balance Max/mean rank load of each MoE layer's placement at its "
         "last EPLB update (1 is perfect).\n# TYPE helix_eplb_balance gauge\n";
    for (size_t i = 0; i < e->eplb_layers.size(); ++i)
      s += fmt::format("helix_eplb_balance{{layer=\"{}\"}} {}\n", e->eplb_layers[i],
                       e->eplb_balance[i]);
  }
  return s;
}

}  // namespace helix::server
