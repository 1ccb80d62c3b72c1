#include "moe/eplb.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "moe/eplb_detail.h"

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

namespace eplb_detail {

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

}  // namespace eplb_detail

Balance placement_balance(const Placement& p, const std::vector<double>& raw_load) {
  HELIX_CHECK(static_cast<int>(raw_load.size()) == p.num_experts,
              "eplb: load has {} experts, placement {}", raw_load.size(), p.num_experts);
  const std::vector<double> load = eplb_detail::normalized_load(raw_load);
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
