#pragma once
// Helpers for the engine's per-rank reports: communication counter arithmetic and a fixed-layout
// float encoding of a RankReport, so that MPI ranks can all_gather them.
#include <vector>

#include "engine/engine.h"

namespace helix {

CommStats stats_minus(const CommStats& a, const CommStats& b);  // a - b
void stats_add(CommStats& into, const CommStats& d);

std::vector<float> report_encode(const RankReport& r);
RankReport report_decode(const float* p, int step_entries);

}  // namespace helix
