#pragma once
// The server's Prometheus numbers: request outcomes, latency histograms and token counters kept
// here; engine gauges (running, waiting, KV blocks per rank, EPLB balance) read from an engine
// snapshot when /metrics is scraped. Text exposition format 0.0.4.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace helix::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double x);
  // Lines for `name` (cumulative buckets, sum, count).
  std::string render(const std::string& name, const std::string& help) const;
  uint64_t count() const { return n_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t n_ = 0;
};

class Metrics {
 public:
  Metrics();
  // One finished HTTP request: endpoint ("completions", "chat"), outcome ("ok", "cancelled",
  // "queue_full", "bad_request", "unauthorized", "error").
  void request(const std::string& endpoint, const std::string& outcome);
  // An answered request's latencies (seconds) and token counts.
  void latency(double ttft_s, double tpot_s, bool has_tpot);
  void tokens(int prompt, int completion);
  std::string render(const EngineSnapshot* engine) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> requests_;
  Histogram ttft_, tpot_;
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
};

}  // namespace helix::server
