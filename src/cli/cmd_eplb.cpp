// helix eplb plan: plans expert placements from a load trace (see src/moe/eplb.h).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "moe/eplb.h"

namespace helix::cli {

namespace {

struct PlanArgs {
  std::string load_path, out_path, previous_path;
  int slots = 0, ranks = 0, groups = 0, nodes = 0;
  bool json = false;
};

// "Before" without --previous: no balancing at all, slot s holds expert s mod E.
Placement naive_placement(int S, int R, int E) {
  Placement p{S, R, E, std::vector<int>(S)};
  for (int s = 0; s < S; ++s) p.slot_to_expert[s] = s % E;
  return p;
}

void run_plan(const PlanArgs& a) {
  if ((a.groups > 0) != (a.nodes > 0)) fail("eplb plan: --groups and --nodes go together");
  LoadMatrix load = load_read(a.load_path);
  const int L = static_cast<int>(load.size()), E = static_cast<int>(load[0].size());
  std::unique_ptr<PlacementSet> prev;
  if (!a.previous_path.empty())
    prev = std::make_unique<PlacementSet>(placement_read(a.previous_path, E));

  auto t0 = std::chrono::steady_clock::now();
  PlacementSet ours = eplb_plan(load, a.slots, a.ranks, a.groups, a.nodes, prev.get());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  PlacementSet greedy = eplb_plan_greedy(load, a.slots, a.ranks);

  // The table is collected and printed only after the placement file is written: an error
  // (a full disk, say) is then the only output.
  std::string table = fmt::format("{:>5}  {:>8}  {:>8}  {:>8}  {:>6}\n", "layer", "before",
                                  "greedy", "ours", "moved");
  double sum_before = 0, sum_greedy = 0, sum_ours = 0;
  int moved_total = 0;
  nlohmann::json per_layer = nlohmann::json::array();
  const Placement naive = naive_placement(a.slots, a.ranks, E);
  for (int l = 0; l < L; ++l) {
    const Placement& before_p = prev ? prev->layers[l] : naive;
    double before = placement_balance(before_p, load[l]).max_over_mean();
    double g = placement_balance(greedy.layers[l], load[l]).max_over_mean();
    double o = placement_balance(ours.layers[l], load[l]).max_over_mean();
    int moved = prev ? slots_moved(ours.layers[l], prev->layers[l]) : -1;
    sum_before += before;
    sum_greedy += g;
    sum_ours += o;
    if (moved > 0) moved_total += moved;
    table += fmt::format("{:5d}  {:8.4f}  {:8.4f}  {:8.4f}  {:>6}\n", l, before, g, o,
                         prev ? std::to_string(moved) : "-");
    per_layer.push_back(
        {{"layer", l}, {"before", before}, {"greedy", g}, {"ours", o}, {"moved", moved}});
  }
  table += fmt::format(
      "mean max/mean: before {:.4f}  greedy {:.4f}  ours {:.4f};  slots moved {};  "
      "{} layers x {} experts -> {} slots x {} ranks in {:.1f} ms\n",
      sum_before / L, sum_greedy / L, sum_ours / L, prev ? std::to_string(moved_total) : "-", L, E,
      a.slots, a.ranks, secs * 1e3);
  placement_write(a.out_path, ours);
  std::fputs(table.c_str(), stderr);
  if (a.json) {
    nlohmann::json j = {{"layers", L},
                        {"experts", E},
                        {"slots", a.slots},
                        {"ranks", a.ranks},
                        {"mean_before", sum_before / L},
                        {"mean_greedy", sum_greedy / L},
                        {"mean_ours", sum_ours / L},
                        {"slots_moved", prev ? moved_total : -1},
                        {"seconds", secs},
                        {"per_layer", per_layer}};
    std::printf("%s\n", j.dump().c_str());
  }
}

}  // namespace

void add_eplb_command(CLI::App& app) {
  CLI::App* eplb = app.add_subcommand("eplb", "expert-parallel load balancing");
  eplb->require_subcommand(1);
  CLI::App* plan = eplb->add_subcommand(
      "plan",
      "plan expert placements (slot -> expert per layer) from a load trace; prints a per-layer "
      "table of max/mean rank load on stderr");
  auto a = std::make_shared<PlanArgs>();
  plan->add_option("--load", a->load_path,
                   "load.json: {\"load\": [[one number per expert], ...one list per layer]}")
      ->required();
  plan->add_option("--slots", a->slots, "physical expert slots S (>= experts, multiple of ranks)")
      ->required();
  plan->add_option("--ranks", a->ranks, "EP ranks R; rank r owns slots [r*S/R, (r+1)*S/R)")
      ->required();
  plan->add_option("--groups", a->groups,
                   "expert groups G (with --nodes): prefer keeping each group on one node");
  plan->add_option("--nodes", a->nodes, "nodes N (with --groups); ranks split evenly over nodes");
  plan->add_option("--previous", a->previous_path,
                   "placement.json in use now: keep as many slots unchanged as possible while "
                   "staying within 1% of the unconstrained plan's max/mean");
  plan->add_option("--out", a->out_path, "where to write placement.json")->required();
  plan->add_flag("--json", a->json, "print a JSON summary on stdout");
  plan->callback([a] { run_plan(*a); });
}

}  // namespace helix::cli
