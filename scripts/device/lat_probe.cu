// Fixed costs on the device that bound the batch-1 MLA decode latency (issue 8): launch floors,
// a large dynamic shared-memory carveout, thread-block clusters, programmatic dependent launch,
// the L2 latency of a dependent load, and a split kernel's I/O shape (128 CTAs each loading 36 KB
// and writing a 32 KB partial) with and without an in-cluster reduction through distributed
// shared memory. Each line: median of event-timed runs, stream and graph-replayed.
//   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o lat_probe lat_probe.cu && ./lat_probe
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

__global__ void k_empty() {}
__global__ void k_empty_smem() {
  extern __shared__ uint4 sm[];
  if (threadIdx.x == 1000) sm[0] = make_uint4(0, 0, 0, 0);
}
__global__ void k_pdl_primary() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
__global__ void k_pdl_secondary() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

// n dependent loads (a pointer chase through L2-resident memory).
__global__ void k_chase(const int* next, int n, int* out) {
  int i = 0;
  for (int k = 0; k < n; ++k) i = next[i];
  out[0] = i;
}

// Per CTA: load in_bytes (uint4, all in flight), write out_bytes (the split partial shape).
constexpr int kThreads = 256;
constexpr int kIn = 36864 / 16 / kThreads;   // 9 uint4 per thread
constexpr int kOut = 32768 / 16 / kThreads;  // 8
__device__ __forceinline__ uint4 load_tile(const uint4* src) {
  uint4 v[kIn];
#pragma unroll
  for (int i = 0; i < kIn; ++i)
    v[i] = src[static_cast<size_t>(blockIdx.x) * kIn * kThreads + i * kThreads + threadIdx.x];
  uint4 s = v[0];
#pragma unroll
  for (int i = 1; i < kIn; ++i) s.x ^= v[i].x, s.y += v[i].y, s.z ^= v[i].z, s.w += v[i].w;
  return s;
}
__global__ void k_io(const uint4* src, uint4* dst) {
  const uint4 s = load_tile(src);
#pragma unroll
  for (int i = 0; i < kOut; ++i)
    dst[static_cast<size_t>(blockIdx.x) * kOut * kThreads + i * kThreads + threadIdx.x] = s;
}
// The same, then the cluster's partials (32 KB each, in shared memory) summed through DSMEM:
// CTA r of the cluster reduces slice r; one 32 KB / C write per CTA.
__global__ void k_io_cluster(const uint4* src, uint4* dst) {
  extern __shared__ uint4 part[];  // kOut * kThreads uint4
  cg::cluster_group cl = cg::this_cluster();
  const uint4 s = load_tile(src);
#pragma unroll
  for (int i = 0; i < kOut; ++i) part[i * kThreads + threadIdx.x] = s;
  cl.sync();
  const int C = cl.num_blocks(), r = cl.block_rank();
  const int slice = kOut * kThreads / C;
  for (int x = threadIdx.x; x < slice; x += kThreads) {
    uint4 acc = make_uint4(0, 0, 0, 0);
    for (int c = 0; c < C; ++c) {
      const uint4* p = cl.map_shared_rank(part, c);
      const uint4 v = p[r * slice + x];
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    dst[static_cast<size_t>(blockIdx.x) * slice + x] = acc;
  }
  cl.sync();
}

cudaStream_t g_stream;

template <class F>
float median_us(F&& f, int iters = 200) {
  for (int i = 0; i < 20; ++i) f();
  CK(cudaStreamSynchronize(g_stream));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(a, g_stream));
    f();
    CK(cudaEventRecord(b, g_stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e3f);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
template <class F>
void report(const char* name, F&& f) {
  const float s = median_us(f);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeGlobal));
  f();
  CK(cudaStreamEndCapture(g_stream, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  const float gr = median_us([&] { CK(cudaGraphLaunch(ge, g_stream)); });
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  std::printf("%-58s stream %6.2f us  graph %6.2f us\n", name, s, gr);
}

template <class K, class... A>
void launch(K k, dim3 grid, int threads, size_t smem, int cluster, bool pdl, A... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = g_stream;
  cudaLaunchAttribute at[2];
  int n = 0;
  if (cluster > 1) {
    at[n].id = cudaLaunchAttributeClusterDimension;
    at[n].val.clusterDim.x = cluster;
    at[n].val.clusterDim.y = 1;
    at[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl) {
    at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = at;
  cfg.numAttrs = n;
  CK(cudaLaunchKernelEx(&cfg, k, args...));
}

int main() {
  CK(cudaStreamCreate(&g_stream));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  const size_t big = 200 * 1024;
  CK(cudaFuncSetAttribute(k_empty_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)big));
  CK(cudaFuncSetAttribute(k_io_cluster, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)big));
  CK(cudaFuncSetAttribute(k_io_cluster, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  CK(cudaFuncSetAttribute(k_empty_smem, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  void* tiny;
  CK(cudaMalloc(&tiny, 16));
  report("floor: 2 x memset 4 B", [&] {
    CK(cudaMemsetAsync(tiny, 0, 4, g_stream));
    CK(cudaMemsetAsync(tiny, 0, 4, g_stream));
  });
  report("1 x memset 4 B", [&] { CK(cudaMemsetAsync(tiny, 0, 4, g_stream)); });
  report("empty <<<1, 32>>>", [&] { k_empty<<<1, 32, 0, g_stream>>>(); });
  report("2 x empty <<<1, 32>>>", [&] {
    k_empty<<<1, 32, 0, g_stream>>>();
    k_empty<<<1, 32, 0, g_stream>>>();
  });
  report("empty <<<132, 256>>>", [&] { k_empty<<<132, 256, 0, g_stream>>>(); });
  report("empty <<<132, 256, 200 KB>>>", [&] { k_empty_smem<<<132, 256, big, g_stream>>>(); });
  report("empty 200 KB then empty (default carveout)", [&] {
    k_empty_smem<<<132, 256, big, g_stream>>>();
    k_empty<<<132, 256, 0, g_stream>>>();
  });
  report("empty 200 KB then empty 200 KB", [&] {
    k_empty_smem<<<132, 256, big, g_stream>>>();
    k_empty_smem<<<132, 256, big, g_stream>>>();
  });
  report("pdl pair <<<132>>> (secondary waits)", [&] {
    launch(k_pdl_primary, dim3(132), 256, 0, 1, false);
    launch(k_pdl_secondary, dim3(132), 256, 0, 1, true);
  });
  for (int c : {2, 4, 8, 16}) {
    char name[96];
    std::snprintf(name, sizeof name, "empty 200 KB, 128 CTAs, cluster %d", c);
    report(name, [&] { launch(k_empty_smem, dim3(128), 256, big, c, false); });
  }
  for (int c : {1, 2, 4, 8, 16}) {
    int n = 0;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(128);
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = big;
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = c;
    at.val.clusterDim.y = 1;
    at.val.clusterDim.z = 1;
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    CK(cudaOccupancyMaxActiveClusters(&n, k_io_cluster, &cfg));
    std::printf("max active clusters of %d (200 KB smem): %d\n", c, n);
  }
  // L2 latency
  {
    const int N = 1 << 16;
    std::vector<int> h(N);
    for (int i = 0; i < N; ++i) h[i] = (i * 7919 + 13) % N;
    int *d, *o;
    CK(cudaMalloc(&d, N * 4));
    CK(cudaMalloc(&o, 4));
    CK(cudaMemcpy(d, h.data(), N * 4, cudaMemcpyHostToDevice));
    const float t1 = median_us([&] { k_chase<<<1, 1, 0, g_stream>>>(d, 1, o); });
    const float t65 = median_us([&] { k_chase<<<1, 1, 0, g_stream>>>(d, 65, o); });
    std::printf("dependent L2 load: %.0f ns each\n", (t65 - t1) / 64 * 1e3);
  }
  // Split kernel I/O shape: 128 CTAs x (36 KB in, 32 KB out); 4.7 MB of L2-resident input.
  {
    uint4 *src, *dst;
    CK(cudaMalloc(&src, 128 * 36864));
    CK(cudaMalloc(&dst, 128 * 32768));
    CK(cudaMemset(src, 1, 128 * 36864));
    report("io: 128 CTAs x 36 KB load + 32 KB store",
           [&] { k_io<<<128, 256, 0, g_stream>>>(src, dst); });
    report("io: 64 CTAs x 36 KB load + 32 KB store",
           [&] { k_io<<<64, 256, 0, g_stream>>>(src, dst); });
    for (int c : {4, 8, 16}) {
      char name[96];
      std::snprintf(name, sizeof name, "io + DSMEM reduce, 128 CTAs, cluster %d", c);
      report(name, [&] { launch(k_io_cluster, dim3(128), 256, 32768, c, false, src, dst); });
    }
  }
  return 0;
}
