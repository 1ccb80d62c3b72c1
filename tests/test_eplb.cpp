// EPLB: placement validation and files, routing over replicas, load statistics, the planner
// against the public greedy baseline, previous-aware planning and the `helix eplb plan` CLI.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "moe/eplb.h"

using namespace helix;

namespace {

// Zipf loads over a random expert order, times noise in [0.5, 1.5); s = 0 is flat (noise only).
LoadMatrix zipf_load(int layers, int experts, double s, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> noise(0.5, 1.5);
  LoadMatrix load(layers, std::vector<double>(experts));
  std::vector<int> perm(experts);
  for (auto& row : load) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int i = 0; i < experts; ++i) row[perm[i]] = 1000.0 / std::pow(i + 1.0, s) * noise(rng);
  }
  return load;
}

double max_load(const Placement& p, const std::vector<double>& w) {
  return placement_balance(p, w).max_rank_load;
}

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("helix_eplb_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

int run_cli(const std::string& args) {
  std::string cmd = std::string(HELIX_BINARY) + " " + args + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

}  // namespace

// ---- validation and files -------------------------------------------------------------------

TEST(EplbPlacement, ValidationRejectsBadPlacements) {
  Placement ok{4, 2, 3, {0, 1, 2, 0}};
  EXPECT_NO_THROW(placement_validate(ok));
  Placement p = ok;
  p.num_slots = 5;
  p.slot_to_expert.push_back(1);
  EXPECT_THROW(placement_validate(p), Error);  // 5 % 2 != 0
  p = ok;
  p.slot_to_expert = {0, 1, 0, 1};
  EXPECT_THROW(placement_validate(p), Error);  // expert 2 has no slot
  p = ok;
  p.slot_to_expert = {0, 1, 2};
  EXPECT_THROW(placement_validate(p), Error);  // wrong length
  p = ok;
  p.slot_to_expert = {0, 1, 3, 2};
  EXPECT_THROW(placement_validate(p), Error);  // id out of range
  p = Placement{2, 2, 3, {0, 1}};
  EXPECT_THROW(placement_validate(p), Error);  // S < E
  try {
    placement_validate(Placement{4, 2, 3, {0, 1, 0, 1}}, "layer 7");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 7: expert 2 has no slot"), std::string::npos)
        << e.what();
  }
}

TEST(EplbPlacement, JsonRoundTripAndErrors) {
  PlacementSet ps{4, 2, 3, {Placement{4, 2, 3, {0, 1, 2, 0}}, Placement{4, 2, 3, {2, 1, 0, 1}}}};
  PlacementSet back = placement_from_json_text(placement_to_json_text(ps), "t");
  ASSERT_EQ(back.layers.size(), 2u);
  EXPECT_EQ(back.num_experts, 3);
  EXPECT_EQ(back.layers[1].slot_to_expert, ps.layers[1].slot_to_expert);
  // num_experts may be absent; then it comes from the caller
  auto p2 = placement_from_json_text(
      R"({"num_slots": 4, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1,2,0]}]})", "t", 3);
  EXPECT_EQ(p2.num_experts, 3);
  EXPECT_THROW(placement_from_json_text("{not json", "t"), Error);
  EXPECT_THROW(
      placement_from_json_text(
          R"({"num_slots": 4, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1]}]})", "t"),
      Error);
  EXPECT_THROW(
      placement_from_json_text(
          R"({"num_slots": 4, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1,0,1]}]})", "t", 3),
      Error);  // expert 2 missing
  EXPECT_THROW(load_from_json_text(R"({"load": [[1,2],[1]]})", "t"), Error);
  EXPECT_THROW(load_from_json_text(R"({"load": [[1,-2]]})", "t"), Error);
  EXPECT_THROW(load_from_json_text(R"({"load": [[1,"x"]]})", "t"), Error);
  EXPECT_THROW(load_from_json_text(R"({"lode": [[1]]})", "t"), Error);
  auto l = load_from_json_text(R"({"load": [[1, 2.5], [0, 3]]})", "t");
  EXPECT_EQ(l[1][1], 3.0);
}

TEST(EplbPlanner, RejectsBadShapes) {
  std::vector<double> w(8, 1.0);
  EXPECT_THROW(eplb_plan_layer(w, 10, 4), Error);  // S % R
  EXPECT_THROW(eplb_plan_layer(w, 4, 4), Error);   // S < E
  EXPECT_THROW(eplb_plan_layer(w, 40, 4), Error);  // S > E * R: a rank would need a duplicate
  EXPECT_THROW(eplb_plan_greedy_layer(w, 4, 4), Error);
}

// ---- router and statistics ----------------------------------------------------------------------

TEST(EplbRouter, OneReplicaLocalPreferredEvenSpreadDeterministic) {
  // 3 ranks x 4 slots; expert 0 has replicas on ranks 0 and 2, expert 1 three replicas on rank 1
  // (a duplicate, still routable), expert 2..6 one each.
  Placement p{12, 3, 7, {0, 2, 3, 4, 1, 1, 1, 5, 0, 6, 2, 3}};
  EplbRouter router(p);
  for (int e = 0; e < 7; ++e)
    for (int src = 0; src < 3; ++src)
      for (int t = 0; t < 50; ++t) {
        int s = router.route(e, t, src, 3);
        ASSERT_EQ(p.slot_to_expert[s], e);         // a replica of e
        ASSERT_EQ(s, router.route(e, t, src, 3));  // deterministic
        bool has_local = false;
        for (int r : router.replicas(e)) has_local |= p.rank_of_slot(r) == src;
        if (has_local) {
          EXPECT_EQ(p.rank_of_slot(s), src);  // local preferred
        }
      }
  // remote tokens spread evenly: expert 3 (slots 2 and 11) seen from rank 1 (no local replica)
  std::vector<int> cnt(12, 0);
  for (int t = 0; t < 101; ++t) ++cnt[router.route(3, t, 1, 7)];
  EXPECT_LE(std::abs(cnt[2] - cnt[11]), 1);
  EXPECT_EQ(cnt[2] + cnt[11], 101);
  // several local replicas share too
  std::fill(cnt.begin(), cnt.end(), 0);
  for (int t = 0; t < 100; ++t) ++cnt[router.route(1, t, 1)];
  EXPECT_LE(*std::max_element(cnt.begin() + 4, cnt.begin() + 7) -
                *std::min_element(cnt.begin() + 4, cnt.begin() + 7),
            1);
  EXPECT_THROW(router.route(7, 0, 0), Error);
  EXPECT_THROW(router.route(0, 0, 3), Error);
}

TEST(EplbRouter, UniformStreamOverPlannedPlacement) {
  LoadMatrix load = zipf_load(1, 64, 1.0, 5);
  Placement p = eplb_plan_layer(load[0], 80, 8);
  EplbRouter router(p);
  // every replica of an expert gets the same share (+-1) of remote tokens
  for (int e = 0; e < 64; ++e) {
    const auto& reps = router.replicas(e);
    int src = -1;  // a rank without e
    for (int r = 0; r < 8 && src < 0; ++r) {
      bool has = false;
      for (int s : reps) has |= p.rank_of_slot(s) == r;
      if (!has) src = r;
    }
    if (src < 0) continue;
    std::vector<int> cnt(80, 0);
    for (int t = 0; t < 997; ++t) ++cnt[router.route(e, t, src, 11)];
    int lo = 1 << 30, hi = 0;
    for (int s : reps) lo = std::min(lo, cnt[s]), hi = std::max(hi, cnt[s]);
    EXPECT_LE(hi - lo, 1) << "expert " << e;
  }
}

TEST(EplbBalance, RankLoadsAndFigures) {
  Placement p{4, 2, 4, {0, 1, 2, 3}};
  Balance b = placement_balance(p, {0.5, 1, 0, 0.5});  // ranks 1.5 and 0.5
  EXPECT_DOUBLE_EQ(b.max_rank_load, 1.5);
  EXPECT_DOUBLE_EQ(b.mean_rank_load, 1.0);
  EXPECT_DOUBLE_EQ(b.max_over_mean(), 1.5);
  EXPECT_DOUBLE_EQ(b.balancedness(), 1.0 / 1.5);
  EXPECT_THROW(placement_balance(p, {1, 2, 3}), Error);  // wrong expert count
}

// Loads near the double range: no overflow, no NaN, the same plan as the scaled-down load
// (scaling by a power of two is exact); non-finite or negative loads are errors.
TEST(EplbPlanner, HugeLoadsScaleExactly) {
  const std::vector<double> small = {5, 1, 3, 7, 2, 2, 9, 4};
  std::vector<double> huge(small.size());
  for (size_t e = 0; e < small.size(); ++e) huge[e] = std::ldexp(small[e], 1019);  // ~1e307
  const Placement a = eplb_plan_layer(small, 12, 4), b = eplb_plan_layer(huge, 12, 4);
  EXPECT_EQ(a.slot_to_expert, b.slot_to_expert);
  EXPECT_EQ(eplb_plan_greedy_layer(small, 12, 4).slot_to_expert,
            eplb_plan_greedy_layer(huge, 12, 4).slot_to_expert);
  const double r = placement_balance(b, huge).max_over_mean();
  EXPECT_TRUE(std::isfinite(r));
  EXPECT_DOUBLE_EQ(r, placement_balance(a, small).max_over_mean());
  std::vector<double> bad = small;
  bad[2] = std::numeric_limits<double>::infinity();
  EXPECT_THROW(eplb_plan_layer(bad, 12, 4), Error);
  bad[2] = -1;
  EXPECT_THROW(eplb_plan_layer(bad, 12, 4), Error);
  bad[2] = std::nan("");
  EXPECT_THROW(eplb_plan_greedy_layer(bad, 12, 4), Error);
  EXPECT_THROW(eplb_plan_layer(small, 8 * 4 + 4, 4), Error);  // slots > experts x ranks
}

// A placement file whose slot count is absurd for its experts and ranks is rejected from the
// header fields, before its layers are read.
TEST(EplbJson, AbsurdSlotCountsRejectedEarly) {
  EXPECT_THROW(
      placement_from_json_text(
          R"({"num_slots": 16000000, "num_ranks": 2, "num_experts": 4, "layers": []})", "t"),
      Error);
  EXPECT_THROW(
      placement_from_json_text(
          R"({"num_slots": 4, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1,2]}]})", "t", 4),
      Error);
}

// ---- planner vs greedy
// ---------------------------------------------------------------------------

TEST(EplbPlanner, NeverWorseThanGreedyAndBetterOnSkew) {
  double sum_ours_skew = 0, sum_greedy_skew = 0;
  int layers_skew = 0, dup_layers_worse = 0;
  unsigned seed = 100;
  for (int E : {16, 64, 256})
    for (int R : {4, 8, 32})
      for (int variant = 0; variant < 3; ++variant) {
        int S = variant == 0 ? E : variant == 1 ? E + R : (5 * E + 3) / 4;
        S = (S + R - 1) / R * R;  // round up to a multiple of R
        if (S > E * R) continue;
        for (double zipf : {0.0, 0.8, 1.2}) {
          LoadMatrix load = zipf_load(6, E, zipf, ++seed);
          double so = 0, sg = 0;
          for (const auto& w : load) {
            Placement g = eplb_plan_greedy_layer(w, S, R);
            Placement o = eplb_plan_layer(w, S, R);
            SCOPED_TRACE(testing::Message()
                         << "E=" << E << " R=" << R << " S=" << S << " zipf=" << zipf);
            ASSERT_NO_THROW(placement_validate(o));
            EXPECT_FALSE(placement_has_duplicate(o));
            const double mo = max_load(o, w), mg = max_load(g, w);
            // Where the greedy's plan has no duplicate it is one of our seeds, so we can only be
            // better. Where it stacks replicas of one expert on a rank (which we forbid) a coarse
            // layer can come out a fraction of a percent worse; see eplb.h.
            if (!placement_has_duplicate(g)) {
              EXPECT_LE(mo, mg * (1 + 1e-9));
            } else {
              EXPECT_LE(mo, mg * 1.01);
              dup_layers_worse += mo > mg * (1 + 1e-9);
            }
            so += placement_balance(o, w).max_over_mean();
            sg += placement_balance(g, w).max_over_mean();
          }
          EXPECT_LE(so, sg * (1 + 1e-9));
          if (zipf > 0) {
            sum_ours_skew += so;
            sum_greedy_skew += sg;
            layers_skew += static_cast<int>(load.size());
          }
        }
      }
  EXPECT_LT(sum_ours_skew / layers_skew, sum_greedy_skew / layers_skew);
  std::printf(
      "skewed traces: mean max/mean ours %.4f greedy %.4f over %d layers; %d layers worse "
      "(greedy with duplicates)\n",
      sum_ours_skew / layers_skew, sum_greedy_skew / layers_skew, layers_skew, dup_layers_worse);
}

TEST(EplbPlanner, StrictlyBetterOnTypicalSkew) {
  // the bench shape, fewer layers: every layer strictly better than the greedy
  LoadMatrix load = zipf_load(8, 256, 1.0, 7);
  PlacementSet o = eplb_plan(load, 288, 32), g = eplb_plan_greedy(load, 288, 32);
  for (size_t l = 0; l < load.size(); ++l)
    EXPECT_LT(max_load(o.layers[l], load[l]), max_load(g.layers[l], load[l]));
}

TEST(EplbPlanner, HierarchicalKeepsGroupsOnNodesWhenCheap) {
  // 64 experts in 8 groups, 16 ranks on 2 nodes; equal loads: groups fit nodes at no cost
  LoadMatrix load(3, std::vector<double>(64, 1.0));
  PlacementSet ps = eplb_plan(load, 80, 16, 8, 2);
  for (size_t l = 0; l < load.size(); ++l) {
    const Placement& p = ps.layers[l];
    EXPECT_FALSE(placement_has_duplicate(p));
    EXPECT_LE(max_load(p, load[l]),
              max_load(eplb_plan_greedy_layer(load[l], 80, 16), load[l]) * (1 + 1e-9));
    // each group's replicas all live on one node (slots [0,40) or [40,80))
    std::vector<std::set<int>> nodes(8);
    for (int s = 0; s < 80; ++s) nodes[p.slot_to_expert[s] / 8].insert(s / 40);
    for (const auto& n : nodes) EXPECT_EQ(n.size(), 1u);
  }
  EXPECT_THROW(eplb_plan(load, 80, 16, 7, 2), Error);  // 64 % 7
  EXPECT_THROW(eplb_plan(load, 80, 16, 8, 3), Error);  // 16 % 3
}

// ---- previous-aware -----------------------------------------------------------------------

TEST(EplbPlanner, PreviousKeepsSlotsWithinOnePercent) {
  unsigned seed = 300;
  for (int E : {16, 64, 256})
    for (int R : {4, 8, 32}) {
      int S = ((5 * E + 3) / 4 + R - 1) / R * R;
      if (S > E * R) continue;
      for (double zipf : {0.0, 1.0}) {
        LoadMatrix before = zipf_load(4, E, zipf, ++seed);
        std::mt19937_64 rng(seed);
        std::uniform_real_distribution<double> drift(0.8, 1.2);
        for (const auto& w : before) {
          SCOPED_TRACE(testing::Message() << "E=" << E << " R=" << R << " zipf=" << zipf);
          // previous: a plan for the old load; also the greedy's (may hold duplicates)
          for (int which = 0; which < 2; ++which) {
            Placement prev =
                which == 0 ? eplb_plan_layer(w, S, R) : eplb_plan_greedy_layer(w, S, R);
            std::vector<double> now = w;
            for (double& x : now) x *= drift(rng);
            const double fresh = max_load(eplb_plan_layer(now, S, R), now);
            Placement o = eplb_plan_layer(now, S, R, {}, &prev);
            ASSERT_NO_THROW(placement_validate(o));
            EXPECT_FALSE(placement_has_duplicate(o));
            EXPECT_LE(max_load(o, now), fresh * 1.01 * (1 + 1e-9));
            auto rep = eplb_repair_greedy(now, prev, fresh * 1.01);
            if (rep && !placement_has_duplicate(*rep)) {
              EXPECT_LE(slots_moved(o, prev), slots_moved(*rep, prev));
            }
            // unchanged load: the previous plan is kept as is
            if (which == 0) {
              EXPECT_EQ(slots_moved(eplb_plan_layer(w, S, R, {}, &prev), prev), 0);
            }
          }
        }
      }
    }
}

// Wider layers (the sorted-partner swap search and the other previous-aware shortcuts), and a
// previous placement that is arbitrary: random slots, replicas stacked on one rank.
TEST(EplbPlanner, PreviousWideLayersAndArbitraryPrevious) {
  unsigned seed = 900;
  for (auto [E, S, R] : {std::tuple{1024, 1152, 64}, std::tuple{512, 640, 16}}) {
    LoadMatrix before = zipf_load(2, E, 1.0, ++seed);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> drift(0.8, 1.2);
    for (const auto& w : before) {
      Placement fresh_prev = eplb_plan_layer(w, S, R);
      Placement random_prev{S, R, E, std::vector<int>(S)};
      for (int s = 0; s < S; ++s)
        random_prev.slot_to_expert[s] = s < E ? s : static_cast<int>(rng() % E);
      std::shuffle(random_prev.slot_to_expert.begin(), random_prev.slot_to_expert.end(), rng);
      std::vector<double> now = w;
      for (double& x : now) x *= drift(rng);
      const double fresh = max_load(eplb_plan_layer(now, S, R), now);
      for (const Placement* prev : {&fresh_prev, &random_prev}) {
        SCOPED_TRACE(testing::Message()
                     << "E=" << E << " R=" << R << (prev == &random_prev ? " random" : " planned"));
        Placement o = eplb_plan_layer(now, S, R, {}, prev);
        ASSERT_NO_THROW(placement_validate(o));
        EXPECT_FALSE(placement_has_duplicate(o));
        EXPECT_LE(max_load(o, now), fresh * 1.01 * (1 + 1e-9));
        auto rep = eplb_repair_greedy(now, *prev, fresh * 1.01);
        if (rep && !placement_has_duplicate(*rep)) {
          EXPECT_LE(max_load(*rep, now), fresh * 1.01 * (1 + 1e-9));
          EXPECT_LE(slots_moved(o, *prev), slots_moved(*rep, *prev));
        }
      }
      // unchanged load: kept as is (the shortcut that skips planning afresh)
      EXPECT_EQ(slots_moved(eplb_plan_layer(w, S, R, {}, &fresh_prev), fresh_prev), 0);
    }
  }
}

TEST(EplbPlanner, PreviousShapeMismatchRejected) {
  LoadMatrix load = zipf_load(2, 16, 1.0, 1);
  PlacementSet prev = eplb_plan(load, 16, 4);
  EXPECT_THROW(eplb_plan(load, 20, 4, 0, 0, &prev), Error);
  LoadMatrix one(load.begin(), load.begin() + 1);
  EXPECT_THROW(eplb_plan(one, 16, 4, 0, 0, &prev), Error);
}

// ---- CLI
// -----------------------------------------------------------------------------------------

TEST(EplbCli, PlanEndToEndAndBadInput) {
  auto dir = temp_dir("cli");
  LoadMatrix load = zipf_load(5, 64, 1.0, 42);
  load_write((dir / "load.json").string(), load);
  const std::string L = (dir / "load.json").string(), out = (dir / "placement.json").string();
  ASSERT_EQ(run_cli("eplb plan --load " + L + " --slots 80 --ranks 8 --out " + out), 0);
  PlacementSet ps = placement_read(out, 64);
  ASSERT_EQ(ps.layers.size(), 5u);
  EXPECT_EQ(ps.num_slots, 80);
  EXPECT_EQ(ps.num_ranks, 8);
  for (const auto& p : ps.layers) EXPECT_FALSE(placement_has_duplicate(p));
  // with --previous on the same load: nothing moves
  const std::string out2 = (dir / "placement2.json").string();
  ASSERT_EQ(run_cli("eplb plan --load " + L + " --slots 80 --ranks 8 --previous " + out +
                    " --out " + out2 + " --json"),
            0);
  PlacementSet ps2 = placement_read(out2, 64);
  for (size_t l = 0; l < ps.layers.size(); ++l)
    EXPECT_EQ(slots_moved(ps.layers[l], ps2.layers[l]), 0);
  ASSERT_EQ(run_cli("eplb plan --load " + L + " --slots 80 --ranks 16 --groups 8 --nodes 2 --out " +
                    out2),
            0);
  // bad input exits 2
  write_file(dir / "bad.json", "{\"load\": [[1, 2, ");
  EXPECT_EQ(run_cli("eplb plan --load " + (dir / "bad.json").string() +
                    " --slots 80 --ranks 8 --out " + out2),
            2);
  write_file(dir / "ragged.json", "{\"load\": [[1, 2], [3]]}");
  EXPECT_EQ(run_cli("eplb plan --load " + (dir / "ragged.json").string() +
                    " --slots 4 --ranks 2 --out " + out2),
            2);
  EXPECT_EQ(run_cli("eplb plan --load " + L + " --slots 81 --ranks 8 --out " + out2), 2);
  EXPECT_EQ(run_cli("eplb plan --load " + L + " --slots 32 --ranks 8 --out " + out2), 2);
  EXPECT_EQ(run_cli("eplb plan --load " + (dir / "missing.json").string() +
                    " --slots 80 --ranks 8 --out " + out2),
            2);
  EXPECT_EQ(run_cli("eplb plan --load " + L + " --slots 96 --ranks 8 --previous " + out +
                    " --out " + out2),
            2);                                                           // previous has 80 slots
  EXPECT_EQ(run_cli("eplb plan --slots 80 --ranks 8 --out " + out2), 2);  // --load missing
  std::filesystem::remove_all(dir);
}
