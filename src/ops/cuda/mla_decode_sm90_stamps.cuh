#pragma once
// Measurement build only (-DHELIX_SM90_STAMPS; s7-h128): %globaltimer stamps of each split CTA
// (bf16) and the combine's first release / last end, kept in device memory, printed at exit (the
// last bf16 launch of the process).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace helix::cuda::mla_sm90 {
constexpr int kStampN = 8, kStampCtas = 512;
__device__ unsigned long long g_stamps[kStampCtas][kStampN];
__device__ unsigned long long g_comb[3];  // min release, max release, max end
__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define SM90_STAMP(lin, k)                                  \
  do {                                                      \
    if ((lin) < kStampCtas) g_stamps[(lin)][(k)] = gtime(); \
  } while (0)

inline std::vector<unsigned long long> g_h(kStampCtas* kStampN);
inline unsigned long long g_hc[3];
inline void stamps_snapshot() {
  cudaMemcpyFromSymbol(g_h.data(), g_stamps, g_h.size() * 8);
  cudaMemcpyFromSymbol(g_hc, g_comb, 24);
}
inline void stamps_dump() {
  const std::vector<unsigned long long>& h = g_h;
  const unsigned long long* c = g_hc;
  unsigned long long t0 = ~0ull;
  int n = 0;
  for (int i = 0; i < kStampCtas; ++i)
    if (h[i * kStampN]) {
      t0 = std::min(t0, h[i * kStampN]);
      n = i + 1;
    }
  const char* names[kStampN] = {"entry", "depwait", "range", "q", "first", "loopend", "end", "-"};
  std::printf("STAMPS %d ctas (us from first entry)\n", n);
  for (int k = 0; k < 7; ++k) {
    std::vector<double> v;
    for (int i = 0; i < n; ++i)
      if (h[i * kStampN + k] >= t0 && h[i * kStampN]) v.push_back((h[i * kStampN + k] - t0) * 1e-3);
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    std::printf("STAMP %-8s n %3zu min %7.2f p10 %7.2f med %7.2f p90 %7.2f max %7.2f\n", names[k],
                v.size(), v[0], v[v.size() / 10], v[v.size() / 2], v[v.size() * 9 / 10], v.back());
  }
  std::printf("STAMP combine release %.2f .. %.2f, end %.2f\n", (c[0] - t0) * 1e-3,
              (c[1] - t0) * 1e-3, (c[2] - t0) * 1e-3);
  std::printf("STAMP ends by lin:");
  for (int i = 0; i < n; ++i)
    std::printf(" %.1f", h[i * kStampN + 6] >= t0 ? (h[i * kStampN + 6] - t0) * 1e-3 : -1.0);
  std::printf("\n");
}
}  // namespace helix::cuda::mla_sm90
