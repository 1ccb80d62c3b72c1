#include "moe/eplb.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"

namespace helix {

// ============================================================================================
// Placement basics
// ============================================================================================

std::vector<int> Placement::replica_counts() const {
  std::vector<int> c(num_experts, 0);
  for (int e : slot_to_expert)
    if (e >= 0 && e < num_experts) ++c[e];
  return c;
}

void placement_validate(const Placement& p, const std::string& what) {
  if (p.num_ranks <= 0) fail("{}: num_ranks must be > 0, got {}", what, p.num_ranks);
  if (p.num_experts <= 0) fail("{}: num_experts must be > 0, got {}", what, p.num_experts);
  if (p.num_slots <= 0) fail("{}: num_slots must be > 0, got {}", what, p.num_slots);
  if (p.num_slots % p.num_ranks != 0)
    fail("{}: num_slots {} is not a multiple of num_ranks {}", what, p.num_slots, p.num_ranks);
  if (p.num_slots < p.num_experts)
    fail("{}: num_slots {} is fewer than num_experts {}: every expert needs a slot", what,
         p.num_slots, p.num_experts);
  if (static_cast<int>(p.slot_to_expert.size()) != p.num_slots)
    fail("{}: slot_to_expert has {} entries, expected num_slots = {}", what,
         p.slot_to_expert.size(), p.num_slots);
  std::vector<int> c(p.num_experts, 0);
  for (int s = 0; s < p.num_slots; ++s) {
    int e = p.slot_to_expert[s];
    if (e < 0 || e >= p.num_experts)
      fail("{}: slot {} holds expert {}, outside [0, {})", what, s, e, p.num_experts);
    ++c[e];
  }
  for (int e = 0; e < p.num_experts; ++e)
    if (c[e] == 0) fail("{}: expert {} has no slot", what, e);
}

std::vector<double> rank_loads(const Placement& p, const std::vector<double>& load) {
  std::vector<int> c = p.replica_counts();
  std::vector<double> rl(p.num_ranks, 0.0);
  const int m = p.slots_per_rank();
  for (int s = 0; s < p.num_slots; ++s) {
    int e = p.slot_to_expert[s];
    rl[s / m] += load[e] / c[e];
  }
  return rl;
}

namespace {

// Loads near the double range overflow when summed (inf, then inf/inf = nan or a SIGFPE on a
// later conversion). Every figure here is scale-invariant, so loads whose largest entry is past
// 2^64 are scaled by a power of two (exact: the same plan, bit for bit) so that it lies in
// [0.5, 1). Negative or non-finite loads are errors.
std::vector<double> normalized_load(const std::vector<double>& load) {
  double mx = 0;
  for (size_t e = 0; e < load.size(); ++e) {
    if (!std::isfinite(load[e]) || load[e] < 0)
      fail("eplb: load of expert {} is {}: loads must be finite and >= 0", e, load[e]);
    mx = std::max(mx, load[e]);
  }
  if (mx <= 0x1p64) return load;
  int ex = 0;
  std::frexp(mx, &ex);
  std::vector<double> out(load.size());
  for (size_t e = 0; e < load.size(); ++e) out[e] = std::ldexp(load[e], -ex);
  return out;
}

}  // namespace

Balance placement_balance(const Placement& p, const std::vector<double>& raw_load) {
  HELIX_CHECK(static_cast<int>(raw_load.size()) == p.num_experts,
              "eplb: load has {} experts, placement {}", raw_load.size(), p.num_experts);
  const std::vector<double> load = normalized_load(raw_load);
  std::vector<double> rl = rank_loads(p, load);
  Balance b;
  b.max_rank_load = *std::max_element(rl.begin(), rl.end());
  b.mean_rank_load = std::accumulate(rl.begin(), rl.end(), 0.0) / p.num_ranks;
  return b;
}

bool placement_has_duplicate(const Placement& p) {
  const int m = p.slots_per_rank();
  std::vector<int> seen(p.num_experts, -1);
  for (int s = 0; s < p.num_slots; ++s) {
    int e = p.slot_to_expert[s], r = s / m;
    if (seen[e] == r) return true;
    seen[e] = r;  // slots of a rank are contiguous, so one marker per expert suffices
  }
  return false;
}

int slots_moved(const Placement& a, const Placement& b) {
  HELIX_CHECK(a.slot_to_expert.size() == b.slot_to_expert.size(),
              "slots_moved: placements have {} and {} slots", a.slot_to_expert.size(),
              b.slot_to_expert.size());
  int n = 0;
  for (size_t s = 0; s < a.slot_to_expert.size(); ++s)
    n += a.slot_to_expert[s] != b.slot_to_expert[s];
  return n;
}

// ============================================================================================
// JSON
// ============================================================================================

namespace {

std::string read_text(const std::string& path) {
  return file_read_text(path, size_t(256) << 20);
}

void write_text(const std::string& path, const std::string& text) {
  file_write(path, text);
}

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed JSON: {}", what, printable(e.what()));
  }
}

