// EPLB planner internals: replica counts, the duplicate-free LPT packing with swap refinement,
// and the hierarchical (groups onto nodes) plan. See eplb.h for the planner as a whole.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>

#include "core/error.h"
#include "moe/eplb_detail.h"

namespace helix {
// ============================================================================================
// Planner internals
// ============================================================================================

namespace eplb_detail {

void check_shape(const std::vector<double>& load, int S, int R) {
  const int E = static_cast<int>(load.size());
  if (E <= 0) fail("eplb: the load has no experts");
  if (R <= 0) fail("eplb: --ranks must be > 0, got {}", R);
  if (S <= 0) fail("eplb: --slots must be > 0, got {}", S);
  if (S % R != 0) fail("eplb: --slots {} is not a multiple of --ranks {}", S, R);
  if (S < E) fail("eplb: --slots {} is fewer than the {} experts: every expert needs a slot", S, E);
  // More slots than experts x ranks would put two replicas of one expert on a rank.
  if (static_cast<int64_t>(S) > static_cast<int64_t>(E) * R)
    fail("eplb: --slots {} is more than experts x ranks = {} x {}", S, E, R);
}

// Replica counts: each of the S - E extra slots goes to the expert with the largest load per
// replica (ties to the lower id). With cap > 0 no expert gets more than cap replicas. This
// greedy minimises the largest per-replica load, a lower bound on the max rank load.
std::vector<int> counts_by_load_per_replica(const std::vector<double>& w, int S, int cap) {
  const int E = static_cast<int>(w.size());
  std::vector<int> c(E, 1);
  using Item = std::pair<double, int>;  // (load per replica, -expert)
  std::priority_queue<Item> pq;
  for (int e = 0; e < E; ++e)
    if (cap <= 0 || c[e] < cap) pq.push({w[e], -e});
  for (int k = E; k < S; ++k) {
    HELIX_CHECK(!pq.empty(), "eplb: no expert can take another replica");
    int e = -pq.top().second;
    pq.pop();
    ++c[e];
    if (cap <= 0 || c[e] < cap) pq.push({w[e] / c[e], -e});
  }
  return c;
}

// Replicas as (per-replica load, expert), heaviest first, replicas of one expert adjacent.
std::vector<std::pair<double, int>> sorted_replicas(const std::vector<double>& w,
                                                    const std::vector<int>& c) {
  std::vector<std::pair<double, int>> items;
  for (int e = 0; e < static_cast<int>(w.size()); ++e)
    for (int k = 0; k < c[e]; ++k) items.push_back({w[e] / c[e], e});
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return a.second < b.second;
  });
  return items;
}

// Heaviest replica first onto the lightest rank with a free slot (ties to the lower rank).
// With no_dup, ranks already holding the expert are skipped while another rank has room.
void pack_lpt(Packing& pk, const std::vector<std::pair<double, int>>& items, bool no_dup) {
  using Item = std::pair<double, int>;  // (load, rank) min-heap
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> pq;
  for (int r = 0; r < pk.R; ++r) pq.push({0.0, r});
  std::vector<Item> skipped;
  for (const auto& [x, e] : items) {
    skipped.clear();
    int chosen = -1;
    while (!pq.empty()) {
      Item top = pq.top();
      pq.pop();
      if (no_dup && pk.at(top.second, e) > 0) {
        skipped.push_back(top);
        continue;
      }
      chosen = top.second;
      break;
    }
    if (chosen < 0) {  // every rank with room holds e already: accept a duplicate, fixed later
      std::sort(skipped.begin(), skipped.end());
      chosen = skipped.front().second;
      skipped.erase(skipped.begin());
    }
    pk.put(chosen, e);
    if (static_cast<int>(pk.rank[chosen].size()) < pk.m) pq.push({pk.load[chosen], chosen});
    for (const Item& it : skipped) pq.push(it);
  }
}

struct Swap {
  double score = std::numeric_limits<double>::infinity();
  int ra = -1, ia = -1, rb = -1, ib = -1;
};

// Best swap of a replica on rank a with a lighter replica on another rank: minimises
// max(new load a, new load b) subject to no duplicates. Ranks must be sorted (Packing::sort_rank).
Swap best_swap_from(Packing& pk, int a) {
  Swap best;
  const double la = pk.load[a];
  const auto& A = pk.rank[a];
  // Lightest partners first; after the first improving partner a few more are tried (the best
  // partner is nearly always among the lightest) to keep an iteration cheap on many ranks.
  std::vector<int> order(pk.R);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int p, int q) {
    return pk.load[p] < pk.load[q] || (pk.load[p] == pk.load[q] && p < q);
  });
  int after_found = 0;
  for (int b : order) {
    if (best.ra >= 0 && ++after_found > 4) break;
    if (b == a) continue;
    const double gap = la - pk.load[b];
    if (gap <= 0) continue;
    const auto& B = pk.rank[b];
    for (int i = 0; i < static_cast<int>(A.size()); ++i) {
      const int x = A[i];
      const double target = pk.pr[x] - gap / 2;
      // first index in B with pr >= target
      int pos = static_cast<int>(std::lower_bound(B.begin(), B.end(), target,
                                                  [&](int y, double t) { return pk.pr[y] < t; }) -
                                 B.begin());
      // scan outwards a few valid candidates each way
      for (int dir = -1; dir <= 1; dir += 2) {
        int tried = 0;
        for (int j = dir < 0 ? pos - 1 : pos; j >= 0 && j < static_cast<int>(B.size()) && tried < 3;
             j += dir) {
          const int y = B[j];
          const double d = pk.pr[x] - pk.pr[y];
          if (d <= 0 || d >= gap) {
            if (dir > 0 && d <= 0) break;    // moving up only shrinks d further
            if (dir < 0 && d >= gap) break;  // moving down only grows d further
            continue;
          }
          if (x == y || pk.at(b, x) > 0 || pk.at(a, y) > 0) {
            ++tried;
            continue;
          }
          ++tried;
          const double score = std::max(la - d, pk.load[b] + d);
          if (score < best.score) best = {score, a, i, b, j};
        }
      }
    }
  }
  return best;
}

