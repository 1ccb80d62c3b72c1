// Times mla_decode_bf16_cuda (bf16 and FP8 latent KV) at DeepSeek-V3 shapes (L 512, R 64,
// block 64) against the two ceilings measured in the same run: device-to-device copy bandwidth
// (read + write bytes) and, when passed in, the bf16 GEMM rate (bench/mla_torch_baseline.py
// measures it, and PyTorch eager's bmm + softmax + bmm, in the same device command). Also the
// batch-1 latency against a launch-overhead floor (two back-to-back 4-byte memsets: the same
// two launches with no work).
//
// Times are queued (the headline): L2 flushed and the GPU busy when the run is submitted, as
// kernel libraries' benches time (bench_cuda_common.h, QueuedTimer). The isolated times (each
// run on an idle GPU with a warm L2, so host launch latency included) are reported beside them.
//
//   bench_mla_decode_bf16 [--iters 10 --json out.json --quick]
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_cuda_common.h"
#include "ops/cuda/mla_decode_bf16.h"

namespace {

using helix::bench::time_ms;

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Fills `bytes` of device memory by repeating `pattern_bytes` already at dst.
void replicate(uint8_t* dst, size_t pattern_bytes, size_t bytes) {
  for (size_t off = pattern_bytes; off < bytes;) {
    const size_t len = std::min(off, bytes - off);
    CHECK_CUDA(cudaMemcpy(dst + off, dst, len, cudaMemcpyDeviceToDevice));
    off += len;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mla_decode_bf16_cuda (bf16 / FP8 KV) vs copy bandwidth and the bf16 GEMM rate"};
  int iters = 10;
  std::string json_path;
  bool quick = false;
  double gemm_tflops = 0;
  app.add_option("--iters", iters, "timed runs per case (median reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "write the results to this JSON file");
  app.add_option("--gemm-tflops", gemm_tflops, "measured bf16 GEMM rate, for the fraction column");
  app.add_flag("--quick", quick, "a few shapes only");
  std::string kernel = "auto";
  app.add_option(
         "--kernel", kernel,
         "64-head groups: auto, mma.sync, wgmma or sm90 (mma.sync also runs <= 32 heads on "
         "the mla_bf16 kernels instead of the memory-bound one); lat: the one-launch "
         "small-batch kernel at every shape (bf16 KV); cluster: the one-cluster kernel at every "
         "shape (bf16 KV)")
      ->check(CLI::IsMember({"auto", "mma.sync", "wgmma", "sm90", "lat", "cluster"}));
  int num_ctas = 0;
  app.add_option("--ctas", num_ctas,
                 "MlaPlanDesc::num_ctas: CTAs per head group (with --kernel cluster: CTAs a "
                 "sequence, as clusters of up to 16); 0: the planner's choice")
      ->check(CLI::NonNegativeNumber);
  std::vector<int> heads_list = {128, 16};
  app.add_option("--heads", heads_list, "head counts to time (default 128 16)");
  std::vector<int> batches_opt, contexts_opt;
  app.add_option("--batches", batches_opt, "batch sizes to time (default 1 8 32 64)");
  app.add_option("--contexts", contexts_opt, "contexts to time (default 1K 4K 16K 64K 128K)");
  int q_len = 1;
  app.add_option("--q-len", q_len,
                 "query tokens per sequence (speculative decoding; flop and bytes count all)")
      ->check(CLI::Range(1, 8));
  bool skip_1m = false;
  app.add_flag("--skip-1m", skip_1m, "leave out the 1M-token contexts");
  CLI11_PARSE(app, argc, argv);

  int num_devices = 0;
  if (cudaGetDeviceCount(&num_devices) != cudaSuccess || num_devices == 0) {
    std::puts("bench_mla_decode_bf16: no CUDA device, nothing to measure");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const int warmup = 3;

  // Roofline: device-to-device copy of 2 GiB, read + write bytes.
  const double copy_gbs = helix::bench::copy_bandwidth_gbs(warmup, 20, stream);
  helix::bench::QueuedTimer queued(stream);
  // Launch floor: two dependent launches doing (almost) nothing, timed both ways.
  double floor_us = 0, floor_iso_us = 0;
  {
    void* tiny = nullptr;
    CHECK_CUDA(cudaMalloc(&tiny, 16));
    auto two = [&] {
      CHECK_CUDA(cudaMemsetAsync(tiny, 0, 4, stream));
      CHECK_CUDA(cudaMemsetAsync(tiny, 0, 4, stream));
    };
    floor_us = 1e3 * queued.ms(two, warmup, 50);
    floor_iso_us = 1e3 * time_ms(two, warmup, 50, stream);
    CHECK_CUDA(cudaFree(tiny));
  }
  fmt::print("device: {} ({} SMs)\n", prop.name, prop.multiProcessorCount);
  fmt::print(
      "D2D copy, 2 GiB: {:.0f} GB/s (read + write); launch floor (2 launches): {:.1f} us queued, "
      "{:.1f} us isolated\n",
      copy_gbs, floor_us, floor_iso_us);
  if (gemm_tflops > 0) fmt::print("bf16 GEMM (passed in): {:.0f} TFLOP/s\n", gemm_tflops);

  const int L = 512, R = 64, W = L + R, block = 64;
  std::vector<int> batch_list = {1, 8, 32, 64};
  std::vector<int> ctx_list = {1024, 4096, 16384, 65536, 131072};
  if (quick) {
    batch_list = {1, 32};
    ctx_list = {4096, 65536};
  }
  if (!batches_opt.empty()) batch_list = batches_opt;
  if (!contexts_opt.empty()) ctx_list = contexts_opt;
  struct Shape {
    int B, ctx;
  };
  std::vector<Shape> shapes;
  for (int B : batch_list)
    for (int ctx : ctx_list) shapes.push_back({B, ctx});
  if (!quick && !skip_1m) shapes.push_back({1, 1 << 20});
  if (!quick && !skip_1m) shapes.push_back({8, 1 << 20});
  // At least the 64K-token pattern written below (a small shape set must not overrun the pool).
  size_t max_tokens = 65536;
  for (const Shape& s : shapes) max_tokens = std::max(max_tokens, size_t(s.B) * s.ctx);
  const size_t max_blocks = max_tokens / block;

  // One pool per cache dtype, sized for the largest shape, filled once with random rows (a
  // random 64K-token pattern written by kv_write, then replicated on the device).
  const helix::MlaKvDtype dtypes[2] = {helix::MlaKvDtype::kBf16, helix::MlaKvDtype::kFp8E4m3};
  uint8_t* pools[2] = {nullptr, nullptr};
  std::mt19937 rng(1);
  {
    const int pat_tokens = 65536;
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> rows(size_t(pat_tokens) * W);
    for (auto& x : rows) x = normal(rng);
    std::vector<int64_t> slots(pat_tokens);
    std::iota(slots.begin(), slots.end(), 0);
    float* d_rows = nullptr;
    int64_t* d_slots = nullptr;
    CHECK_CUDA(cudaMalloc(&d_rows, rows.size() * sizeof(float)));
    CHECK_CUDA(cudaMalloc(&d_slots, slots.size() * sizeof(int64_t)));
    CHECK_CUDA(cudaMemcpy(d_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_slots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
    for (int k = 0; k < 2; ++k) {
      const size_t rb = helix::mla_kv_row_bytes(dtypes[k], L, R);
      CHECK_CUDA(cudaMalloc(&pools[k], max_tokens * rb));
      helix::MlaKvWriteParams w;
      w.num_tokens = pat_tokens;
      w.kv_dtype = dtypes[k];
      w.src = d_rows;
      w.slot_mapping = d_slots;
      w.kv_pool = pools[k];
      CHECK_CUDA(helix::mla_kv_write_cuda(w, stream));
      CHECK_CUDA(cudaStreamSynchronize(stream));
      replicate(pools[k], size_t(pat_tokens) * rb, max_tokens * rb);
    }
    CHECK_CUDA(cudaFree(d_rows));
    CHECK_CUDA(cudaFree(d_slots));
  }
  int32_t *d_table = nullptr, *d_lens = nullptr;
  CHECK_CUDA(cudaMalloc(&d_table, sizeof(int32_t) * max_blocks));
  CHECK_CUDA(cudaMalloc(&d_lens, sizeof(int32_t) * 64));
  void *d_q = nullptr, *d_out = nullptr;
  float* d_lse = nullptr;
  const size_t max_rows = size_t(64) * 128 * q_len;  // (batch, query token, head) rows
  CHECK_CUDA(cudaMalloc(&d_q, sizeof(uint16_t) * max_rows * W));
  CHECK_CUDA(cudaMalloc(&d_out, sizeof(float) * max_rows * L));
  CHECK_CUDA(cudaMalloc(&d_lse, sizeof(float) * max_rows));
  {
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<uint16_t> q(max_rows * W);
    for (auto& x : q) x = to_bf16(normal(rng));
    CHECK_CUDA(cudaMemcpy(d_q, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  }

  nlohmann::json cases = nlohmann::json::array();
  fmt::print("{:>5} {:>5} {:>8} {:>4} {:>9} {:>8} {:>7} {:>7} {:>8} {:>9} {:>7} {:>9}\n", "heads",
             "batch", "context", "kv", "us", "TFLOP/s", "GB/s", "of_copy", "of_gemm", "Mtok/s",
             "fp8/bf16", "iso_us");
  for (int H : heads_list)
    for (const Shape& s : shapes) {
      const int B = s.B, ctx = s.ctx;
      const int blocks_per_seq = ctx / block;
      const size_t nblk = size_t(B) * blocks_per_seq;
      std::vector<int32_t> table(nblk), lens(B, ctx);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);  // blocks scattered over the pool
      CHECK_CUDA(cudaMemcpy(d_table, table.data(), 4 * nblk, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(d_lens, lens.data(), 4 * B, cudaMemcpyHostToDevice));
      double tok_s[2] = {0, 0};
      for (int k = 0; k < 2; ++k) {
        helix::MlaPlanDesc d;
        d.num_heads = H;
        d.max_batch = B;
        d.kv_dtype = dtypes[k];
        d.num_ctas = num_ctas;
        d.q_len = q_len;
        d.kernel = kernel == "lat"        ? helix::MlaKernelChoice::kLatency
                   : kernel == "cluster"  ? helix::MlaKernelChoice::kCluster
                   : kernel == "sm90"     ? helix::MlaKernelChoice::kSm90
                   : kernel == "wgmma"    ? helix::MlaKernelChoice::kWgmma
                   : kernel == "mma.sync" ? helix::MlaKernelChoice::kMmaSync
                                          : helix::MlaKernelChoice::kAuto;
        helix::MlaPlan plan;
        CHECK_CUDA(helix::mla_plan(d, &plan));
        if (&s == &shapes[0])
          fmt::print(
              "plan H {} {}: grid {} x {} ({} with the sm90 kernel; clusters of up to {} CTAs)\n",
              H, k ? "fp8" : "bf16", plan.ctas_per_group, plan.num_head_groups,
              plan.sm90_ctas_per_group, plan.cluster_max);
        helix::MlaDecodeBf16Params p;
        p.batch = B;
        p.block_size = block;
        p.max_blocks_per_seq = blocks_per_seq;
        p.scale = 1.0f / std::sqrt(192.0f);
        p.q = d_q;
        p.kv_pool = pools[k];
        p.block_table = d_table;
        p.seq_lens = d_lens;
        p.out = d_out;
        p.lse = d_lse;
        auto launch = [&] { CHECK_CUDA(helix::mla_decode_bf16_cuda(p, plan, stream)); };
        const double ms = queued.ms(launch, warmup, iters);
        const double iso_ms = time_ms(launch, warmup, iters, stream);
        // A CUDA graph of the two launches, for the latency at small shapes.
        double graph_ms = 0, graph_iso_ms = 0;
        if (B == 1 && ctx <= 4096) {
          cudaGraph_t graph;
          cudaGraphExec_t exec;
          CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
          CHECK_CUDA(helix::mla_decode_bf16_cuda(p, plan, stream));
          CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
          CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
          auto replay = [&] { CHECK_CUDA(cudaGraphLaunch(exec, stream)); };
          graph_ms = queued.ms(replay, warmup, 50);
          graph_iso_ms = time_ms(replay, warmup, 50, stream);
          CHECK_CUDA(cudaGraphExecDestroy(exec));
          CHECK_CUDA(cudaGraphDestroy(graph));
        }
        std::vector<float> lse_h(size_t(B) * q_len * H);
        CHECK_CUDA(cudaMemcpy(lse_h.data(), d_lse, 4 * lse_h.size(), cudaMemcpyDeviceToHost));
        bool finite = true;
        for (float x : lse_h) finite = finite && std::isfinite(x);
        helix::mla_plan_release(&plan);
        const double tokens = double(B) * ctx;
        const double flop = 2.0 * H * q_len * (L + W) * tokens;
        const double bytes = tokens * double(helix::mla_kv_row_bytes(dtypes[k], L, R)) +
                             double(B) * q_len * H * (2.0 * W + 4.0 * L + 4.0);
        const double tflops = flop / (ms * 1e-3) / 1e12, gbs = bytes / (ms * 1e-3) / 1e9;
        tok_s[k] = tokens / (ms * 1e-3);
        fmt::print(
            "{:>5} {:>5} {:>8} {:>4} {:>9.1f} {:>8.1f} {:>7.0f} {:>7.3f} {:>8.3f} {:>9.0f} "
            "{:>7} {:>9.1f}{}\n",
            H, B, ctx, k ? "fp8" : "bf16", ms * 1e3, tflops, gbs, gbs / copy_gbs,
            gemm_tflops > 0 ? tflops / gemm_tflops : 0.0, tok_s[k] / 1e6,
            k ? fmt::format("{:.2f}", tok_s[1] / tok_s[0]) : std::string("-"), iso_ms * 1e3,
            finite ? "" : "  NON-FINITE LSE");
        nlohmann::json jc = {{"num_heads", H},
                             {"batch", B},
                             {"context", ctx},
                             {"kv_dtype", k ? "fp8_e4m3" : "bf16"},
                             {"q_len", q_len},
                             {"block_size", block},
                             {"time_us", ms * 1e3},
                             {"isolated_time_us", iso_ms * 1e3},
                             {"tflops", tflops},
                             {"gb_per_s", gbs},
                             {"fraction_of_copy", gbs / copy_gbs},
                             {"tokens_per_s", tok_s[k]},
                             {"lse_finite", finite}};
        if (gemm_tflops > 0) jc["fraction_of_gemm"] = tflops / gemm_tflops;
        if (graph_ms > 0) {
          jc["graph_time_us"] = graph_ms * 1e3;
          jc["isolated_graph_time_us"] = graph_iso_ms * 1e3;
          fmt::print(
              "      batch-1 {} latency: queued stream {:.1f} us, graph {:.1f} us, floor {:.1f} "
              "us; "
              "isolated stream {:.1f} us, graph {:.1f} us, floor {:.1f} us\n",
              ctx, ms * 1e3, graph_ms * 1e3, floor_us, iso_ms * 1e3, graph_iso_ms * 1e3,
              floor_iso_us);
        }
        cases.push_back(jc);
      }
    }
  CHECK_CUDA(cudaStreamDestroy(stream));
  if (!json_path.empty()) {
    nlohmann::json j = helix::bench::json_header("mla_decode_bf16", prop, iters, warmup);
    j["copy_gb_per_s"] = copy_gbs;
    j["launch_floor_us"] = floor_us;
    j["isolated_launch_floor_us"] = floor_iso_us;
    j["timing"] = "queued: L2 flushed and the GPU busy at submit; isolated_*: idle GPU, warm L2";
    j["gemm_tflops"] = gemm_tflops;
    j["kernel_64_heads"] = kernel;
    j["cases"] = cases;
    if (!helix::bench::write_json(json_path, j)) return 1;
  }
  return 0;
}
#else
#include <cstdio>
int main() {
  std::puts("bench_mla_decode_bf16: built without CUDA");
  return 0;
}
#endif  // HELIX_HAVE_CUDA
