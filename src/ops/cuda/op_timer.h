#pragma once
// Per-op GPU time of CudaOps for finding where a decode step goes (HELIX_OP_TIMING=1; eager steps
// only, e.g. bench_model_decode --no-cuda-graph): events around each op, waited on at once (so it
// serialises host and device), summed by name and printed to stderr when the backend goes away.
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
    std::vector<std::pair<double, std::string>> v;
    double total = 0;
    for (const auto& [k, t] : ms_) {
      v.emplace_back(t.first, k);
      total += t.first;
    }
    std::sort(v.rbegin(), v.rend());
    std::fprintf(stderr, "op timing (HELIX_OP_TIMING): %.3f ms in all\n", total);
    for (const auto& [t, k] : v)
      std::fprintf(stderr, "  %10.3f ms %6d calls %8.4f ms/call %5.1f%%  %s\n", t, ms_[k].second,
                   t / ms_[k].second, 100 * t / total, k.c_str());
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
    auto& e = ms_[name];
    e.first += t;
    e.second += 1;
  }

 private:
  bool on_ = false, capturing_ = false;
  cudaEvent_t a_ = nullptr, b_ = nullptr;
  std::map<std::string, std::pair<double, int>> ms_;
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
