// Helix decode attention step on CPU threads: each of cp ranks holds 1/cp of the context's latent
// KV, runs absorbed MLA over its shard, exchanges partial outputs + LSE with one all-to-all split
// by heads, combines exactly, applies W_UV and its o_proj slice, and all-reduces. Reports the
// step time against cp=1 and the bytes each rank sends per step (flat in the context length).
// Shapes: DeepSeek-V3 (128 heads, kv_lora 512, rope 64, v 128, hidden 7168), batch 1.
#include <cblas.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "model/helix_combine.h"
#include "ops/ops.h"
#include "parallel/comm.h"
#include "parallel/mapping.h"

using namespace helix;

int main(int argc, char** argv) {
  CLI::App app{"Helix attention step vs context length and cp, CPU threads"};
  std::vector<int> contexts = {4096, 8192, 16384, 32768};
  std::vector<int> cps = {1, 2, 4};
  int iters = 5, H = 16;  // 128 heads over attention TP 8
  std::string json_out;
  app.add_option("--contexts", contexts)->capture_default_str();
  app.add_option("--cp", cps, "CP sizes")->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str();
  app.add_option("--heads", H)->capture_default_str();
  app.add_option("--json", json_out, "Write results as JSON");
  CLI11_PARSE(app, argc, argv);

  const int D = 7168, L = 512, R = 64, V = 128, W = L + R, BLOCK = 64;
  const float scale = 1.0f / std::sqrt(192.0f);
  auto w_uv = bench::random_bf16(size_t(H) * V * L, 1.0f / std::sqrt(float(L)), 11);
  auto o_proj = bench::random_bf16(size_t(D) * H * V, 1.0f / std::sqrt(float(H * V)), 12);
  auto q = bench::random_bf16(size_t(H) * W, 1.0f, 13);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  nlohmann::json results = nlohmann::json::array();
  std::printf("%-8s %4s %12s %10s %16s\n", "context", "cp", "step_ms", "vs_cp1", "bytes_sent/step");
  for (int T : contexts) {
    auto cache = bench::random_bf16(size_t(T) * W, 1.0f, 100 + T);
    double base = 0;
    for (int cp : cps) {
      // Split the cores between rank threads so cp=1 is not starved of BLAS threads.
      openblas_set_num_threads(std::max(1, int(cores) / cp));
      double step_ms = 0, bytes = 0;
      run_threads(cp, [&](Communicator& comm) {
        const int r = comm.rank();
        // Round-robin blocks: block b on rank b % cp.
        std::vector<const float*> blocks;
        std::vector<int> lens;
        for (int b = r; b * BLOCK < T; b += cp) {
          blocks.push_back(cache.data() + size_t(b) * BLOCK * W);
          lens.push_back(std::min(BLOCK, T - b * BLOCK));
        }
        auto [hb, he] = split_range(H, cp, r);
        const int Ho = he - hb;
        std::vector<float> o(size_t(H) * L), lse(H), comb(size_t(Ho) * L);
        std::vector<float> av(size_t(Ho) * V), out(D);
        auto step = [&]() {
          MlaDecodeParams p;
          p.num_heads = H;
          p.kv_lora_rank = L;
          p.rope_dim = R;
          p.num_blocks = int(blocks.size());
          p.scale = scale;
          p.q = q.data();
          p.blocks = blocks.data();
          p.block_len = lens.data();
          p.out = o.data();
          p.lse = lse.data();
          mla_decode(p);
          HelixCombineParams hp;
          hp.batch = 1;
          hp.local_heads = H;
          hp.kv_lora_rank = L;
          hp.o = o.data();
          hp.lse = lse.data();
          hp.out = comb.data();
          helix_combine(comm, hp);
          for (int h = 0; h < Ho; ++h)
            matmul(comb.data() + size_t(h) * L, w_uv.data() + size_t(hb + h) * V * L,
                   av.data() + size_t(h) * V, 1, V, L);
          // o_proj columns of the owned heads: strided view of the full [D, H*V] matrix.
          matmul_strided(av.data(), Ho * V, o_proj.data() + size_t(hb) * V, H * V, true, out.data(),
                         D, 1, D, Ho * V, 0.0f);
          comm.all_reduce_sum(out.data(), out.size());
        };
        step();
        comm.reset_stats();
        comm.barrier();
        const double ms = bench::median_ms(iters, [&]() {
          step();
          comm.barrier();
        });
        if (r == 0) {
          step_ms = ms;
          uint64_t sent = 0;
          for (const auto& [k, v] : comm.stats().bytes_sent) sent += v;
          bytes = double(sent) / iters;
        }
      });
      if (cp == 1) base = step_ms;
      std::printf("%-8d %4d %12.2f %9.2fx %16.0f\n", T, cp, step_ms, base / step_ms, bytes);
      results.push_back({{"context", T},
                         {"cp", cp},
                         {"step_ms", step_ms},
                         {"speedup_vs_cp1", base / step_ms},
                         {"bytes_sent_per_step_rank0", bytes}});
    }
  }
  if (!json_out.empty()) {
    nlohmann::json j = {{"bench", "helix_attention"},
                        {"cpu", bench::cpu_name()},
                        {"cores", cores},
                        {"heads", H},
                        {"results", results}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  return 0;
}
