#pragma once
// Shared by the CUDA tests (test_ops_cuda, test_mla_decode_bf16, test_backend_ops): GPU presence,
// a checked-call macro, a typed device array, the host bf16 / FP8 E4M3 codecs and the relative L2
// error every parity check uses.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "ops/ops.h"

// A CUDA call that must succeed (fails the test, naming the call and the error).
#define CUDA_OK(expr)                                                          \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

namespace helix::testing {

// A usable CUDA device; clears the error that asking leaves without one.
inline bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

// Owns a device array of T; copies to and from std::vector.
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) {
    if (cudaMalloc(&ptr, sizeof(T) * (n ? n : 1)) != cudaSuccess) ptr = nullptr;
  }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) {
    if (ptr && n) cudaMemcpy(ptr, v.data(), sizeof(T) * n, cudaMemcpyHostToDevice);
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void poison() { cudaMemset(ptr, 0xff, sizeof(T) * n); }  // all-ones bits: NaN in f32 and bf16
  std::vector<T> host() const {
    std::vector<T> v(n);
    if (n) cudaMemcpy(v.data(), ptr, sizeof(T) * n, cudaMemcpyDeviceToHost);
    return v;
  }
};

// bf16 and E4M3 on the host: the CPU reference's codec (core/float_codec.h).
inline uint16_t bf16_bits(float f) {
  return bf16_from_float(f);
}  // nearest even, as __float2bfloat16_rn
inline float bf16_value(uint16_t b) {
  return bf16_to_float(b);
}
inline float fp8_value(uint8_t b) {
  return fp8_e4m3_to_float(b);
}  // 0x7f / 0xff: NaN

// ||a - b|| / ||b|| in double (absolute when b is zero); NaN or inf anywhere gives +inf.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace helix::testing