void apply_swap(Packing& pk, const Swap& s) {
  int x = pk.rank[s.ra][s.ia], y = pk.rank[s.rb][s.ib];
  pk.rank[s.ra][s.ia] = y;
  pk.rank[s.rb][s.ib] = x;
  --pk.at(s.ra, x);
  ++pk.at(s.ra, y);
  --pk.at(s.rb, y);
  ++pk.at(s.rb, x);
  pk.recompute_load(s.ra);
  pk.recompute_load(s.rb);
  pk.sort_rank(s.ra);
  pk.sort_rank(s.rb);
}

// Removes duplicates by swapping one copy with a replica of another rank, choosing the swap
// that keeps max(load a, load b) lowest. Returns false when some duplicate could not be removed.
bool remove_duplicates(Packing& pk) {
  for (int a = 0; a < pk.R; ++a) {
    for (int i = 0; i < static_cast<int>(pk.rank[a].size()); ++i) {
      const int x = pk.rank[a][i];
      if (pk.at(a, x) <= 1) continue;
      Swap best;
      for (int b = 0; b < pk.R; ++b) {
        if (b == a || pk.at(b, x) > 0) continue;
        for (int j = 0; j < static_cast<int>(pk.rank[b].size()); ++j) {
          const int y = pk.rank[b][j];
          if (pk.at(a, y) > 0 || pk.at(b, y) > 1) continue;
          const double d = pk.pr[x] - pk.pr[y];
          const double score = std::max(pk.load[a] - d, pk.load[b] + d);
          if (score < best.score) best = {score, a, i, b, j};
        }
      }
      if (best.ra < 0) return false;
      int y = pk.rank[best.rb][best.ib];
      pk.rank[a][i] = y;
      pk.rank[best.rb][best.ib] = x;
      --pk.at(a, x);
      ++pk.at(a, y);
      --pk.at(best.rb, y);
      ++pk.at(best.rb, x);
      pk.recompute_load(a);
      pk.recompute_load(best.rb);
      --i;  // re-check this position
    }
  }
  return !pk.has_dup();
}

// Local search: while the max-loaded rank has a swap that lowers it without raising the partner
// to its level, take the best such swap.
void refine(Packing& pk, double lower_bound) {
  for (int r = 0; r < pk.R; ++r) pk.sort_rank(r);
  const int max_iter = 20 * pk.R + 4 * pk.m * pk.R;
  for (int it = 0; it < max_iter; ++it) {
    int a = static_cast<int>(std::max_element(pk.load.begin(), pk.load.end()) - pk.load.begin());
    const double la = pk.load[a];
    if (la <= lower_bound * (1 + kGoodEnough)) return;
    Swap s = best_swap_from(pk, a);
    if (s.ra < 0 || s.score >= la * (1 - kRelEps)) return;
    apply_swap(pk, s);
  }
}

double lower_bound_of(const std::vector<double>& w, const std::vector<int>& c, int R) {
  double total = 0, mx = 0;
  for (size_t e = 0; e < w.size(); ++e) {
    total += w[e];
    mx = std::max(mx, w[e] / c[e]);
  }
  return std::max(total / R, mx);
}

