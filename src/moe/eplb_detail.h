#pragma once
// Internals shared by the EPLB planner's translation units (placement.cpp, eplb_pack.cpp,
// eplb_previous.cpp, eplb.cpp). Not part of the public interface: see eplb.h.
// w: load per logical expert [E]; c: replica counts [E]; S slots, R ranks.
#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "moe/eplb.h"

namespace helix::eplb_detail {

constexpr double kRelEps = 1e-12;
// Local search stops once within this of the lower bound: further swaps cannot be seen in any
// balance figure but cost time on large layers.
constexpr double kGoodEnough = 1e-6;

// placement.cpp
std::vector<double> normalized_load(const std::vector<double>& load);

// eplb_pack.cpp
void check_shape(const std::vector<double>& load, int S, int R);
std::vector<int> counts_by_load_per_replica(const std::vector<double>& w, int S, int cap);
std::vector<std::pair<double, int>> sorted_replicas(const std::vector<double>& w,
                                                    const std::vector<int>& c);
double lower_bound_of(const std::vector<double>& w, const std::vector<int>& c, int R);

// A layer being packed: which experts each rank holds.
struct Packing {
  int E = 0, R = 0, m = 0;
  std::vector<double> pr;              // [E] load per replica
  std::vector<std::vector<int>> rank;  // [R][m] experts, sorted by pr ascending when "sorted"
  std::vector<double> load;            // [R]
  std::vector<unsigned char> has;      // [R*E] how many replicas of e rank r holds (capped)

  void init(const std::vector<double>& w, const std::vector<int>& c, int R_, int m_) {
    E = static_cast<int>(w.size());
    R = R_;
    m = m_;
    pr.resize(E);
    for (int e = 0; e < E; ++e) pr[e] = w[e] / c[e];
    rank.assign(R, {});
    load.assign(R, 0.0);
    has.assign(static_cast<size_t>(R) * E, 0);
  }
  unsigned char& at(int r, int e) { return has[static_cast<size_t>(r) * E + e]; }
  void put(int r, int e) {
    rank[r].push_back(e);
    load[r] += pr[e];
    ++at(r, e);
  }
  void recompute_load(int r) {
    double s = 0;
    for (int e : rank[r]) s += pr[e];
    load[r] = s;
  }
  void sort_rank(int r) {
    std::sort(rank[r].begin(), rank[r].end(), [&](int a, int b) {
      if (pr[a] != pr[b]) return pr[a] < pr[b];
      return a < b;
    });
  }
  bool has_dup() const {
    for (unsigned char v : has)
      if (v > 1) return true;
    return false;
  }
  double max_load() const { return *std::max_element(load.begin(), load.end()); }
  Placement to_placement(int S) const {
    Placement p;
    p.num_slots = S;
    p.num_ranks = R;
    p.num_experts = E;
    p.slot_to_expert.reserve(S);
    for (int r = 0; r < R; ++r) {
      std::vector<int> ex = rank[r];
      std::sort(ex.begin(), ex.end());
      p.slot_to_expert.insert(p.slot_to_expert.end(), ex.begin(), ex.end());
    }
    return p;
  }
};

void pack_lpt(Packing& pk, const std::vector<std::pair<double, int>>& items, bool no_dup);
Placement plan_flat(const std::vector<double>& w, int S, int R);
std::optional<Placement> plan_hierarchical(const std::vector<double>& w, int S, int R, int G,
                                           int N);

// eplb_previous.cpp
// Mutable view of one placement with counts, rank loads and per-rank expert multiplicities,
// for changes that re-point single slots.
struct SlotState {
  const std::vector<double>* w = nullptr;
  Placement p;
  int m = 0;
  std::vector<int> c;                      // [E]
  std::vector<double> load;                // [R]
  std::vector<std::vector<int>> ranks_of;  // [E] ranks holding e (with multiplicity)

  void init(const std::vector<double>& w_, const Placement& p_) {
    w = &w_;
    p = p_;
    m = p.slots_per_rank();
    c = p.replica_counts();
    load = rank_loads(p, w_);
    ranks_of.assign(p.num_experts, {});
    for (int s = 0; s < p.num_slots; ++s) ranks_of[p.slot_to_expert[s]].push_back(s / m);
  }
  int count_on(int r, int e) const {
    return static_cast<int>(std::count(ranks_of[e].begin(), ranks_of[e].end(), r));
  }
  double pr(int e) const { return (*w)[e] / c[e]; }
  // Max load over the ranks changed by re-pointing slot s to f (f != current); +inf if invalid
  // (removes the last replica, or creates a duplicate on the slot's rank).
  double repoint_score(int s, int f) const {
    const int e = p.slot_to_expert[s], r = s / m;
    if (e == f || c[e] < 2 || count_on(r, f) > 0) return std::numeric_limits<double>::infinity();
    const double de = (*w)[e] / (c[e] - 1) - (*w)[e] / c[e];  // e's other replicas get heavier
    // f's replicas only get lighter, so only r and e's other ranks can rise.
    double lr = load[r] - (*w)[e] / c[e] + (*w)[f] / (c[f] + 1) + de * (count_on(r, e) - 1);
    double score = lr;
    for (int q : ranks_of[e])
      if (q != r) score = std::max(score, load[q] + de);
    return score;
  }
  void repoint(int s, int f) {
    const int e = p.slot_to_expert[s], r = s / m;
    auto it = std::find(ranks_of[e].begin(), ranks_of[e].end(), r);
    ranks_of[e].erase(it);
    ranks_of[f].push_back(r);
    p.slot_to_expert[s] = f;
    --c[e];
    ++c[f];
    // Only r and the ranks holding e or f change; each is summed afresh in slot order, as
    // rank_loads does, so the values match a full recomputation bit for bit.
    auto resum = [&](int q) {
      double l = 0.0;
      for (int t = q * m; t < (q + 1) * m; ++t)
        l += (*w)[p.slot_to_expert[t]] / c[p.slot_to_expert[t]];
      load[q] = l;
    };
    resum(r);
    for (int q : ranks_of[e]) resum(q);
    for (int q : ranks_of[f]) resum(q);
  }
  void swap_slots(int s1, int s2) {
    const int e1 = p.slot_to_expert[s1], e2 = p.slot_to_expert[s2];
    const int r1 = s1 / m, r2 = s2 / m;
    p.slot_to_expert[s1] = e2;
    p.slot_to_expert[s2] = e1;
    if (r1 != r2) {
      *std::find(ranks_of[e1].begin(), ranks_of[e1].end(), r1) = r2;
      *std::find(ranks_of[e2].begin(), ranks_of[e2].end(), r2) = r1;
      const double d = pr(e1) - pr(e2);
      load[r1] -= d;
      load[r2] += d;
    }
  }
  double max_load() const { return *std::max_element(load.begin(), load.end()); }
};

std::vector<std::vector<int>> contents_of(const Placement& p);
Placement align_to_previous(const std::vector<std::vector<int>>& contents, const Placement& prev);
void revert_within_budget(SlotState& st, const Placement& prev, double budget);
bool descend(SlotState& st, double target_max_rank_load, int max_iter);

}  // namespace helix::eplb_detail
