#pragma once
// Per-op GPU time of CudaOps for finding where a decode step goes (HELIX_OP_TIMING=1; eager steps
// only, e.g. bench_model_decode --no-cuda-graph): events around each op, waited on at once (so it
// serialises host and device; each op's time includes its launch latency, ~5-10 us), collected by
// name and printed to stderr when the backend goes away.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

namespace helix {

class OpTimer {
 public:
  OpTimer() : on_(std::getenv("HELIX_OP_TIMING") != nullptr) {}
  ~OpTimer() {
    if (!on_ || ms_.empty()) return;
    // Per op: calls and the median call (the first call of a kernel or of cuBLAS loads modules
    // and would dominate a mean); median x calls is the op's share of the run.
    std::vector<std::pair<double, std::string>> v;
    double total = 0;
    for (auto& [k, t] : ms_) {
      std::sort(t.begin(), t.end());
      const double est = t[t.size() / 2] * t.size();
      v.emplace_back(est, k);
      total += est;
    }
    std::sort(v.rbegin(), v.rend());
    std::fprintf(stderr, "op timing (HELIX_OP_TIMING): median x calls, %.3f ms in all\n", total);
    for (const auto& [t, k] : v)
      std::fprintf(stderr, "  %10.3f ms %6zu calls %8.4f ms/call (median) %5.1f%%  %s\n", t,
                   ms_[k].size(), t / ms_[k].size(), 100 * t / total, k.c_str());
    if (a_) cudaEventDestroy(a_);
    if (b_) cudaEventDestroy(b_);
  }
  bool on() const { return on_ && !capturing_; }
  void set_capturing(bool c) { capturing_ = c; }
  void begin(cudaStream_t s) {
    if (!a_) {
      cudaEventCreate(&a_);
      cudaEventCreate(&b_);
    }
    cudaStreamSynchronize(s);
    cudaEventRecord(a_, s);
  }
  void end(cudaStream_t s, const std::string& name) {
    cudaEventRecord(b_, s);
    cudaEventSynchronize(b_);
    float t = 0;
    cudaEventElapsedTime(&t, a_, b_);
    ms_[name].push_back(t);
  }

 private:
  bool on_ = false, capturing_ = false;
  cudaEvent_t a_ = nullptr, b_ = nullptr;
  std::map<std::string, std::vector<double>> ms_;
};

// Times the enclosing scope under `name` when the timer is on.
class OpScope {
 public:
  OpScope(OpTimer& t, cudaStream_t s, std::string name) : t_(t), s_(s), name_(std::move(name)) {
    if (t_.on()) t_.begin(s_);
  }
  ~OpScope() {
    if (t_.on()) t_.end(s_, name_);
  }

 private:
  OpTimer& t_;
  cudaStream_t s_;
  std::string name_;
};

}  // namespace helix
