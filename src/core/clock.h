#pragma once
// Wall-clock timing for stats and summaries.
#include <chrono>

namespace helix {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace helix
