// Times the decode GEMMs of ops/cuda/ops_cuda.h at DeepSeek-V3 shapes: the FP8 block-scaled
// kernel and cuBLAS bf16 for dense weights, and the grouped FP8 expert GEMM (256 experts, top-8
// routing of m tokens). Prints weight bytes read / time against the device-to-device copy
// bandwidth (read + write bytes / time), the roofline of a memory-bound GEMM.
//
//   bench_gemm_cuda [--iters 20 --json out.json]
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_cuda_common.h"
#include "ops/cuda/ops_cuda.h"

namespace {

using helix::bench::time_ms;

void* dev_alloc(size_t bytes, int byte) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  CHECK_CUDA(cudaMemset(p, byte, bytes));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Decode GEMM timings of the CUDA op library against the copy bandwidth"};
  int iters = 20;
  std::string json_path;
  app.add_option("--iters", iters, "Timed runs per case (median reported)")->capture_default_str();
  app.add_option("--json", json_path, "Write the results here");
  CLI11_PARSE(app, argc, argv);
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::fprintf(stderr, "error: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  helix::CudaOpsContext ctx, ctx_widen;  // the second one has an FP8 scratch (prefill path)
  CHECK_CUDA(helix::cuda_ops_context_create(&ctx));
  CHECK_CUDA(helix::cuda_ops_context_create(&ctx_widen, 32u << 20, size_t(24576) * 7168 * 2));

  const size_t copy_bytes = size_t(2) << 30;
  void* src = dev_alloc(copy_bytes, 1);
  void* dst = dev_alloc(copy_bytes, 0);
  const double copy_ms =
      time_ms([&] { CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice)); },
              3, iters, nullptr);
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e6);
  cudaFree(src);
  cudaFree(dst);
  fmt::print("device {}: copy bandwidth {:.0f} GB/s (read + write)\n", prop.name, copy_gbs);
  fmt::print("{:<34} {:>5} {:>9} {:>9} {:>7}\n", "case", "m", "ms", "GB/s", "%copy");
  nlohmann::json rows = nlohmann::json::array();
  auto emit = [&](const std::string& name, int m, double ms, double bytes) {
    const double gbs = bytes / (ms * 1e6);
    fmt::print("{:<34} {:>5} {:>9.4f} {:>9.0f} {:>6.0f}%\n", name, m, ms, gbs,
               100 * gbs / copy_gbs);
    rows.push_back({{"case", name},
                    {"m", m},
                    {"ms", ms},
                    {"weight_gbs", gbs},
                    {"copy_gbs", copy_gbs},
                    {"device", prop.name}});
  };

  const int ms_list[] = {1, 2, 4, 8, 16, 64, 256};
  struct Shape {
    const char* name;
    int n, k;
  };
  const Shape shapes[] = {{"dense gate/up 18432x7168", 18432, 7168},
                          {"dense down 7168x18432", 7168, 18432},
                          {"q_b 24576x1536", 24576, 1536},
                          {"lm_head-like 16384x7168", 16384, 7168}};
  void* x = dev_alloc(size_t(256) * 18432 * 2, 0);
  void* y = dev_alloc(size_t(256) * 24576 * 4, 0);
  for (const Shape& s : shapes) {
    void* w8 = dev_alloc(size_t(s.n) * s.k, 0x30);
    const size_t nsc = size_t((s.n + 127) / 128) * ((s.k + 127) / 128);
    std::vector<float> ones(nsc, 1.0f);
    float* sc = static_cast<float*>(dev_alloc(nsc * 4, 0));
    CHECK_CUDA(cudaMemcpy(sc, ones.data(), nsc * 4, cudaMemcpyHostToDevice));
    void* w16 = dev_alloc(size_t(s.n) * s.k * 2, 0x3c);
    for (int m : ms_list) {
      helix::GemmCudaParams p;
      p.m = m, p.n = s.n, p.k = s.k, p.x_dtype = p.y_dtype = helix::CudaDType::kBF16;
      p.x = x, p.y = y;
      p.w_dtype = helix::CudaDType::kF8E4M3, p.w = w8, p.w_scale = sc;
      emit(fmt::format("fp8 direct {}", s.name), m,
           time_ms([&] { CHECK_CUDA(helix::gemm_cuda(ctx, p, nullptr)); }, 3, iters, nullptr),
           double(s.n) * s.k);
      if (m > 2 && m <= 16)
        for (int tr : {1, 2, 4, 8}) {
          p.tile_rows = tr;
          emit(fmt::format("fp8 direct tiles of {} {}", tr, s.name), m,
               time_ms([&] { CHECK_CUDA(helix::gemm_cuda(ctx, p, nullptr)); }, 3, iters, nullptr),
               double(s.n) * s.k);
          p.tile_rows = 0;
        }
      if (m > helix::kFp8DirectMaxRows)
        emit(fmt::format("fp8 widen+cublas {}", s.name), m,
             time_ms([&] { CHECK_CUDA(helix::gemm_cuda(ctx_widen, p, nullptr)); }, 3, iters,
                     nullptr),
             double(s.n) * s.k);
      p.w_dtype = helix::CudaDType::kBF16, p.w = w16, p.w_scale = nullptr;
      emit(fmt::format("bf16 cublas {}", s.name), m,
           time_ms([&] { CHECK_CUDA(helix::gemm_cuda(ctx, p, nullptr)); }, 3, iters, nullptr),
           2.0 * s.n * s.k);
    }
    cudaFree(w8);
    cudaFree(sc);
    cudaFree(w16);
  }

  // Grouped FP8 experts: 256 x [2048, 7168] (one of gate/up), m tokens routed top-8 at random.
  const int E = 256, n = 2048, k = 7168, top = 8;
  std::vector<void*> wptr(E);
  std::vector<float*> sptr(E);
  const size_t nsc = size_t(n / 128) * (k / 128);
  std::vector<float> ones(nsc, 1.0f);
  for (int e = 0; e < E; ++e) {
    wptr[e] = dev_alloc(size_t(n) * k, 0x30);
    sptr[e] = static_cast<float*>(dev_alloc(nsc * 4, 0));
    CHECK_CUDA(cudaMemcpy(sptr[e], ones.data(), nsc * 4, cudaMemcpyHostToDevice));
  }
  void *dwp = dev_alloc(E * sizeof(void*), 0), *dsp = dev_alloc(E * sizeof(float*), 0);
  CHECK_CUDA(cudaMemcpy(dwp, wptr.data(), E * sizeof(void*), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dsp, sptr.data(), E * sizeof(float*), cudaMemcpyHostToDevice));
  std::mt19937 rng(7);
  for (int m : {1, 8, 64, 256}) {
    std::vector<int> count(E, 0);
    for (int t = 0; t < m; ++t) {
      std::set<int> chosen;
      while (static_cast<int>(chosen.size()) < top) chosen.insert(static_cast<int>(rng() % E));
      for (int e : chosen) ++count[e];
    }
    std::vector<int32_t> off(E + 1, 0);
    int touched = 0;
    for (int e = 0; e < E; ++e) {
      off[e + 1] = off[e] + count[e];
      touched += count[e] > 0;
    }
    void* doff = dev_alloc((E + 1) * 4, 0);
    CHECK_CUDA(cudaMemcpy(doff, off.data(), (E + 1) * 4, cudaMemcpyHostToDevice));
    helix::GroupedGemmCudaParams p;
    p.num_groups = E, p.max_rows = m * top, p.n = n, p.k = k;
    p.x_dtype = p.y_dtype = helix::CudaDType::kBF16, p.w_dtype = helix::CudaDType::kF8E4M3;
    p.x = dev_alloc(size_t(m) * top * k * 2, 0);
    p.y = dev_alloc(size_t(m) * top * n * 2, 0);
    p.offsets = static_cast<int32_t*>(doff);
    p.w_ptrs = static_cast<const void* const*>(dwp);
    p.scale_ptrs = static_cast<const float* const*>(dsp);
    p.workspace_bytes = helix::grouped_gemm_cuda_workspace_bytes(E, p.max_rows);
    p.workspace = dev_alloc(p.workspace_bytes, 0);
    emit(fmt::format("fp8 grouped 256x2048x7168 ({} used)", touched), m,
         time_ms([&] { CHECK_CUDA(helix::grouped_gemm_cuda(p, nullptr)); }, 3, iters, nullptr),
         double(touched) * n * k);
    cudaFree(doff);
    cudaFree(const_cast<void*>(p.x));
    cudaFree(p.y);
    cudaFree(p.workspace);
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << rows.dump(2) << "\n";
  }
  helix::cuda_ops_context_destroy(&ctx);
  helix::cuda_ops_context_destroy(&ctx_widen);
  return 0;
}
#else
#include <cstdio>
int main() {
  std::puts("bench_gemm_cuda: built without CUDA");
  return 0;
}
#endif  // HELIX_HAVE_CUDA
