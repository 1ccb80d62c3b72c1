// Times the EPLB planner against the public greedy baseline on Zipf-skewed random loads and
// prints the quality (mean and worst max/mean rank load over layers) of both.
//
//   bench_eplb_plan [--experts 256 --layers 61 --slots 288 --ranks 32 --zipf 1.0 --seed 1
//                    --runs 5 --json out.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "moe/eplb.h"

namespace {

// Each layer: experts in a random order get Zipf weights 1/(i+1)^s times noise in [0.5, 1.5).
helix::LoadMatrix zipf_load(int layers, int experts, double s, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> noise(0.5, 1.5);
  helix::LoadMatrix load(layers, std::vector<double>(experts));
  std::vector<int> perm(experts);
  for (auto& row : load) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int i = 0; i < experts; ++i) row[perm[i]] = 1e4 / std::pow(i + 1.0, s) * noise(rng);
  }
  return load;
}

struct Quality {
  double mean = 0, worst = 0;
  int duplicates = 0;
};

Quality quality(const helix::PlacementSet& ps, const helix::LoadMatrix& load) {
  Quality q;
  for (size_t l = 0; l < load.size(); ++l) {
    double r = helix::placement_balance(ps.layers[l], load[l]).max_over_mean();
    q.mean += r / load.size();
    q.worst = std::max(q.worst, r);
    q.duplicates += helix::placement_has_duplicate(ps.layers[l]);
  }
  return q;
}

template <typename F>
double median_seconds(int runs, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"EPLB planner benchmark: ours vs the public greedy"};
  int experts = 256, layers = 61, slots = 288, ranks = 32, runs = 5;
  double zipf = 1.0;
  unsigned seed = 1;
  std::string json_path;
  app.add_option("--experts", experts, "logical experts per layer");
  app.add_option("--layers", layers, "MoE layers");
  app.add_option("--slots", slots, "physical slots (multiple of --ranks)");
  app.add_option("--ranks", ranks, "EP ranks");
  app.add_option("--zipf", zipf, "Zipf exponent of the expert loads");
  app.add_option("--seed", seed, "random seed");
  app.add_option("--runs", runs, "timed runs (median reported)");
  app.add_option("--json", json_path, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  try {
    helix::LoadMatrix load = zipf_load(layers, experts, zipf, seed);
    helix::PlacementSet ours, greedy;
    double t_ours = median_seconds(runs, [&] { ours = helix::eplb_plan(load, slots, ranks); });
    double t_greedy =
        median_seconds(runs, [&] { greedy = helix::eplb_plan_greedy(load, slots, ranks); });
    Quality qo = quality(ours, load), qg = quality(greedy, load);
    int worse = 0, better = 0;
    for (int l = 0; l < layers; ++l) {
      double a = helix::placement_balance(ours.layers[l], load[l]).max_rank_load;
      double b = helix::placement_balance(greedy.layers[l], load[l]).max_rank_load;
      worse += a > b * (1 + 1e-9);
      better += a < b * (1 - 1e-9);
    }
    fmt::print("experts={} layers={} slots={} ranks={} zipf={} seed={} runs={}\n", experts, layers,
               slots, ranks, zipf, seed, runs);
    fmt::print(
        "greedy: max/mean mean {:.4f} worst {:.4f}  layers with duplicates {}  time {:.2f} ms\n",
        qg.mean, qg.worst, qg.duplicates, t_greedy * 1e3);
    fmt::print(
        "ours:   max/mean mean {:.4f} worst {:.4f}  layers with duplicates {}  time {:.2f} ms\n",
        qo.mean, qo.worst, qo.duplicates, t_ours * 1e3);
    fmt::print("layers better {} equal {} worse {}\n", better, layers - better - worse, worse);
    if (!json_path.empty()) {
      nlohmann::json j = {{"experts", experts},
                          {"layers", layers},
                          {"slots", slots},
                          {"ranks", ranks},
                          {"zipf", zipf},
                          {"seed", seed},
                          {"runs", runs},
                          {"ours_seconds", t_ours},
                          {"greedy_seconds", t_greedy},
                          {"ours_max_over_mean", qo.mean},
                          {"ours_worst", qo.worst},
                          {"greedy_max_over_mean", qg.mean},
                          {"greedy_worst", qg.worst},
                          {"greedy_dup_layers", qg.duplicates},
                          {"ours_dup_layers", qo.duplicates},
                          {"layers_better", better},
                          {"layers_worse", worse}};
      std::ofstream(json_path) << j.dump(2) << "\n";
    }
  } catch (const helix::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
