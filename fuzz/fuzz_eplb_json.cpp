// libFuzzer target for the EPLB files: placement.json and load.json parsers, then the planner and
// the balance figures on what they accept (small sizes only, to keep each run fast). Any escape
// other than helix::Error, a NaN balance from an accepted input, or a sanitizer report is a crash.
// The first input byte picks the parser; the rest is the JSON text.
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "moe/eplb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* in, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(in + 1), size - 1);
  try {
    if (in[0] & 1) {
      const helix::PlacementSet ps = helix::placement_from_json_text(text, "fuzz/placement.json");
      for (const auto& p : ps.layers) {
        helix::placement_validate(p);  // what the parser returns is valid
        if (p.num_slots <= 4096) {
          const helix::EplbRouter router(p);
          for (int e = 0; e < p.num_experts && e < 64; ++e) (void)router.route(e, e, 0, 1);
        }
      }
      if (ps.layers.size() > 1 && ps.layers[0].num_slots <= 4096)
        (void)helix::slots_moved(ps.layers[0], ps.layers[1]);
    } else {
      const helix::LoadMatrix load = helix::load_from_json_text(text, "fuzz/load.json");
      const int E = static_cast<int>(load[0].size());
      if (E <= 64 && load.size() <= 8) {
        const int R = 1 + (in[0] >> 1) % 4;
        const int S = ((E + R - 1) / R + (in[0] >> 3) % 2) * R;  // >= E, multiple of R
        const helix::PlacementSet ps = helix::eplb_plan(load, S, R);
        const helix::PlacementSet g = helix::eplb_plan_greedy(load, S, R);
        for (size_t l = 0; l < load.size(); ++l) {
          const double a = helix::placement_balance(ps.layers[l], load[l]).max_over_mean();
          const double b = helix::placement_balance(g.layers[l], load[l]).max_over_mean();
          if (!std::isfinite(a) || !std::isfinite(b)) __builtin_trap();
        }
      }
    }
  } catch (const helix::Error&) {
    // rejected input: fine
  }
  return 0;
}
