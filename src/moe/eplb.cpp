// The public EPLB planners (greedy baseline, ours, greedy repair); the pieces they combine live
// in eplb_pack.cpp (fresh plans) and eplb_previous.cpp (re-plans against a previous placement).
#include "moe/eplb.h"

#include <numeric>
#include <utility>

#include "core/error.h"
#include "moe/eplb_detail.h"

namespace helix {

using namespace eplb_detail;

// ============================================================================================
// Public planners
// ============================================================================================

Placement eplb_plan_greedy_layer(const std::vector<double>& raw_load, int num_slots,
                                 int num_ranks) {
  check_shape(raw_load, num_slots, num_ranks);
  const std::vector<double> load = normalized_load(raw_load);
  std::vector<int> c = counts_by_load_per_replica(load, num_slots, 0);
  Packing pk;
  pk.init(load, c, num_ranks, num_slots / num_ranks);
  pack_lpt(pk, sorted_replicas(load, c), /*no_dup=*/false);
  Placement p;
  p.num_slots = num_slots;
  p.num_ranks = num_ranks;
  p.num_experts = static_cast<int>(load.size());
  for (int r = 0; r < num_ranks; ++r)
    p.slot_to_expert.insert(p.slot_to_expert.end(), pk.rank[r].begin(), pk.rank[r].end());
  return p;
}

PlacementSet eplb_plan_greedy(const LoadMatrix& load, int num_slots, int num_ranks) {
  if (load.empty()) fail("eplb: the load has no layers");
  PlacementSet ps{num_slots, num_ranks, static_cast<int>(load[0].size()), {}};
  for (const auto& row : load)
    ps.layers.push_back(eplb_plan_greedy_layer(row, num_slots, num_ranks));
  return ps;
}

std::optional<Placement> eplb_repair_greedy(const std::vector<double>& load,
                                            const Placement& previous,
                                            double target_max_rank_load) {
  placement_validate(previous, "previous placement");
  HELIX_CHECK(static_cast<int>(load.size()) == previous.num_experts,
              "eplb: load has {} experts, previous placement {}", load.size(),
              previous.num_experts);
  SlotState st;
  st.init(load, previous);
  if (!descend(st, target_max_rank_load, 2 * previous.num_slots + 16)) return std::nullopt;
  return st.p;
}

Placement eplb_plan_layer(const std::vector<double>& raw_load, int num_slots, int num_ranks,
                          const EplbOptions& opt, const Placement* previous) {
  check_shape(raw_load, num_slots, num_ranks);
  const std::vector<double> load = normalized_load(raw_load);
  const int E = static_cast<int>(load.size());
  if (opt.num_groups > 0 && opt.num_nodes > 0) {
    const int G = opt.num_groups, N = opt.num_nodes;
    if (E % G != 0) fail("eplb: {} experts do not split into --groups {}", E, G);
    if (num_ranks % N != 0) fail("eplb: --ranks {} do not split over --nodes {}", num_ranks, N);
    if (G % N != 0) fail("eplb: --groups {} is not a multiple of --nodes {}", G, N);
  }
  if (previous != nullptr) {
    const Placement& prev = *previous;
    placement_validate(prev, "previous placement");
    if (prev.num_slots != num_slots || prev.num_ranks != num_ranks || prev.num_experts != E)
      fail("eplb: previous placement is {} slots x {} ranks x {} experts, expected {} x {} x {}",
           prev.num_slots, prev.num_ranks, prev.num_experts, num_slots, num_ranks, E);
    // No plan has a max rank load below the mean, so a previous placement within tolerance of
    // the mean is within the budget below whatever the fresh plan reaches: keep it as it is
    // (what the full search would return too) without planning afresh.
    if (opt.previous_tolerance >= 0 && !placement_has_duplicate(prev)) {
      const double mean = std::accumulate(load.begin(), load.end(), 0.0) / num_ranks;
      if (placement_balance(prev, load).max_rank_load <=
          mean * (1 + opt.previous_tolerance) * (1 - 1e-12))
        return prev;
    }
  }
  const Placement greedy = eplb_plan_greedy_layer(load, num_slots, num_ranks);
  const double greedy_max = placement_balance(greedy, load).max_rank_load;

  Placement best = plan_flat(load, num_slots, num_ranks);
  double best_max = placement_balance(best, load).max_rank_load;
  {
    // Changes of replica counts (re-pointing slots) on top of the packing's swaps.
    const double lb =
        lower_bound_of(load, counts_by_load_per_replica(load, num_slots, num_ranks), num_ranks);
    if (best_max > lb * (1 + 1e-4) && num_slots <= 2048) {
      SlotState st;
      st.init(load, best);
      descend(st, lb, 4 * num_ranks + 16);
      const double mx = st.max_load();
      if (mx < best_max * (1 - kRelEps)) {
        best = st.p;
        best_max = mx;
      }
    }
  }

  if (opt.num_groups > 0 && opt.num_nodes > 0) {
    const int G = opt.num_groups, N = opt.num_nodes;  // checked above
    if (auto h = plan_hierarchical(load, num_slots, num_ranks, G, N)) {
      const double hmax = placement_balance(*h, load).max_rank_load;
      if (!placement_has_duplicate(*h) && hmax <= best_max * (1 + opt.hierarchy_tolerance) &&
          hmax <= greedy_max * (1 + 1e-12)) {
        best = *h;
        best_max = hmax;
      }
    }
  }

  if (previous == nullptr) return best;

  // Previous-aware: candidates within budget, most unchanged slots wins.
  const Placement& prev = *previous;  // checked above
  const double budget = best_max * (1 + opt.previous_tolerance);

  std::vector<Placement> cands;
  cands.push_back(align_to_previous(contents_of(best), prev));
  if (auto r = eplb_repair_greedy(load, prev, budget)) cands.push_back(*r);

  Placement chosen;
  int chosen_kept = -1;
  bool chosen_dup = true;
  for (Placement& c : cands) {
    SlotState st;
    st.init(load, c);
    revert_within_budget(st, prev, budget * (1 + kRelEps));
    Placement q = align_to_previous(contents_of(st.p), prev);
    const bool dup = placement_has_duplicate(q);
    const int kept = num_slots - slots_moved(q, prev);
    if (placement_balance(q, load).max_rank_load > budget * (1 + 1e-9)) continue;
    if ((chosen_dup && !dup) || (dup == chosen_dup && kept > chosen_kept)) {
      chosen = std::move(q);
      chosen_kept = kept;
      chosen_dup = dup;
    }
  }
  return chosen;
}

PlacementSet eplb_plan(const LoadMatrix& load, int num_slots, int num_ranks, int num_groups,
                       int num_nodes, const PlacementSet* previous) {
  if (load.empty()) fail("eplb: the load has no layers");
  const int E = static_cast<int>(load[0].size());
  if (previous) {
    if (previous->layers.size() != load.size())
      fail("eplb: previous placement has {} layers, the load has {}", previous->layers.size(),
           load.size());
    if (previous->num_slots != num_slots || previous->num_ranks != num_ranks)
      fail("eplb: previous placement has {} slots over {} ranks, expected {} over {}",
           previous->num_slots, previous->num_ranks, num_slots, num_ranks);
    if (previous->num_experts != E)
      fail("eplb: previous placement has {} experts, the load has {}", previous->num_experts, E);
  }
  EplbOptions opt;
  opt.num_groups = num_groups;
  opt.num_nodes = num_nodes;
  PlacementSet ps{num_slots, num_ranks, E, {}};
  for (size_t l = 0; l < load.size(); ++l)
    ps.layers.push_back(eplb_plan_layer(load[l], num_slots, num_ranks, opt,
                                        previous ? &previous->layers[l] : nullptr));
  return ps;
}

}  // namespace helix