// The flat plan (no groups, no previous): best of our LPT seed and the greedy's packing, each
// de-duplicated and refined.
Placement plan_flat(const std::vector<double>& w, int S, int R) {
  const int E = static_cast<int>(w.size());
  const int m = S / R;
  if (static_cast<long long>(E) * R < S)
    fail(
        "eplb: --slots {} exceeds experts x ranks = {}: some rank would need two replicas of one "
        "expert",
        S, static_cast<long long>(E) * R);

  Placement best;
  double best_max = std::numeric_limits<double>::infinity();
  bool best_dup = true;
  auto consider = [&](Packing& pk) {
    bool dup = pk.has_dup();
    double mx = pk.max_load();
    if ((best_dup && !dup) || (dup == best_dup && mx < best_max * (1 - kRelEps))) {
      best = pk.to_placement(S);
      best_max = mx;
      best_dup = dup;
    }
  };

  // Seed 1: capped counts, duplicate-avoiding LPT.
  {
    std::vector<int> c = counts_by_load_per_replica(w, S, R);
    Packing pk;
    pk.init(w, c, R, m);
    pack_lpt(pk, sorted_replicas(w, c), /*no_dup=*/true);
    remove_duplicates(pk);
    refine(pk, lower_bound_of(w, c, R));
    consider(pk);
  }
  // Seed 2: exactly the greedy baseline's packing, so that we are never worse than it.
  {
    std::vector<int> c = counts_by_load_per_replica(w, S, 0);
    bool feasible = *std::max_element(c.begin(), c.end()) <= R;
    if (feasible) {
      Packing pk;
      pk.init(w, c, R, m);
      pack_lpt(pk, sorted_replicas(w, c), /*no_dup=*/false);
      // Only needed when the greedy beats what we have; refining it is the costly part.
      if (pk.max_load() < best_max * (1 + kRelEps) && remove_duplicates(pk)) {
        refine(pk, lower_bound_of(w, c, R));
        consider(pk);
      }
    }
  }
  // Seeds 3+: when the packing is coarse (few, heavy replicas) the best counts are not the
  // min-max-per-replica ones; try moving one replica to or from each of the heaviest experts.
  const std::vector<int> base = counts_by_load_per_replica(w, S, R);
  const double lb = lower_bound_of(w, base, R);
  if (best_max > lb * (1 + 1e-3) && S <= 4096) {
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    const int T = std::min(E, E <= 64 ? 64 : 8);  // small layers are cheap: try every expert
    std::partial_sort(order.begin(), order.begin() + T, order.end(),
                      [&](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    auto try_counts = [&](const std::vector<int>& c) {
      Packing pk;
      pk.init(w, c, R, m);
      pack_lpt(pk, sorted_replicas(w, c), /*no_dup=*/true);
      if (!remove_duplicates(pk)) return;
      refine(pk, lower_bound_of(w, c, R));
      consider(pk);
    };
    for (int k = 0; k < T; ++k) {
      const int t = order[k];
      // t gains a replica from the expert that suffers least from losing one
      if (base[t] < R) {
        int from = -1;
        for (int e = 0; e < E; ++e)
          if (e != t && base[e] >= 2 &&
              (from < 0 || w[e] / (base[e] - 1) < w[from] / (base[from] - 1)))
            from = e;
        if (from >= 0) {
          std::vector<int> c = base;
          ++c[t];
          --c[from];
          try_counts(c);
        }
      }
      // t gives a replica to the expert with the largest load per replica
      if (base[t] >= 2) {
        int to = -1;
        for (int e = 0; e < E; ++e)
          if (e != t && base[e] < R && (to < 0 || w[e] / base[e] > w[to] / base[to])) to = e;
        if (to >= 0) {
          std::vector<int> c = base;
          --c[t];
          ++c[to];
          try_counts(c);
        }
      }
    }
  }
  return best;
}

// LPT of groups onto nodes with G/N groups per node; returns node of each group.
std::vector<int> pack_groups(const std::vector<double>& gload, int N) {
  const int G = static_cast<int>(gload.size());
  std::vector<int> order(G);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return gload[a] > gload[b]; });
  std::vector<double> nload(N, 0);
  std::vector<int> ncount(N, 0), node(G, -1);
  for (int g : order) {
    int best = -1;
    for (int n = 0; n < N; ++n)
      if (ncount[n] < G / N && (best < 0 || nload[n] < nload[best])) best = n;
    node[g] = best;
    nload[best] += gload[g];
    ++ncount[best];
  }
  return node;
}

// Hierarchical plan: groups packed onto nodes, then a flat plan per node over its ranks and
// slots. nullopt when the shapes do not allow it.
std::optional<Placement> plan_hierarchical(const std::vector<double>& w, int S, int R, int G,
                                           int N) {
  const int E = static_cast<int>(w.size());
  const int epg = E / G, gpn = G / N, Sn = S / N, Rn = R / N, En = E / N;
  if (static_cast<long long>(En) * Rn < Sn) return std::nullopt;
  std::vector<double> gload(G, 0);
  for (int e = 0; e < E; ++e) gload[e / epg] += w[e];
  std::vector<int> node = pack_groups(gload, N);
  Placement p;
  p.num_slots = S;
  p.num_ranks = R;
  p.num_experts = E;
  p.slot_to_expert.assign(S, -1);
  for (int n = 0; n < N; ++n) {
    std::vector<int> experts;  // global ids of this node's experts
    for (int g = 0; g < G; ++g)
      if (node[g] == n)
        for (int e = g * epg; e < (g + 1) * epg; ++e) experts.push_back(e);
    HELIX_CHECK(static_cast<int>(experts.size()) == En && gpn > 0, "eplb: group packing broke");
    std::vector<double> sub(En);
    for (int i = 0; i < En; ++i) sub[i] = w[experts[i]];
    Placement ps = plan_flat(sub, Sn, Rn);
    for (int s = 0; s < Sn; ++s) p.slot_to_expert[n * Sn + s] = experts[ps.slot_to_expert[s]];
  }
  return p;
}

}  // namespace eplb_detail
}  // namespace helix