int json_int(const nlohmann::json& j, const char* key, const std::string& what) {
  if (!j.contains(key)) fail("{}: missing field \"{}\"", what, key);
  const auto& v = j[key];
  if (!v.is_number_integer()) fail("{}: field \"{}\" must be an integer", what, key);
  auto x = v.get<std::int64_t>();
  if (x <= 0 || x > (1 << 24)) fail("{}: field \"{}\" = {} is out of range", what, key, x);
  return static_cast<int>(x);
}

}  // namespace

PlacementSet placement_from_json_text(const std::string& text, const std::string& what,
                                      int expected_experts) {
  nlohmann::json j = parse_json(text, what);
  if (!j.is_object()) fail("{}: expected a JSON object", what);
  PlacementSet ps;
  ps.num_slots = json_int(j, "num_slots", what);
  ps.num_ranks = json_int(j, "num_ranks", what);
  if (j.contains("num_experts")) {
    ps.num_experts = json_int(j, "num_experts", what);
    if (expected_experts > 0 && ps.num_experts != expected_experts)
      fail("{}: num_experts is {}, expected {}", what, ps.num_experts, expected_experts);
  } else {
    ps.num_experts = expected_experts;
  }
  // Bounds before anything is sized from them: never two replicas of an expert on one rank.
  if (ps.num_experts > 0 &&
      static_cast<int64_t>(ps.num_slots) > static_cast<int64_t>(ps.num_experts) * ps.num_ranks)
    fail("{}: num_slots {} is more than num_experts x num_ranks = {} x {}", what, ps.num_slots,
         ps.num_experts, ps.num_ranks);
  if (!j.contains("layers") || !j["layers"].is_array() || j["layers"].empty())
    fail("{}: \"layers\" must be a non-empty array", what);
  const auto& layers = j["layers"];
  int max_id = -1;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& lj = layers[l];
    std::string lw = fmt::format("{}: layer {}", what, l);
    if (!lj.is_object() || !lj.contains("slot_to_expert") || !lj["slot_to_expert"].is_array())
      fail("{}: expected {{\"slot_to_expert\": [...]}}", lw);
    if (lj["slot_to_expert"].size() != static_cast<size_t>(ps.num_slots))
      fail("{}: slot_to_expert has {} entries, expected num_slots = {}", lw,
           lj["slot_to_expert"].size(), ps.num_slots);
    Placement p;
    p.num_slots = ps.num_slots;
    p.num_ranks = ps.num_ranks;
    for (const auto& v : lj["slot_to_expert"]) {
      if (!v.is_number_integer()) fail("{}: slot_to_expert holds a non-integer", lw);
      auto x = v.get<std::int64_t>();
      if (x < 0 || x > (1 << 24)) fail("{}: expert id {} is out of range", lw, x);
      p.slot_to_expert.push_back(static_cast<int>(x));
      max_id = std::max(max_id, static_cast<int>(x));
    }
    ps.layers.push_back(std::move(p));
  }
  if (ps.num_experts <= 0) ps.num_experts = max_id + 1;
  for (size_t l = 0; l < ps.layers.size(); ++l) {
    ps.layers[l].num_experts = ps.num_experts;
    placement_validate(ps.layers[l], fmt::format("{}: layer {}", what, l));
  }
  return ps;
}

