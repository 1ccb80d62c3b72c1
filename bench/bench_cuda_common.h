#pragma once
// Helpers shared by the CUDA benchmarks: a checked CUDA call, event timing, the copy roofline and
// the JSON results file.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

// Any CUDA error ends the benchmark with the failing call and its message.
#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t err_ = (expr);                                                              \
    if (err_ != cudaSuccess) {                                                                    \
      fmt::print(stderr, "{}:{}: {}: {}\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace helix::bench {

// Median milliseconds of `iters` timed runs of fn (after `warmup` untimed ones), by CUDA events
// recorded on `stream` around each run; before() is enqueued ahead of each run's start event.
template <typename Before, typename Fn>
double median_event_ms(Before&& before, Fn&& fn, int warmup, int iters, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    before();
    CHECK_CUDA(cudaEventRecord(start, stream));
    fn();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The same with nothing before each run: each run starts on an idle GPU, so the time includes the
// host's launch latency and a warm L2 (QueuedTimer below excludes both).
template <typename Fn>
double time_ms(Fn&& fn, int warmup, int iters, cudaStream_t stream) {
  return median_event_ms([] {}, fn, warmup, iters, stream);
}

// Reads a buffer of `bytes` (bench_flush.cu): clean lines of it replace whatever L2 held.
cudaError_t l2_flush_read(const void* buf, size_t bytes, unsigned* sink, cudaStream_t stream);

// Kernel timing in the spirit of kernel libraries' benches (Triton's do_bench, which FlashMLA's
// numbers use): before each timed run a kernel reads a buffer four times the L2, which evicts
// the previous run's data (no warm KV) and keeps the GPU busy while the host submits the run, so
// the interval between the events is GPU time, not host launch latency. A decode step queues its
// kernels the same way (or replays them in a graph). The flush reads rather than memsets (as
// do_bench does) so that the timed run does not pay for writing back dirty lines. Median of
// `iters` runs.
class QueuedTimer {
 public:
  explicit QueuedTimer(cudaStream_t stream) : stream_(stream) {
    int dev = 0, l2 = 0;
    CHECK_CUDA(cudaGetDevice(&dev));
    CHECK_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    bytes_ = std::max<size_t>(size_t{256} << 20, 4 * size_t(l2));
    CHECK_CUDA(cudaMalloc(&flush_, bytes_ + 16));
    CHECK_CUDA(cudaMemset(flush_, 0, bytes_ + 16));
    CHECK_CUDA(cudaDeviceSynchronize());
  }
  ~QueuedTimer() { cudaFree(flush_); }
  QueuedTimer(const QueuedTimer&) = delete;
  QueuedTimer& operator=(const QueuedTimer&) = delete;

  template <typename Fn>
  double ms(Fn&& fn, int warmup, int iters) {
    auto* sink = reinterpret_cast<unsigned*>(static_cast<char*>(flush_) + bytes_);
    return median_event_ms([&] { CHECK_CUDA(l2_flush_read(flush_, bytes_, sink, stream_)); }, fn,
                           warmup, iters, stream_);
  }

 private:
  cudaStream_t stream_;
  void* flush_ = nullptr;
  size_t bytes_ = 0;
};

// Read + write GB/s of a kCopyBytes device-to-device copy on `stream` (median of `iters`): the
// memory roofline the bandwidth-bound ops are measured against.
constexpr size_t kCopyBytes = size_t{2} << 30;
inline double copy_bandwidth_gbs(int warmup, int iters, cudaStream_t stream) {
  const size_t bytes = kCopyBytes;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  CHECK_CUDA(cudaMemset(src, 1, bytes));
  CHECK_CUDA(cudaMemset(dst, 0, bytes));
  const double ms = time_ms(
      [&] { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)); },
      warmup, iters, stream);
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

// The fields every CUDA bench's JSON starts with; the bench adds its own.
inline nlohmann::json json_header(const char* bench, const cudaDeviceProp& prop, int iters,
                                  int warmup) {
  return {{"bench", bench},
          {"device", prop.name},
          {"sm_count", prop.multiProcessorCount},
          {"iters", iters},
          {"warmup", warmup}};
}
// Writes j (indented) to path; false, with a line on stderr, when that fails.
inline bool write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  if (f) f << j.dump(2) << "\n";
  f.close();
  if (!f) fmt::print(stderr, "error: cannot write {}\n", path);
  return static_cast<bool>(f);
}

}  // namespace helix::bench
