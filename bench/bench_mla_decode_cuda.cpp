// Times mla_decode_cuda at DeepSeek-V3 shapes against the device-to-device copy bandwidth of the
// GPU (the roofline of a memory-bound op) and prints a table; --json writes the results. Each
// case runs both split kernels on the same inputs: fma (fp32 FMA) and mma (tensor cores, 3xTF32),
// and reports how far apart their outputs are (rel L2).
//
//   bench_mla_decode_cuda [--iters 20 --json out.json]
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_cuda_common.h"
#include "ops/cuda/cuda_ops.h"

namespace {

using helix::bench::time_ms;

// Fills n floats of device memory with N(0, 1) values by repeating a random host pattern.
void fill_random(float* dst, size_t n, std::mt19937& rng) {
  static std::vector<float> pattern;
  if (pattern.empty()) {
    std::normal_distribution<float> normal(0.f, 1.f);
    pattern.resize(size_t{1} << 22);
    for (auto& x : pattern) x = normal(rng);
  }
  for (size_t off = 0; off < n; off += pattern.size()) {
    const size_t len = std::min(pattern.size(), n - off);
    CHECK_CUDA(cudaMemcpy(dst + off, pattern.data(), len * sizeof(float), cudaMemcpyHostToDevice));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mla_decode_cuda vs the device copy bandwidth"};
  int iters = 20;
  std::string json_path;
  app.add_option("--iters", iters, "timed runs per case (median reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "write the results to this JSON file");
  CLI11_PARSE(app, argc, argv);

  int num_devices = 0;
  if (cudaGetDeviceCount(&num_devices) != cudaSuccess || num_devices == 0) {
    std::puts("bench_mla_decode_cuda: no CUDA device, nothing to measure");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const int warmup = 3;

  // (a) roofline: device-to-device copy of 2 GiB, read + write bytes.
  const double copy_gbs = helix::bench::copy_bandwidth_gbs(warmup, iters, stream);
  fmt::print("device: {} ({} SMs)\n", prop.name, prop.multiProcessorCount);
  fmt::print("D2D copy, 2 GiB: {:.0f} GB/s (read + write)\n\n", copy_gbs);

  // (b) mla_decode_cuda at DeepSeek-V3 shapes.
  const int L = 512, R = 64, W = L + R, block = 64;
  const int heads_list[] = {128, 16};
  const int batch_list[] = {1, 8, 32};
  const int ctx_list[] = {1024, 4096, 16384, 65536};
  std::mt19937 rng(1);
  nlohmann::json cases = nlohmann::json::array();
  fmt::print("{:>5} {:>6} {:>7} {:>7} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9}\n", "heads",
             "batch", "context", "splits", "fma_us", "mma_us", "MB", "fma_GBs", "mma_GBs", "fma_cp",
             "mma_cp", "mma_vs_fma");
  for (int H : heads_list)
    for (int B : batch_list)
      for (int ctx : ctx_list) {
        const int blocks_per_seq = ctx / block;
        const size_t num_blocks = static_cast<size_t>(B) * blocks_per_seq;
        const size_t pool_floats = num_blocks * block * W;
        float *d_pool = nullptr, *d_q = nullptr, *d_out = nullptr, *d_lse = nullptr;
        int32_t *d_table = nullptr, *d_lens = nullptr;
        CHECK_CUDA(cudaMalloc(&d_pool, pool_floats * sizeof(float)));
        CHECK_CUDA(cudaMalloc(&d_q, sizeof(float) * B * H * W));
        CHECK_CUDA(cudaMalloc(&d_out, sizeof(float) * B * H * L));
        CHECK_CUDA(cudaMalloc(&d_lse, sizeof(float) * B * H));
        CHECK_CUDA(cudaMalloc(&d_table, sizeof(int32_t) * num_blocks));
        CHECK_CUDA(cudaMalloc(&d_lens, sizeof(int32_t) * B));
        fill_random(d_pool, pool_floats, rng);
        fill_random(d_q, static_cast<size_t>(B) * H * W, rng);
        // A shuffled block table: sequences' blocks are scattered over the pool.
        std::vector<int32_t> table(num_blocks), lens(B, ctx);
        std::iota(table.begin(), table.end(), 0);
        std::shuffle(table.begin(), table.end(), rng);
        CHECK_CUDA(cudaMemcpy(d_table, table.data(), sizeof(int32_t) * num_blocks,
                              cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(d_lens, lens.data(), sizeof(int32_t) * B, cudaMemcpyHostToDevice));

        helix::MlaDecodeCudaParams p;
        p.batch = B;
        p.num_heads = H;
        p.kv_lora_rank = L;
        p.rope_dim = R;
        p.block_size = block;
        p.max_blocks_per_seq = blocks_per_seq;
        p.max_seq_len = ctx;
        p.scale = 1.0f / std::sqrt(192.0f);
        p.q = d_q;
        p.kv_pool = d_pool;
        p.block_table = d_table;
        p.seq_lens = d_lens;
        p.out = d_out;
        p.lse = d_lse;
        const size_t ws_bytes = helix::mla_decode_cuda_workspace_bytes(p);
        void* ws = nullptr;
        if (ws_bytes) CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
        p.workspace = ws;
        p.workspace_bytes = ws_bytes;
        const int splits = helix::mla_decode_cuda_num_splits(p);

        const double bytes = sizeof(float) * (static_cast<double>(B) * ctx * W  // KV, read once
                                              + static_cast<double>(B) * H * W  // q
                                              + static_cast<double>(B) * H * (L + 1));  // out, lse
        const size_t out_n = static_cast<size_t>(B) * H * L;
        double ms[2] = {0, 0};
        std::vector<float> outs[2];
        const helix::MlaDecodeKernel kernels[2] = {helix::MlaDecodeKernel::kFma,
                                                   helix::MlaDecodeKernel::kMma};
        for (int k = 0; k < 2; ++k) {
          p.kernel = kernels[k];
          ms[k] = time_ms([&] { CHECK_CUDA(helix::mla_decode_cuda(p, stream)); }, warmup, iters,
                          stream);
          outs[k].resize(out_n);
          CHECK_CUDA(
              cudaMemcpy(outs[k].data(), d_out, sizeof(float) * out_n, cudaMemcpyDeviceToHost));
        }
        double num = 0, den = 0;
        for (size_t i = 0; i < out_n; ++i) {
          const double d = static_cast<double>(outs[1][i]) - outs[0][i];
          num += d * d;
          den += static_cast<double>(outs[0][i]) * outs[0][i];
        }
        const double rel = std::sqrt(num / std::max(den, 1e-300));
        const double gbs[2] = {bytes / (ms[0] * 1e-3) / 1e9, bytes / (ms[1] * 1e-3) / 1e9};
        fmt::print(
            "{:>5} {:>6} {:>7} {:>7} {:>9.1f} {:>9.1f} {:>8.1f} {:>7.0f} {:>7.0f} {:>7.3f} "
            "{:>8.3f} "
            "{:>9.1e}\n",
            H, B, ctx, splits, ms[0] * 1e3, ms[1] * 1e3, bytes / 1e6, gbs[0], gbs[1],
            gbs[0] / copy_gbs, gbs[1] / copy_gbs, rel);
        for (int k = 0; k < 2; ++k)
          cases.push_back({{"kernel", k == 0 ? "fma" : "mma"},
                           {"num_heads", H},
                           {"batch", B},
                           {"context", ctx},
                           {"kv_lora_rank", L},
                           {"rope_dim", R},
                           {"block_size", block},
                           {"num_splits", splits},
                           {"time_us", ms[k] * 1e3},
                           {"bytes", bytes},
                           {"gb_per_s", gbs[k]},
                           {"fraction_of_copy", gbs[k] / copy_gbs},
                           {"rel_l2_mma_vs_fma", rel}});
        CHECK_CUDA(cudaFree(ws));
        CHECK_CUDA(cudaFree(d_pool));
        CHECK_CUDA(cudaFree(d_q));
        CHECK_CUDA(cudaFree(d_out));
        CHECK_CUDA(cudaFree(d_lse));
        CHECK_CUDA(cudaFree(d_table));
        CHECK_CUDA(cudaFree(d_lens));
      }
  CHECK_CUDA(cudaStreamDestroy(stream));

  if (!json_path.empty()) {
    nlohmann::json j = helix::bench::json_header("mla_decode_cuda", prop, iters, warmup);
    j["dtype"] = "float32";
    j["copy_bytes"] = helix::bench::kCopyBytes;
    j["copy_gb_per_s"] = copy_gbs;
    j["cases"] = cases;
    if (!helix::bench::write_json(json_path, j)) return 1;
  }
  return 0;
}
#else
#include <cstdio>
int main() {
  std::puts("bench_mla_decode_cuda: built without CUDA");
  return 0;
}
#endif  // HELIX_HAVE_CUDA
