#include <algorithm>
#include <numeric>
#include <vector>

#include "ops/ops.h"

namespace helix {

void moe_route(const MoeRouteParams& p) {
  const int E = p.num_experts;
  const int G = p.n_group;
  const int per_group = E / G;
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> score(E), choice(E), group_score(G);
  std::vector<int> order(std::max(E, G));
  for (int t = 0; t < p.num_tokens; ++t) {
    const float* logit = p.logits + static_cast<int64_t>(t) * E;
    for (int e = 0; e < E; ++e) {
      score[e] = 1.0f / (1.0f + std::exp(-logit[e]));
      choice[e] = score[e] + (p.bias ? p.bias[e] : 0.0f);
    }
    // A group's score is the sum of its two best biased scores.
    for (int g = 0; g < G; ++g) {
      float best = ninf, second = ninf;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (choice[e] > best) {
          second = best;
          best = choice[e];
        } else if (choice[e] > second) {
          second = choice[e];
        }
      }
      group_score[g] = best + second;
    }
    // Keep the topk_group best groups; experts of the others cannot be chosen.
    std::iota(order.begin(), order.begin() + G, 0);
    std::stable_sort(order.begin(), order.begin() + G,
                     [&](int a, int b) { return group_score[a] > group_score[b]; });
    std::vector<char> keep(G, 0);
    for (int i = 0; i < p.topk_group; ++i) keep[order[i]] = 1;
    for (int e = 0; e < E; ++e)
      if (!keep[e / per_group]) choice[e] = ninf;
    std::iota(order.begin(), order.begin() + E, 0);
    std::partial_sort(order.begin(), order.begin() + p.top_k, order.begin() + E, [&](int a, int b) {
      return choice[a] > choice[b] || (choice[a] == choice[b] && a < b);
    });
    int* ids = p.expert_ids + static_cast<int64_t>(t) * p.top_k;
    float* w = p.weights + static_cast<int64_t>(t) * p.top_k;
    float sum = 0.0f;
    for (int i = 0; i < p.top_k; ++i) {
      ids[i] = order[i];
      w[i] = score[order[i]];
      sum += w[i];
    }
    for (int i = 0; i < p.top_k; ++i) {
      if (p.norm_topk_prob) w[i] /= (sum + 1e-20f);
      w[i] *= p.routed_scaling_factor;
    }
  }
}

}  // namespace helix
