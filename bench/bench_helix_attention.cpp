// Helix decode attention step on CPU threads: each of cp ranks holds 1/cp of the context's latent
// KV, runs absorbed MLA over its shard, exchanges partial outputs + LSE with one all-to-all split
// by heads, combines exactly, applies W_UV and its o_proj slice, and all-reduces. Reports the
// step time against cp=1 and the bytes each rank sends per step (flat in the context length).
// Shapes: DeepSeek-V3 (128 heads, kv_lora 512, rope 64, v 128, hidden 7168), batch 1.
// --batch N: N requests per step, each with its own context (and KV shard); the exchange is one
// all-to-all for the batch. --hopb also times HOP-B: the exchange of request i runs on a worker
// thread while the rank computes the attention of request i+1 (cp > 1).
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
#include "parallel/comm_worker.h"
#include "parallel/mapping.h"

using namespace helix;

int main(int argc, char** argv) {
  CLI::App app{"Helix attention step vs context length and cp, CPU threads"};
  std::vector<int> contexts = {4096, 8192, 16384, 32768};
  std::vector<int> cps = {1, 2, 4};
  int iters = 5, H = 16;  // 128 heads over attention TP 8
  int batch = 1;
  bool hopb = false;
  std::string json_out;
  app.add_option("--contexts", contexts)->capture_default_str();
  app.add_option("--cp", cps, "CP sizes")->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str();
  app.add_option("--heads", H)->capture_default_str();
  app.add_option("--batch", batch, "Requests per decode step")->capture_default_str();
  app.add_flag("--hopb", hopb, "Also time HOP-B (exchange i overlapped with attention i+1)");
  app.add_option("--json", json_out, "Write results as JSON");
  CLI11_PARSE(app, argc, argv);

  const int D = 7168, L = 512, R = 64, V = 128, W = L + R, BLOCK = 64;
  const float scale = 1.0f / std::sqrt(192.0f);
  auto w_uv = bench::random_bf16(size_t(H) * V * L, 1.0f / std::sqrt(float(L)), 11);
  auto o_proj = bench::random_bf16(size_t(D) * H * V, 1.0f / std::sqrt(float(H * V)), 12);
  const int B = std::max(batch, 1);
  auto q = bench::random_bf16(size_t(B) * H * W, 1.0f, 13);  // [B, H, W]
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  nlohmann::json results = nlohmann::json::array();
  std::printf("batch %d\n%-8s %4s %12s %10s %16s %12s %10s\n", B, "context", "cp", "step_ms",
              "vs_cp1", "bytes_sent/step", "hopb_ms", "hopb_gain");
  for (int T : contexts) {
    std::vector<std::vector<float>> caches;  // one context per request
    for (int b = 0; b < B; ++b)
      caches.push_back(bench::random_bf16(size_t(T) * W, 1.0f, 100 + T + 7919 * b));
    double base = 0;
    for (int cp : cps) {
      // Split the cores between rank threads so cp=1 is not starved of BLAS threads.
      openblas_set_num_threads(std::max(1, int(cores) / cp));
      double step_ms = 0, bytes = 0, hopb_ms = 0;
      run_threads(cp, [&](Communicator& comm) {
        const int r = comm.rank();
        // Round-robin blocks: block k on rank k % cp, for every request's context.
        std::vector<std::vector<const float*>> blocks(B);
        std::vector<std::vector<int>> lens(B);
        for (int b = 0; b < B; ++b)
          for (int k = r; k * BLOCK < T; k += cp) {
            blocks[b].push_back(caches[b].data() + size_t(k) * BLOCK * W);
            lens[b].push_back(std::min(BLOCK, T - k * BLOCK));
          }
        auto [hb, he] = split_range(H, cp, r);
        const int Ho = he - hb;
        std::vector<float> o(size_t(B) * H * L), lse(size_t(B) * H), comb(size_t(B) * Ho * L);
        std::vector<float> av(size_t(B) * Ho * V), out(size_t(B) * D);
        std::unique_ptr<CommWorker> worker;  // created once per rank, reused by every step
        if (hopb && cp > 1) worker = std::make_unique<CommWorker>();
        auto step = [&](bool pipelined) {
          for (int b = 0; b < B; ++b) {
            MlaDecodeParams p;
            p.num_heads = H;
            p.kv_lora_rank = L;
            p.rope_dim = R;
            p.num_blocks = int(blocks[b].size());
            p.scale = scale;
            p.q = q.data() + size_t(b) * H * W;
            p.blocks = blocks[b].data();
            p.block_len = lens[b].data();
            p.out = o.data() + size_t(b) * H * L;
            p.lse = lse.data() + size_t(b) * H;
            mla_decode(p);
            if (pipelined)
              worker->submit([&, b] {
                HelixCombineParams hp;
                hp.batch = 1;
                hp.local_heads = H;
                hp.kv_lora_rank = L;
                hp.o = o.data() + size_t(b) * H * L;
                hp.lse = lse.data() + size_t(b) * H;
                hp.out = comb.data() + size_t(b) * Ho * L;
                helix_combine(comm, hp);
              });
          }
          if (pipelined) {
            worker->wait();  // comm is the main thread's again from here
          } else {
            HelixCombineParams hp;
            hp.batch = B;
            hp.local_heads = H;
            hp.kv_lora_rank = L;
            hp.o = o.data();
            hp.lse = lse.data();
            hp.out = comb.data();
            helix_combine(comm, hp);
          }
          for (int b = 0; b < B; ++b)
            for (int h = 0; h < Ho; ++h)
              matmul(comb.data() + (size_t(b) * Ho + h) * L, w_uv.data() + size_t(hb + h) * V * L,
                     av.data() + (size_t(b) * Ho + h) * V, 1, V, L);
          // o_proj columns of the owned heads: strided view of the full [D, H*V] matrix.
          matmul_strided(av.data(), Ho * V, o_proj.data() + size_t(hb) * V, H * V, true, out.data(),
                         D, B, D, Ho * V, 0.0f);
          comm.all_reduce_sum(out.data(), out.size());
        };
        step(false);
        comm.reset_stats();
        comm.barrier();
        const double ms = bench::median_ms(iters, [&]() {
          step(false);
          comm.barrier();
        });
        if (r == 0) {
          step_ms = ms;
          uint64_t sent = 0;
          for (const auto& [k, v] : comm.stats().bytes_sent) sent += v;
          bytes = double(sent) / iters;
        }
        if (worker) {
          step(true);
          comm.barrier();
          const double pms = bench::median_ms(iters, [&]() {
            step(true);
            comm.barrier();
          });
          if (r == 0) hopb_ms = pms;
        }
      });
      if (cp == 1) base = step_ms;
      const double hop = hopb_ms > 0 ? hopb_ms : step_ms;  // no pipeline at cp 1
      std::printf("%-8d %4d %12.2f %9.2fx %16.0f %12.2f %+9.1f%%\n", T, cp, step_ms, base / step_ms,
                  bytes, hop, 100.0 * (step_ms - hop) / step_ms);
      results.push_back({{"context", T},
                         {"cp", cp},
                         {"batch", B},
                         {"step_ms", step_ms},
                         {"speedup_vs_cp1", base / step_ms},
                         {"bytes_sent_per_step_rank0", bytes},
                         {"hopb_step_ms", hop},
                         {"hopb_gain", (step_ms - hop) / step_ms}});
    }
  }
  if (!json_out.empty()) {
    nlohmann::json j = {{"bench", "helix_attention"},
                        {"cpu", bench::cpu_name()},
                        {"cores", cores},
                        {"heads", H},
                        {"batch", B},
                        {"hopb", hopb},
                        {"results", results}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  return 0;
}
