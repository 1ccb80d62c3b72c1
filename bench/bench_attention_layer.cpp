// Decode step of one DeepSeek-V3-shaped MLA attention layer on the CPU: the absorbed form
// (cache only [c, k_pe]; W_UK folded into the query, W_UV applied after attention) against the
// naive form (decompress K and V of every head for the whole context at every step).
// Shapes: hidden 7168, 128 heads, q_lora 1536, kv_lora 512, rope 64, nope 128, v 128;
// random weights rounded to bf16, computed in fp32.
#include <cmath>
#include <cstdio>
#include <fstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "ops/ops.h"

using namespace helix;

int main(int argc, char** argv) {
  CLI::App app{"MLA decode step: absorbed vs naive, DeepSeek-V3 shapes, CPU"};
  std::vector<int> contexts = {1024, 4096, 16384};
  int iters = 3, naive_max = 16384, heads = 128;
  std::string json_out;
  app.add_option("--contexts", contexts, "Context lengths")->capture_default_str();
  app.add_option("--iters", iters, "Timed repetitions (median)")->capture_default_str();
  app.add_option("--heads", heads, "Attention heads")->capture_default_str();
  app.add_option("--naive-max", naive_max, "Skip the naive form above this context")
      ->capture_default_str();
  app.add_option("--json", json_out, "Write results as JSON");
  CLI11_PARSE(app, argc, argv);

  const int D = 7168, QL = 1536, L = 512, R = 64, NOPE = 128, V = 128, QK = NOPE + R, H = heads;
  const int W = L + R, BLOCK = 64;
  auto q_a = bench::random_bf16(size_t(QL) * D, 1.0f / std::sqrt(float(D)), 1);
  auto q_b = bench::random_bf16(size_t(H) * QK * QL, 1.0f / std::sqrt(float(QL)), 2);
  auto kv_a = bench::random_bf16(size_t(W) * D, 1.0f / std::sqrt(float(D)), 3);
  auto kv_b = bench::random_bf16(size_t(H) * (NOPE + V) * L, 1.0f / std::sqrt(float(L)), 4);
  auto o_proj = bench::random_bf16(size_t(D) * H * V, 1.0f / std::sqrt(float(H * V)), 5);
  auto x = bench::random_bf16(D, 1.0f, 6);
  std::vector<float> ones(std::max(D, QL), 1.0f);
  const float scale = 1.0f / std::sqrt(float(QK));

  nlohmann::json results = nlohmann::json::array();
  std::printf("%-8s %14s %14s %9s\n", "context", "absorbed_ms", "naive_ms", "speedup");
  for (int T : contexts) {
    // Latent cache [T, L+R] in blocks of 64 tokens.
    auto cache = bench::random_bf16(size_t(T) * W, 1.0f, 7 + T);
    std::vector<const float*> blocks;
    std::vector<int> lens;
    for (int t = 0; t < T; t += BLOCK) {
      blocks.push_back(cache.data() + size_t(t) * W);
      lens.push_back(std::min(BLOCK, T - t));
    }
    std::vector<float> qa(QL), q(size_t(H) * QK), lat(W), attn_v(size_t(H) * V), out(D);
    auto project_in = [&]() {  // shared by both forms: q and this token's latent
      matmul(x.data(), q_a.data(), qa.data(), 1, QL, D);
      rms_norm(qa.data(), ones.data(), qa.data(), 1, QL, 1e-6f);
      matmul(qa.data(), q_b.data(), q.data(), 1, H * QK, QL);
      matmul(x.data(), kv_a.data(), lat.data(), 1, W, D);
    };
    auto absorbed = [&]() {
      project_in();
      std::vector<float> qc(size_t(H) * W), o(size_t(H) * L), lse(H);
      for (int h = 0; h < H; ++h) {
        matmul_nn(q.data() + size_t(h) * QK, kv_b.data() + size_t(h) * (NOPE + V) * L,
                  qc.data() + size_t(h) * W, 1, L, NOPE);
        std::memcpy(qc.data() + size_t(h) * W + L, q.data() + size_t(h) * QK + NOPE, R * 4);
      }
      MlaDecodeParams p;
      p.num_heads = H;
      p.kv_lora_rank = L;
      p.rope_dim = R;
      p.num_blocks = int(blocks.size());
      p.scale = scale;
      p.q = qc.data();
      p.blocks = blocks.data();
      p.block_len = lens.data();
      p.out = o.data();
      p.lse = lse.data();
      mla_decode(p);
      for (int h = 0; h < H; ++h)
        matmul(o.data() + size_t(h) * L, kv_b.data() + (size_t(h) * (NOPE + V) + NOPE) * L,
               attn_v.data() + size_t(h) * V, 1, V, L);
      matmul(attn_v.data(), o_proj.data(), out.data(), 1, D, H * V);
    };
    auto naive = [&]() {
      project_in();
      // Decompress every cached latent for every head: [T, L] x [L, H*(NOPE+V)].
      std::vector<float> kv(size_t(T) * H * (NOPE + V));
      matmul_strided(cache.data(), W, kv_b.data(), L, true, kv.data(), H * (NOPE + V), T,
                     H * (NOPE + V), L, 0.0f);
      std::vector<float> s(T);
      for (int h = 0; h < H; ++h) {
        const float* qh = q.data() + size_t(h) * QK;
        float mx = -INFINITY;
        for (int t = 0; t < T; ++t) {
          const float* k = kv.data() + (size_t(t) * H + h) * (NOPE + V);
          const float* kpe = cache.data() + size_t(t) * W + L;
          float d = 0;
          for (int i = 0; i < NOPE; ++i) d += qh[i] * k[i];
          for (int i = 0; i < R; ++i) d += qh[NOPE + i] * kpe[i];
          s[t] = d * scale;
          mx = std::max(mx, s[t]);
        }
        float sum = 0;
        for (int t = 0; t < T; ++t) sum += (s[t] = std::exp(s[t] - mx));
        float* av = attn_v.data() + size_t(h) * V;
        std::fill(av, av + V, 0.0f);
        for (int t = 0; t < T; ++t) {
          const float* v = kv.data() + (size_t(t) * H + h) * (NOPE + V) + NOPE;
          const float w = s[t] / sum;
          for (int i = 0; i < V; ++i) av[i] += w * v[i];
        }
      }
      matmul(attn_v.data(), o_proj.data(), out.data(), 1, D, H * V);
    };
    absorbed();  // warm-up
    const double ta = bench::median_ms(iters, absorbed);
    double tn = NAN;
    if (T <= naive_max) {
      naive();
      tn = bench::median_ms(std::max(1, iters / 2), naive);
    }
    std::printf("%-8d %14.2f %14.2f %8.1fx\n", T, ta, tn, tn / ta);
    results.push_back(
        {{"context", T}, {"absorbed_ms", ta}, {"naive_ms", tn}, {"speedup", tn / ta}});
  }
  if (!json_out.empty()) {
    nlohmann::json j = {{"bench", "attention_layer"},
                        {"cpu", bench::cpu_name()},
                        {"heads", H},
                        {"results", results}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  return 0;
}
