#pragma once
// Expert-parallel load balancing (EPLB): placements of logical experts onto physical slots,
// routing over replicas, load statistics and the planner. See DESIGN.md "Expert parallelism
// and EPLB".
//
// Conventions shared by everything here:
//   S slots, R ranks, E logical experts; S % R == 0, S >= E; rank r owns slots
//   [r*S/R, (r+1)*S/R). A placement maps every slot to an expert; an expert may have several
//   replicas. Rank load assumes an expert's load splits evenly over its replicas, so a slot
//   holding expert e carries load[e] / replicas(e).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace helix {

// One layer's slot -> expert map.
struct Placement {
  int num_slots = 0;
  int num_ranks = 0;
  int num_experts = 0;
  std::vector<int> slot_to_expert;  // [num_slots], ids in [0, num_experts)

  int slots_per_rank() const { return num_slots / num_ranks; }
  int rank_of_slot(int slot) const { return slot / slots_per_rank(); }
  std::vector<int> replica_counts() const;  // [num_experts]
};

// Throws helix::Error naming the problem: S % R != 0, S < E, wrong slot_to_expert length, an id
// out of range, an expert with no slot. `what` prefixes the message (e.g. "layer 3").
void placement_validate(const Placement& p, const std::string& what = "placement");

// Placements of every layer, as in placement.json:
//   {"num_slots": S, "num_ranks": R, "num_experts": E,
//    "layers": [{"slot_to_expert": [...S ints...]}, ...]}
// ("num_experts" is written by us and optional on read; when absent it is the caller's
// expected_experts, or else max id + 1).
struct PlacementSet {
  int num_slots = 0;
  int num_ranks = 0;
  int num_experts = 0;
  std::vector<Placement> layers;
};

PlacementSet placement_read(const std::string& path, int expected_experts = -1);
void placement_write(const std::string& path, const PlacementSet& ps);
PlacementSet placement_from_json_text(const std::string& text, const std::string& what,
                                      int expected_experts = -1);
std::string placement_to_json_text(const PlacementSet& ps);

// load.json: {"load": [[...one number per logical expert...], ...one list per layer...]}.
// Every layer has the same number of experts; numbers are finite and >= 0.
using LoadMatrix = std::vector<std::vector<double>>;  // [layers][experts]
LoadMatrix load_read(const std::string& path);
LoadMatrix load_from_json_text(const std::string& text, const std::string& what);
void load_write(const std::string& path, const LoadMatrix& load);

// ---- balance figures ---------------------------------------------------------------------
struct Balance {
  double max_rank_load = 0;
  double mean_rank_load = 0;
  double max_over_mean() const { return mean_rank_load > 0 ? max_rank_load / mean_rank_load : 1.0; }
  double balancedness() const { return max_rank_load > 0 ? mean_rank_load / max_rank_load : 1.0; }
};

std::vector<double> rank_loads(const Placement& p, const std::vector<double>& load);  // [R]
Balance placement_balance(const Placement& p, const std::vector<double>& load);
// True when some rank holds two replicas of one expert.
bool placement_has_duplicate(const Placement& p);
// Slots whose expert differs between a and b (same shape required).
int slots_moved(const Placement& a, const Placement& b);

// ---- planners ----------------------------------------------------------------------------
// The public baseline: replica counts by "each extra slot to the expert with the largest load
// per replica", then replicas, heaviest first, each onto the lightest rank with a free slot.
// It may place two replicas of one expert on one rank.
Placement eplb_plan_greedy_layer(const std::vector<double>& load, int num_slots, int num_ranks);
PlacementSet eplb_plan_greedy(const LoadMatrix& load, int num_slots, int num_ranks);

struct EplbOptions {
  int num_groups = 0;  // > 0 with num_nodes > 0: hierarchical preference (see eplb.cpp)
  int num_nodes = 0;
  double hierarchy_tolerance = 0.01;  // accept the hierarchical plan within (1 + tol) of flat
  double previous_tolerance = 0.01;   // with a previous plan: max/mean within (1 + tol) of fresh
};

// Ours. Per layer: replica counts minimising the max per-replica load (capped at R), a
// duplicate-free LPT packing, swap local search from the max-loaded rank, a second seed from the
// greedy's own packing (when it is better than ours), count perturbations around the heaviest
// experts for coarse layers, and a descent that also re-points slots (changes counts). Never two
// replicas of one expert on one rank (requires S <= E * R). Never worse than the greedy where the
// greedy's plan has no duplicate (it is a seed); where the greedy stacks replicas on a rank — which
// we forbid — a very coarse layer (e.g. 16 experts on 4 ranks, heavy skew) can come out up to a
// fraction of a percent worse.
// Groups (num_groups G, num_nodes N; E % G == 0, R % N == 0, G % N == 0): a soft preference. We
// also plan hierarchically (groups packed onto nodes by load, then a flat plan per node) and take
// that plan when it is within (1 + hierarchy_tolerance) of the flat plan and not worse than the
// greedy; otherwise the flat plan, which may spread a group over nodes.
// With `previous` it keeps as many slots unchanged as it can find (the fresh plan's ranks matched
// to previous ranks by overlap, and the greedy repair below; then reverting single slots and slot
// pairs while within budget) staying within (1 + previous_tolerance) of the fresh plan's max.
Placement eplb_plan_layer(const std::vector<double>& load, int num_slots, int num_ranks,
                          const EplbOptions& opt = {}, const Placement* previous = nullptr);
PlacementSet eplb_plan(const LoadMatrix& load, int num_slots, int num_ranks, int num_groups = 0,
                       int num_nodes = 0, const PlacementSet* previous = nullptr);

// The greedy repair of a previous placement that eplb_plan's `previous` mode must match or beat
// on unchanged slots: starting from `previous`, repeatedly apply the single change (a swap of
// two slots, or re-pointing one slot of the max-loaded rank to another expert) that most lowers
// the max rank load, until it is <= target_max_rank_load. nullopt when it gets stuck.
std::optional<Placement> eplb_repair_greedy(const std::vector<double>& load,
                                            const Placement& previous, double target_max_rank_load);

// ---- runtime: routing and statistics -------------------------------------------------------
// Picks the physical slot for a routed (token, expert): a replica on the source rank when there
// is one; otherwise replicas in turn by (token + step), so a uniform token stream spreads over
// the replicas with counts differing by at most one. Deterministic in its arguments.
class EplbRouter {
 public:
  explicit EplbRouter(const Placement& p);
  int route(int expert, std::int64_t token, int src_rank, std::int64_t step = 0) const;
  const std::vector<int>& replicas(int expert) const { return replicas_[expert]; }
  int num_experts() const { return static_cast<int>(replicas_.size()); }

 private:
  int num_ranks_ = 0;
  int slots_per_rank_ = 0;
  std::vector<std::vector<int>> replicas_;  // [E] -> slots, ascending
};

}  // namespace helix
