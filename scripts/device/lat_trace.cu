// Phase trace of the latency MLA kernel (src/ops/cuda/mla_decode_lat.cu built with
// MLA_LAT_TRACE): thread 0 of every CTA stamps %globaltimer and clock64 at the kernel's phase
// points; this prints, per point, the median and max over CTAs of the time since the earliest
// CTA start (ns) and the median SM cycles since the CTA's own start. Batch 1, block 64, random
// bf16 rows and query.
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc \
//     -DMLA_LAT_TRACE -o lat_trace scripts/device/lat_trace.cu && ./lat_trace 16 4096
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "ops/cuda/mla_decode_lat.cu"

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

int main(int argc, char** argv) {
  const int H = argc > 1 ? std::atoi(argv[1]) : 16;
  const int ctx = argc > 2 ? std::atoi(argv[2]) : 4096;
  const int block = 64, W = 576;
  const int nblk = (ctx + block - 1) / block;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto bf = [](float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  };
  std::vector<uint16_t> pool(static_cast<size_t>(nblk) * block * W), q(static_cast<size_t>(H) * W);
  for (auto& x : pool) x = bf(nd(rng));
  for (auto& x : q) x = bf(nd(rng));
  std::vector<int> table(nblk);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  uint16_t *d_pool, *d_q;
  int *d_table, *d_lens;
  float *d_out, *d_lse;
  CK(cudaMalloc(&d_pool, pool.size() * 2));
  CK(cudaMalloc(&d_q, q.size() * 2));
  CK(cudaMalloc(&d_table, nblk * 4));
  CK(cudaMalloc(&d_lens, 4));
  CK(cudaMalloc(&d_out, static_cast<size_t>(H) * 512 * 4));
  CK(cudaMalloc(&d_lse, H * 4));
  CK(cudaMemcpy(d_pool, pool.data(), pool.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_q, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_table, table.data(), nblk * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_lens, &ctx, 4, cudaMemcpyHostToDevice));
  using namespace helix::cuda;
  size_t smem = 0;
  int ctas = 0;
  CK(mla_lat::prepare(H, 1, &smem, &ctas));
  const int groups = (H + 15) / 16;
  const size_t parts = mla_lat::partial_bytes(H, ctas);
  uint8_t* ws;
  CK(cudaMalloc(&ws, parts + 16));
  CK(cudaMemset(ws + parts, 0, 16));
  mla_bf16::Args a;
  a.batch = 1;
  a.num_heads = H;
  a.block_size = block;
  a.max_blocks_per_seq = nblk;
  a.ctas_per_group = ctas;
  a.scale_log2 = 1.4426950408889634f / std::sqrt(192.f);
  a.q = d_q;
  a.kv_pool = reinterpret_cast<const uint8_t*>(d_pool);
  a.block_table = d_table;
  a.seq_lens = d_lens;
  a.out = d_out;
  a.lse = d_lse;
  a.part_out = reinterpret_cast<float*>(ws);
  a.part_lse = a.part_out + static_cast<size_t>(groups) * ctas * 2 * 16 * 512;
  auto* counter = reinterpret_cast<unsigned long long*>(ws + parts);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const dim3 grid(ctas, groups);
  for (int i = 0; i < 20; ++i) CK(mla_lat::launch(a, counter, grid, smem, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < 50; ++i) {
    CK(cudaEventRecord(e0, st));
    CK(mla_lat::launch(a, counter, grid, smem, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1e3f);
  }
  std::sort(t.begin(), t.end());
  const int n = ctas * groups;
  std::vector<unsigned long long> tr(static_cast<size_t>(1024) * 12 * 2);
  CK(cudaMemcpyFromSymbol(tr.data(), mla_lat::g_lat_trace, tr.size() * 8));
  unsigned long long g0 = ~0ull;
  for (int c = 0; c < n; ++c) g0 = std::min(g0, tr[(c * 12 + 0) * 2]);
  std::printf("H %d ctx %d: grid %d x %d, smem %zu; stream latency median %.2f us\n", H, ctx, ctas,
              groups, smem, t[t.size() / 2]);
  const char* names[11] = {"start",       "prefix sums", "issued",   "tile 0 landed",
                           "tile 0 done", "split done",  "barrier",  "end",
                           "seq written", "p2 loaded",   "p2 merged"};
  const int order[11] = {0, 1, 2, 3, 4, 8, 5, 6, 9, 10, 7};
  for (int oi = 0; oi < 11; ++oi) {
    const int i = order[oi];
    std::vector<double> wall, cyc;
    for (int c = 0; c < n; ++c) {
      const unsigned long long gt = tr[(c * 12 + i) * 2], ck = tr[(c * 12 + i) * 2 + 1];
      if (gt == 0 || gt < g0) continue;  // point not reached by this CTA
      wall.push_back(static_cast<double>(gt - g0));
      cyc.push_back(static_cast<double>(ck - tr[(c * 12 + 0) * 2 + 1]));
    }
    if (wall.empty()) continue;
    std::sort(wall.begin(), wall.end());
    std::sort(cyc.begin(), cyc.end());
    std::printf(
        "  %-14s ctas %3zu  ns since first start: min %7.0f med %7.0f max %7.0f | cycles "
        "since own start med %7.0f max %7.0f\n",
        names[i], wall.size(), wall[0], wall[wall.size() / 2], wall.back(), cyc[cyc.size() / 2],
        cyc.back());
  }
  return 0;
}
