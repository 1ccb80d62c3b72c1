// Times the decode GEMMs of ops/cuda/ops_cuda.h at the DeepSeek-V3 slice's shapes: dense FP8
// (tensor-core kernel, row-tile kernel, widen + cuBLAS) and bf16 (tensor-core kernel, cuBLAS),
// and the grouped expert GEMMs (256 experts, top-8 routing of m tokens; tensor-core vs row-tile,
// FP8 and bf16). Prints weight bytes read / time against the device-to-device copy bandwidth
// (read + write bytes / time), the roofline of a memory-bound GEMM.
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
  std::string filter, m_arg;
  app.add_option("--filter", filter, "Only cases whose name contains this");
  app.add_option("--m", m_arg, "Comma-separated row counts of the dense cases (default 1..256)");
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
  CHECK_CUDA(helix::cuda_ops_context_create(&ctx_widen, 32u << 20, size_t(36864) * 7168 * 2));

  const double copy_gbs = helix::bench::copy_bandwidth_gbs(3, iters, nullptr);
  fmt::print("device {}: copy bandwidth {:.0f} GB/s (read + write)\n", prop.name, copy_gbs);
  fmt::print("{:<34} {:>5} {:>9} {:>9} {:>7}\n", "case", "m", "ms", "GB/s", "%copy");
  nlohmann::json rows = nlohmann::json::array();
  auto wanted = [&](const std::string& name) {
    return filter.empty() || name.find(filter) != std::string::npos;
  };
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

  // Dense weights at the DeepSeek-V3 slice's shapes, several copies of each so the rotating
  // calls read HBM, not L2 (the small projections fit in L2).
  std::vector<int> ms_list = {1, 4, 8, 16, 32, 64, 128, 256};
  if (!m_arg.empty()) {
    ms_list.clear();
    for (size_t i = 0; i < m_arg.size();) {
      const size_t j = std::min(m_arg.find(',', i), m_arg.size());
      ms_list.push_back(std::stoi(m_arg.substr(i, j - i)));
      i = j + 1;
    }
  }
  struct Shape {
    const char* name;
    int n, k;
  };
  const Shape shapes[] = {{"q_a 1536x7168", 1536, 7168},
                          {"kv_a 576x7168", 576, 7168},
                          {"q_b 24576x1536", 24576, 1536},
                          {"o_proj 7168x16384", 7168, 16384},
                          {"dense gate_up 36864x7168", 36864, 7168},
                          {"dense down 7168x18432", 7168, 18432},
                          {"shared gate_up 4096x7168", 4096, 7168},
                          {"shared down 7168x2048", 7168, 2048}};
  void* x = dev_alloc(size_t(256) * 18432 * 2, 0x3c);
  void* y = dev_alloc(size_t(256) * 36864 * 4, 0);
  using helix::CudaDType;
  using helix::GemmAlgo;
  for (const Shape& s : shapes) {
    if (!wanted(s.name)) continue;
    const size_t bytes8 = size_t(s.n) * s.k;
    const int copies = static_cast<int>(std::max<size_t>(1, (size_t(512) << 20) / (2 * bytes8)));
    const size_t nsc = size_t((s.n + 127) / 128) * ((s.k + 127) / 128);
    std::vector<float> scales(nsc);
    std::mt19937 srng(3);
    for (float& v : scales) v = 0.5e-3f + 1e-3f * (srng() % 1000) / 1000.0f;
    std::vector<void*> w8(copies), w16(copies);
    std::vector<float*> sc(copies);
    for (int c = 0; c < copies; ++c) {
      w8[c] = dev_alloc(bytes8, 0x30 + c);
      w16[c] = dev_alloc(bytes8 * 2, 0x3c);
      sc[c] = static_cast<float*>(dev_alloc(nsc * 4, 0));
      CHECK_CUDA(cudaMemcpy(sc[c], scales.data(), nsc * 4, cudaMemcpyHostToDevice));
    }
    for (int m : ms_list) {
      helix::GemmCudaParams p;
      p.m = m, p.n = s.n, p.k = s.k, p.x_dtype = p.y_dtype = CudaDType::kBF16;
      p.x = x, p.y = y;
      int it = 0;
      auto run = [&](const helix::CudaOpsContext& c, bool fp8, GemmAlgo algo, int splits = 0) {
        return time_ms(
            [&] {
              const int i = it++ % copies;
              helix::GemmCudaParams q = p;
              q.algo = algo;
              q.splits = splits;
              q.w_dtype = fp8 ? CudaDType::kF8E4M3 : CudaDType::kBF16;
              q.w = fp8 ? w8[i] : w16[i];
              q.w_scale = fp8 ? sc[i] : nullptr;
              CHECK_CUDA(helix::gemm_cuda(c, q, nullptr));
            },
            3, iters, nullptr);
      };
      emit(fmt::format("fp8 mma {}", s.name), m, run(ctx, true, GemmAlgo::kMma), double(bytes8));
      if (m <= 8)
        emit(fmt::format("fp8 mma nosplit {}", s.name), m, run(ctx, true, GemmAlgo::kMma, 1),
             double(bytes8));
      if (m <= 64)
        emit(fmt::format("fp8 rowtile {}", s.name), m, run(ctx, true, GemmAlgo::kLegacy),
             double(bytes8));
      if (m > helix::kFp8DirectMaxRows)
        emit(fmt::format("fp8 widen+cublas {}", s.name), m, run(ctx_widen, true, GemmAlgo::kLegacy),
             double(bytes8));
      emit(fmt::format("bf16 mma {}", s.name), m, run(ctx, false, GemmAlgo::kMma), 2.0 * bytes8);
      emit(fmt::format("bf16 cublas {}", s.name), m, run(ctx, false, GemmAlgo::kLegacy),
           2.0 * bytes8);
    }
    for (int c = 0; c < copies; ++c) {
      cudaFree(w8[c]);
      cudaFree(w16[c]);
      cudaFree(sc[c]);
    }
  }
  cudaFree(x);
  cudaFree(y);

  // Grouped experts, the slice's routed experts: 256 x gate_up [4096, 7168] and down
  // [7168, 2048], m tokens routed top-8 to random experts; bf16 and FP8 weights (the FP8 bytes
  // alias the start of the bf16 buffers), the tensor-core kernel vs the row-tile kernel.
  const int E = 256, top = 8;
  struct GShape {
    const char* name;
    int n, k;
  };
  const GShape gshapes[] = {{"gate_up 4096x7168", 4096, 7168}, {"down 7168x2048", 7168, 2048}};
  std::mt19937 rng(7);
  for (const GShape& gs : gshapes) {
    if (!wanted(gs.name)) continue;
    const int n = gs.n, k = gs.k;
    std::vector<void*> wptr(E);
    std::vector<float*> sptr(E);
    const size_t nsc = size_t(n / 128) * (k / 128);
    std::vector<float> scales(nsc);
    for (float& v : scales) v = 0.5e-3f + 1e-3f * (rng() % 1000) / 1000.0f;
    for (int e = 0; e < E; ++e) {
      wptr[e] = dev_alloc(size_t(n) * k * 2, 0x3c);
      sptr[e] = static_cast<float*>(dev_alloc(nsc * 4, 0));
      CHECK_CUDA(cudaMemcpy(sptr[e], scales.data(), nsc * 4, cudaMemcpyHostToDevice));
    }
    void *dwp = dev_alloc(E * sizeof(void*), 0), *dsp = dev_alloc(E * sizeof(float*), 0);
    CHECK_CUDA(cudaMemcpy(dwp, wptr.data(), E * sizeof(void*), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dsp, sptr.data(), E * sizeof(float*), cudaMemcpyHostToDevice));
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
      p.x_dtype = p.y_dtype = CudaDType::kBF16;
      p.x = dev_alloc(size_t(m) * top * k * 2, 0x3c);
      p.y = dev_alloc(size_t(m) * top * n * 2, 0);
      p.offsets = static_cast<int32_t*>(doff);
      p.w_ptrs = static_cast<const void* const*>(dwp);
      p.scale_ptrs = static_cast<const float* const*>(dsp);
      p.workspace_bytes = helix::grouped_gemm_cuda_workspace_bytes(E, p.max_rows);
      p.workspace = dev_alloc(p.workspace_bytes, 0);
      for (CudaDType wt : {CudaDType::kF8E4M3, CudaDType::kBF16})
        for (GemmAlgo algo : {GemmAlgo::kMma, GemmAlgo::kLegacy}) {
          p.w_dtype = wt, p.algo = algo;
          const double bytes = double(touched) * n * k * (wt == CudaDType::kBF16 ? 2 : 1);
          emit(
              fmt::format("{} grouped {} {} ({} used)", wt == CudaDType::kBF16 ? "bf16" : "fp8",
                          algo == GemmAlgo::kMma ? "mma" : "rowtile", gs.name, touched),
              m,
              time_ms([&] { CHECK_CUDA(helix::grouped_gemm_cuda(p, nullptr)); }, 3, iters, nullptr),
              bytes);
        }
      cudaFree(doff);
      cudaFree(const_cast<void*>(p.x));
      cudaFree(p.y);
      cudaFree(p.workspace);
    }
    for (int e = 0; e < E; ++e) {
      cudaFree(wptr[e]);
      cudaFree(sptr[e]);
    }
    cudaFree(dwp);
    cudaFree(dsp);
  }
  if (!json_path.empty() && !helix::bench::write_json(json_path, rows)) return 1;
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
