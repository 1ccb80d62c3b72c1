// EPLB planner internals for re-planning against a previous placement: matching new rank
// contents to old ranks, reverting slots within a load budget, and the descent that re-points
// single slots. See eplb.h (eplb_plan_layer's `previous`).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "moe/eplb_detail.h"

namespace helix {
namespace eplb_detail {

// ---- previous-aware ------------------------------------------------------------------------

// Max-weight perfect matching on an n x n matrix (Hungarian method with potentials, on costs
// -weight). Returns col assigned to each row.
std::vector<int> max_weight_matching(const std::vector<std::vector<double>>& wt) {
  const int n = static_cast<int>(wt.size());
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based arrays; row 0 / col 0 are the virtual start.
  std::vector<double> u(n + 1, 0), v(n + 1, 0);
  std::vector<int> match_col(n + 1, 0), way(n + 1, 0);  // match_col[j] = row matched to col j
  for (int i = 1; i <= n; ++i) {
    match_col[0] = i;
    int j0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<char> used(n + 1, 0);
    do {
      used[j0] = 1;
      int i0 = match_col[j0], j1 = 0;
      double delta = inf;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        double cur = -wt[i0 - 1][j - 1] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[match_col[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (match_col[j0] != 0);
    do {
      int j1 = way[j0];
      match_col[j0] = match_col[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> row_to_col(n, -1);
  for (int j = 1; j <= n; ++j) row_to_col[match_col[j] - 1] = j - 1;
  return row_to_col;
}

// Places rank contents (multisets of experts) onto slots so that as many slots as possible keep
// their previous expert: ranks are matched to previous ranks by overlap, then inside a rank an
// expert stays in a slot that already held it.
Placement align_to_previous(const std::vector<std::vector<int>>& contents, const Placement& prev) {
  const int R = prev.num_ranks, m = prev.slots_per_rank(), E = prev.num_experts;
  // overlap[j][r] = |contents[j] ∩ prev rank r| (multiset)
  std::vector<std::vector<double>> overlap(R, std::vector<double>(R, 0));
  // holders of e: hold[hold_at[e] .. hold_at[e + 1]), the new ranks holding e (with multiplicity)
  std::vector<int> hold_at(E + 1, 0), hold;
  for (int j = 0; j < R; ++j)
    for (int e : contents[j]) ++hold_at[e + 1];
  for (int e = 0; e < E; ++e) hold_at[e + 1] += hold_at[e];
  hold.resize(hold_at[E]);
  {
    std::vector<int> fill(hold_at.begin(), hold_at.end() - 1);
    for (int j = 0; j < R; ++j)
      for (int e : contents[j]) hold[fill[e]++] = j;
  }
  std::vector<int> used(R, 0), cnt(E, 0);  // both back to all-zero after each use
  for (int r = 0; r < R; ++r) {
    // count previous copies of e on r, pair each with at most that many copies on j
    for (int s = r * m; s < (r + 1) * m; ++s) ++cnt[prev.slot_to_expert[s]];
    for (int s = r * m; s < (r + 1) * m; ++s) {
      const int e = prev.slot_to_expert[s], k = cnt[e];
      if (k == 0) continue;  // seen earlier on this rank
      cnt[e] = 0;
      for (int h = hold_at[e]; h < hold_at[e + 1]; ++h)
        if (used[hold[h]] < k) {
          ++used[hold[h]];
          overlap[hold[h]][r] += 1;
        }
      for (int h = hold_at[e]; h < hold_at[e + 1]; ++h) used[hold[h]] = 0;
    }
  }
  // Identity is the only best matching when every new rank overlaps its own previous rank more
  // than any other (the sum of row maxima bounds every matching): the usual case once the
  // contents came from the previous placement itself.
  bool identity = true;
  for (int j = 0; j < R && identity; ++j)
    for (int r = 0; r < R; ++r)
      if (r != j && overlap[j][r] >= overlap[j][j]) {
        identity = false;
        break;
      }
  std::vector<int> to_rank;
  if (identity) {
    to_rank.resize(R);
    std::iota(to_rank.begin(), to_rank.end(), 0);
  } else if (R <= 512) {
    to_rank = max_weight_matching(overlap);
  } else {  // greedy by overlap: cubic matching would be too slow
    std::vector<std::tuple<double, int, int>> pairs;
    for (int j = 0; j < R; ++j)
      for (int r = 0; r < R; ++r) pairs.push_back({-overlap[j][r], j, r});
    std::sort(pairs.begin(), pairs.end());
    to_rank.assign(R, -1);
    std::vector<char> taken(R, 0);
    for (auto& [o, j, r] : pairs)
      if (to_rank[j] < 0 && !taken[r]) {
        to_rank[j] = r;
        taken[r] = 1;
      }
  }
  Placement p = prev;
  std::vector<int>& left = cnt;  // all zero again; back to zero after each rank
  std::vector<int> free_slots, rest;
  for (int j = 0; j < R; ++j) {
    const int r = to_rank[j];
    for (int e : contents[j]) ++left[e];
    free_slots.clear();
    rest.clear();
    for (int s = r * m; s < (r + 1) * m; ++s) {
      if (left[prev.slot_to_expert[s]] > 0) {
        --left[prev.slot_to_expert[s]];
        p.slot_to_expert[s] = prev.slot_to_expert[s];
      } else {
        free_slots.push_back(s);
      }
    }
    for (int e : contents[j])
      if (left[e] > 0) {
        --left[e];
        rest.push_back(e);
      }
    std::sort(rest.begin(), rest.end());
    for (size_t k = 0; k < free_slots.size(); ++k) p.slot_to_expert[free_slots[k]] = rest[k];
  }
  return p;
}

std::vector<std::vector<int>> contents_of(const Placement& p) {
  const int m = p.slots_per_rank();
  std::vector<std::vector<int>> c(p.num_ranks);
  for (int s = 0; s < p.num_slots; ++s) c[s / m].push_back(p.slot_to_expert[s]);
  return c;
}

// Reverts changed slots back to their previous expert where that keeps every rank within
// `budget` and creates no duplicate: first pairs of slots whose swap restores both, then single
// slots (which changes replica counts).
void revert_within_budget(SlotState& st, const Placement& prev, double budget) {
  const int S = st.p.num_slots;
  // pair swaps; changed slots by their current expert, each bucket in slot order:
  // bucket of x = chg[chg_at[x] .. chg_at[x + 1])
  const int E = st.p.num_experts;
  std::vector<int> chg_at(E + 1, 0), chg;
  for (int s = 0; s < S; ++s)
    if (st.p.slot_to_expert[s] != prev.slot_to_expert[s]) ++chg_at[st.p.slot_to_expert[s] + 1];
  for (int x = 0; x < E; ++x) chg_at[x + 1] += chg_at[x];
  chg.resize(chg_at[E]);
  {
    std::vector<int> fill(chg_at.begin(), chg_at.end() - 1);
    for (int s = 0; s < S; ++s)
      if (st.p.slot_to_expert[s] != prev.slot_to_expert[s]) chg[fill[st.p.slot_to_expert[s]]++] = s;
  }
  for (int s1 = 0; s1 < S; ++s1) {
    const int f1 = st.p.slot_to_expert[s1], e1 = prev.slot_to_expert[s1];
    if (f1 == e1) continue;
    // partners: slots that held e1 and had f1 before
    for (int h = chg_at[e1]; h < chg_at[e1 + 1]; ++h) {
      const int s2 = chg[h];
      if (st.p.slot_to_expert[s2] != e1 || prev.slot_to_expert[s2] != f1) continue;
      const int r1 = s1 / st.m, r2 = s2 / st.m;
      if (r1 != r2) {
        if (st.count_on(r1, e1) > 0 || st.count_on(r2, f1) > 0) continue;
        const double d = st.pr(f1) - st.pr(e1);
        if (st.load[r1] - d > budget || st.load[r2] + d > budget) continue;
      }
      st.swap_slots(s1, s2);
      break;
    }
  }
  // single slots
  for (int s = 0; s < S; ++s) {
    const int e = prev.slot_to_expert[s];
    if (st.p.slot_to_expert[s] == e) continue;
    if (st.repoint_score(s, e) <= budget) st.repoint(s, e);
  }
}

// Descent over single changes of the max-loaded rank a: swap one of its slots with a slot
// elsewhere (counts fixed), or re-point one of its slots to one of the K experts with the
// largest load per replica (counts change). Takes the change that leaves the changed ranks
// lowest, as long as they all end below a's load; never creates a duplicate (ties: the first
// slot of a, then the first slot elsewhere). True once the max rank load is <= target.
//
// The swap search does not scan every slot: each rank keeps its slots sorted by load per
// replica, and for a slot x of a and a rank b the score max(la - d, lb + d) (d = pr(x) - pr(y))
// falls and then rises along b's sorted list, so the best partner lies next to the crossing
// point found by binary search. Ranks are tried lightest first and cut off once (la + lb) / 2,
// a lower bound of any swap with b, exceeds the best found.
bool descend(SlotState& st, double target_max_rank_load, int max_iter) {
  const int R = st.p.num_ranks, m = st.m, E = st.p.num_experts;
  const double target = target_max_rank_load * (1 + kRelEps);
  const int K = std::min(E, 16);  // re-point targets: the experts with the largest pr
  std::vector<std::vector<std::pair<double, int>>> by_pr(R);  // rank -> (pr, slot), sorted
  std::vector<char> dirty(R, 1), holds_x(R, 0);
  std::vector<int> on_a(E, 0), order, heavy;
  std::vector<double> prv(E);
  bool heavy_stale = true;
  auto rebuild = [&](int r) {
    auto& v = by_pr[r];
    v.clear();
    for (int s = r * m; s < (r + 1) * m; ++s) v.push_back({st.pr(st.p.slot_to_expert[s]), s});
    std::sort(v.begin(), v.end());
    dirty[r] = 0;
  };
  for (int it = 0; it < max_iter; ++it) {
    const int a =
        static_cast<int>(std::max_element(st.load.begin(), st.load.end()) - st.load.begin());
    const double la = st.load[a];
    if (la <= target) return true;
    double best = la * (1 - kRelEps);
    int kind = 0, s1 = -1, s2 = -1, f = -1;

    // swaps of a slot on a with a slot elsewhere
    for (int i = a * m; i < (a + 1) * m; ++i) ++on_a[st.p.slot_to_expert[i]];
    order.clear();
    for (int r = 0; r < R; ++r)
      if (r != a) order.push_back(r);
    std::sort(order.begin(), order.end(), [&](int p, int q) {
      if (st.load[p] != st.load[q]) return st.load[p] < st.load[q];
      return p < q;
    });
    const double margin = 1e-12 * std::abs(la);  // rounding slack on the (la + lb) / 2 bound
    for (int i = a * m; i < (a + 1) * m; ++i) {
      const int x = st.p.slot_to_expert[i];
      const double px = st.pr(x);
      for (int q : st.ranks_of[x]) holds_x[q] = 1;
      for (int b : order) {
        const double lb = st.load[b];
        if ((la + lb) * 0.5 > best + margin) break;
        if (holds_x[b]) continue;
        if (dirty[b]) rebuild(b);  // sorted lists are built on first use only
        const auto& v = by_pr[b];
        // crossing point: before k the score is lb + d (falling), from k on la - d (rising);
        // y with pr(y) >= pr(x) (d <= 0, no gain) lie after k and score >= la > best
        auto before_cross = [&](const std::pair<double, int>& e) {
          const double d = px - e.first;
          return la - d < lb + d;
        };
        const int k =
            static_cast<int>(std::partition_point(v.begin(), v.end(), before_cross) - v.begin());
        auto consider = [&](int idx) -> bool {  // false once scores only rise from here
          const double d = px - v[idx].first;
          const double score = std::max(la - d, lb + d);
          if (score > best) return false;
          const int j = v[idx].second;
          if (on_a[st.p.slot_to_expert[j]] > 0) return true;
          const bool better = score < best || (kind == 1 && (i < s1 || (i == s1 && j < s2)));
          if (better) {
            best = score;
            kind = 1;
            s1 = i;
            s2 = j;
          }
          return true;
        };
        for (int idx = k - 1; idx >= 0; --idx)
          if (!consider(idx)) break;
        for (int idx = k; idx < static_cast<int>(v.size()); ++idx)
          if (!consider(idx)) break;
      }
      for (int q : st.ranks_of[x]) holds_x[q] = 0;
    }

    // re-point one slot of a to a heavy expert
    if (heavy_stale) {
      for (int e = 0; e < E; ++e) prv[e] = st.pr(e);
      heavy.resize(E);
      std::iota(heavy.begin(), heavy.end(), 0);
      std::partial_sort(heavy.begin(), heavy.begin() + K, heavy.end(), [&](int p, int q) {
        if (prv[p] != prv[q]) return prv[p] > prv[q];
        return p < q;
      });
      heavy.resize(K);
      heavy_stale = false;
    }
    // st.repoint_score(i, heavy[k]), with the parts that do not depend on k taken out of the loop
    const std::vector<double>& w = *st.w;
    for (int i = a * m; i < (a + 1) * m; ++i) {
      const int e = st.p.slot_to_expert[i];
      if (st.c[e] < 2) continue;  // would remove the last replica
      const double de = w[e] / (st.c[e] - 1) - w[e] / st.c[e];
      double others = -std::numeric_limits<double>::infinity();
      for (int q : st.ranks_of[e])
        if (q != a) others = std::max(others, st.load[q] + de);
      if (others > best) continue;
      const double base = st.load[a] - w[e] / st.c[e], tail = de * (on_a[e] - 1);
      for (int k = 0; k < K; ++k) {
        const int g = heavy[k];
        if (g == e || on_a[g] > 0) continue;  // no change, or a duplicate on a
        const double score = std::max(base + w[g] / (st.c[g] + 1) + tail, others);
        if (score < best || (kind == 1 && score <= best)) {
          best = score;
          kind = 2;
          s1 = i;
          f = g;
        }
      }
    }
    for (int i = a * m; i < (a + 1) * m; ++i) --on_a[st.p.slot_to_expert[i]];
    if (kind == 0) return false;
    if (kind == 1) {
      dirty[s1 / m] = dirty[s2 / m] = 1;
      st.swap_slots(s1, s2);
    } else {
      // pr of every replica of the old and the new expert changes
      const int e = st.p.slot_to_expert[s1];
      for (int q : st.ranks_of[e]) dirty[q] = 1;
      for (int q : st.ranks_of[f]) dirty[q] = 1;
      st.repoint(s1, f);
      heavy_stale = true;
    }
  }
  return false;
}

}  // namespace eplb_detail
}  // namespace helix