std::string placement_to_json_text(const PlacementSet& ps) {
  // One layer per line keeps the file diffable and small.
  std::string out = fmt::format("{{\"num_slots\": {}, \"num_ranks\": {}, \"num_experts\": {},\n",
                                ps.num_slots, ps.num_ranks, ps.num_experts);
  out += " \"layers\": [\n";
  for (size_t l = 0; l < ps.layers.size(); ++l) {
    out += "  {\"slot_to_expert\": " + nlohmann::json(ps.layers[l].slot_to_expert).dump() + "}";
    out += l + 1 < ps.layers.size() ? ",\n" : "\n";
  }
  out += " ]}\n";
  return out;
}

PlacementSet placement_read(const std::string& path, int expected_experts) {
  return placement_from_json_text(read_text(path), path, expected_experts);
}

void placement_write(const std::string& path, const PlacementSet& ps) {
  write_text(path, placement_to_json_text(ps));
}

LoadMatrix load_from_json_text(const std::string& text, const std::string& what) {
  nlohmann::json j = parse_json(text, what);
  if (!j.is_object() || !j.contains("load")) fail("{}: expected {{\"load\": [[...], ...]}}", what);
  const auto& lj = j["load"];
  if (!lj.is_array() || lj.empty()) fail("{}: \"load\" must be a non-empty list of layers", what);
  LoadMatrix load;
  for (size_t l = 0; l < lj.size(); ++l) {
    if (!lj[l].is_array() || lj[l].empty())
      fail("{}: load layer {} must be a non-empty list of numbers", what, l);
    std::vector<double> row;
    row.reserve(lj[l].size());
    for (size_t e = 0; e < lj[l].size(); ++e) {
      const auto& v = lj[l][e];
      if (!v.is_number()) fail("{}: load[{}][{}] is not a number", what, l, e);
      double x = v.get<double>();
      if (!std::isfinite(x) || x < 0)
        fail("{}: load[{}][{}] = {} must be finite and >= 0", what, l, e, x);
      row.push_back(x);
    }
    if (!load.empty() && row.size() != load[0].size())
      fail("{}: load layer {} has {} experts, layer 0 has {}", what, l, row.size(), load[0].size());
    load.push_back(std::move(row));
  }
  return load;
}

LoadMatrix load_read(const std::string& path) {
  return load_from_json_text(read_text(path), path);
}

void load_write(const std::string& path, const LoadMatrix& load) {
  std::string out = "{\"load\": [\n";
  for (size_t l = 0; l < load.size(); ++l) {
    out += "  " + nlohmann::json(load[l]).dump();
    out += l + 1 < load.size() ? ",\n" : "\n";
  }
  out += "]}\n";
  write_text(path, out);
}

// ============================================================================================
// Planner internals
// ============================================================================================

namespace {

constexpr double kRelEps = 1e-12;
// Local search stops once within this of the lower bound: further swaps cannot be seen in any
// balance figure but cost time on large layers.
constexpr double kGoodEnough = 1e-6;

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

}  // namespace

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

// ============================================================================================
// Runtime
// ============================================================================================

EplbRouter::EplbRouter(const Placement& p) {
  placement_validate(p, "router placement");
  num_ranks_ = p.num_ranks;
  slots_per_rank_ = p.slots_per_rank();
  replicas_.assign(p.num_experts, {});
  for (int s = 0; s < p.num_slots; ++s) replicas_[p.slot_to_expert[s]].push_back(s);
}

int EplbRouter::route(int expert, std::int64_t token, int src_rank, std::int64_t step) const {
  if (expert < 0 || expert >= num_experts())
    fail("eplb router: expert {} outside [0, {})", expert, num_experts());
  if (src_rank < 0 || src_rank >= num_ranks_)
    fail("eplb router: source rank {} outside [0, {})", src_rank, num_ranks_);
  const auto& reps = replicas_[expert];
  const std::uint64_t turn = static_cast<std::uint64_t>(token) + static_cast<std::uint64_t>(step);
  // Replicas are ascending and a rank's slots contiguous, so local ones form one run.
  auto lo = std::lower_bound(reps.begin(), reps.end(), src_rank * slots_per_rank_);
  auto hi = std::lower_bound(lo, reps.end(), (src_rank + 1) * slots_per_rank_);
  if (hi != lo) return lo[turn % static_cast<std::uint64_t>(hi - lo)];
  return reps[turn % reps.size()];
}

}  // namespace helix
