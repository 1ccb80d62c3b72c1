// Session 7 (lat): per-phase stamps of the one-cluster kernel (mla_decode_cluster.cu built with
// MLA_CLUSTER_TRACE; this file includes it). Batch 1, 16 heads, block 64, random bf16 KV; before
// each run a kernel reads 4x the L2 (the bench's queued timing). Thread 0 of each CTA stamps
// %globaltimer: 0 start, 6 seq_lens / block-table entries / query loaded, 1 KV copies issued, 2
// first tile landed, 3 last tile computed, 4 after the cluster barrier (partials visible), 5 merged
// in DSMEM and written (out, or the cluster's partial), 7 the end (after the last cluster's global
// merge). Printed: medians over 30 runs of the median (and max) over CTAs, in us since the first
// CTA started, and the per-SM streaming rate (the CTA's KV bytes over stamps 1..3).
//   TRACE=1 bash scripts/device/s7_lat_prebuild.sh ... ; ./cluster_trace
#define MLA_CLUSTER_TRACE 1
#ifndef CLUSTER_SRC  // another version of the kernel's source (e.g. an earlier commit's)
#define CLUSTER_SRC "../../src/ops/cuda/mla_decode_cluster.cu"
#endif
#include CLUSTER_SRC

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

__global__ void flush_read(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    acc ^= p[i].x;
  if (acc == 0x12345678u) *sink = acc;
}

int main() {
  using namespace helix::cuda;
  const int H = 16, block = 64, max_ctx = 16384, rowb = 1152;
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  size_t smem = 0;
  int maxc = 0;
  CK(mla_cluster::prepare(&smem, &maxc));
  std::printf("cluster trace: smem %zu, largest cluster %d\n", smem, maxc);
  const int nblk = max_ctx / block;
  std::vector<uint16_t> pool_h(size_t(max_ctx) * rowb / 2), q_h(size_t(H) * 576);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> u(0x3c00, 0x3f00);  // bf16 ~ [0.0078, 0.5]
  for (auto& x : pool_h) x = uint16_t(u(rng));
  for (auto& x : q_h) x = uint16_t(u(rng));
  std::vector<int> table(nblk);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  uint8_t* pool;
  void *q, *out;
  int *d_table, *d_len;
  float* lse;
  CK(cudaMalloc(&pool, pool_h.size() * 2));
  CK(cudaMemcpy(pool, pool_h.data(), pool_h.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&q, q_h.size() * 2));
  CK(cudaMemcpy(q, q_h.data(), q_h.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&out, H * 512 * 4));
  CK(cudaMalloc(&lse, H * 4));
  CK(cudaMalloc(&d_table, nblk * 4));
  CK(cudaMemcpy(d_table, table.data(), nblk * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d_len, 4));
  int l2 = 0;
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  const size_t fbytes = std::max<size_t>(size_t(256) << 20, 4 * size_t(l2));
  uint4* fbuf;
  unsigned* sink;
  CK(cudaMalloc(&fbuf, fbytes));
  CK(cudaMemset(fbuf, 0, fbytes));
  CK(cudaMalloc(&sink, 16));
  void* ws;
  const size_t wsb = mla_cluster::workspace_bytes(H);
  CK(cudaMalloc(&ws, wsb));
  CK(cudaMemset(ws, 0, wsb));
  const int shapes[][2] = {{16, 1}, {16, 2}, {16, 4}, {16, 6}, {8, 4}, {8, 8}};
  for (int ctx : {1024, 4096, 16384})
    for (const auto& sh : shapes) {
      const int cs = sh[0], ncl = sh[1], nw = cs * ncl;
      if (cs > maxc) continue;
      CK(cudaMemcpy(d_len, &ctx, 4, cudaMemcpyHostToDevice));
      mla_bf16::Args a;
      a.batch = 1;
      a.num_heads = H;
      a.block_size = block;
      a.max_blocks_per_seq = ctx / block;
      a.scale_log2 = 0.1f;
      a.q = q;
      a.kv_pool = pool;
      a.block_table = d_table;
      a.seq_lens = d_len;
      a.out = out;
      a.lse = lse;
      const int runs = 30;
      std::vector<std::vector<double>> med(8), mx(8);
      std::vector<double> total;
      cudaEvent_t e0, e1;
      CK(cudaEventCreate(&e0));
      CK(cudaEventCreate(&e1));
      for (int r = 0; r < runs + 3; ++r) {
        flush_read<<<264, 1024, 0, st>>>(fbuf, fbytes / 16, sink);
        CK(cudaEventRecord(e0, st));
        CK(mla_cluster::launch(a, cs, ncl, ws, smem, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaStreamSynchronize(st));
        if (r < 3) continue;
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        total.push_back(1e3 * ms);
        unsigned long long tr[1024][8];
        CK(cudaMemcpyFromSymbol(tr, mla_cluster::g_cluster_trace, sizeof tr));
        unsigned long long t0 = ~0ull;
        for (int c = 0; c < nw; ++c) t0 = std::min(t0, tr[c][0]);
        for (int i = 0; i < 8; ++i) {
          std::vector<double> v;
          for (int c = 0; c < nw; ++c) v.push_back((tr[c][i] - t0) * 1e-3);
          std::sort(v.begin(), v.end());
          med[i].push_back(v[v.size() / 2]);
          mx[i].push_back(v.back());
        }
      }
      auto mid = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      const int tiles = (ctx + 31) / 32, per = (tiles + nw - 1) / nw;
      const double mb = per * 32.0 * rowb / 1e6;  // MB a CTA streams
      const double span = mid(med[3]) - mid(med[1]);
      std::printf(
          "cluster trace ctx %5d cs %2d x %d: event %.2f us | loads %.2f issued %.2f landed %.2f "
          "computed %.2f (max %.2f) barrier %.2f merged %.2f (max %.2f) end %.2f (max %.2f) | %d "
          "tiles/CTA, %.0f GB/s per SM (issued->computed), %.0f GB/s all\n",
          ctx, cs, ncl, mid(total), mid(med[6]), mid(med[1]), mid(med[2]), mid(med[3]), mid(mx[3]),
          mid(med[4]), mid(med[5]), mid(mx[5]), mid(med[7]), mid(mx[7]), per, mb * 1e3 / span,
          nw * mb * 1e3 / span);
    }
  return 0;
}
