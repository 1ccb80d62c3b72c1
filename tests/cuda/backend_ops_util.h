#pragma once
// Helpers of test_backend_ops.cpp: device buffers in any op dtype, host bf16 / FP8 E4M3 codecs,
// fixed-seed random data and the relative L2 error used as the parity measure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "ops/cuda/ops_cuda.h"

namespace helix::testing {

inline bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

inline const char* dtype_name(CudaDType t) {
  return t == CudaDType::kF32 ? "f32" : t == CudaDType::kBF16 ? "bf16" : "fp8";
}
inline size_t dtype_size(CudaDType t) {
  return t == CudaDType::kF32 ? 4 : t == CudaDType::kBF16 ? 2 : 1;
}

// Round to nearest even (finite inputs), as __float2bfloat16_rn.
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// E4M3 (bias 7, no infinities, 0x7f/0xff NaN) to float.
inline float fp8_value(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const float v =
      e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}

// Values representable in t (fp8: callers build bytes themselves).
inline std::vector<float> rounded(std::vector<float> v, CudaDType t) {
  if (t == CudaDType::kBF16)
    for (float& x : v) x = bf16_value(bf16_bits(x));
  return v;
}

// Untyped device buffer.
struct Dev {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Dev(size_t b) : bytes(b) {
    if (cudaMalloc(&ptr, b ? b : 1) != cudaSuccess) ptr = nullptr;
  }
  ~Dev() { cudaFree(ptr); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
  void poison() { cudaMemset(ptr, 0xff, bytes); }  // NaN in f32 and bf16
};

inline std::unique_ptr<Dev> upload_bytes(const void* src, size_t bytes) {
  auto d = std::make_unique<Dev>(bytes);
  cudaMemcpy(d->ptr, src, bytes, cudaMemcpyHostToDevice);
  return d;
}
template <typename T>
std::unique_ptr<Dev> upload(const std::vector<T>& v) {
  return upload_bytes(v.data(), sizeof(T) * v.size());
}
// Floats stored as dtype t (f32 or bf16).
inline std::unique_ptr<Dev> upload_as(const std::vector<float>& v, CudaDType t) {
  if (t == CudaDType::kF32) return upload(v);
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = bf16_bits(v[i]);
  return upload(b);
}
inline std::vector<float> download_as(const Dev& d, size_t n, CudaDType t) {
  std::vector<float> out(n);
  if (t == CudaDType::kF32) {
    cudaMemcpy(out.data(), d.ptr, 4 * n, cudaMemcpyDeviceToHost);
  } else {
    std::vector<uint16_t> b(n);
    cudaMemcpy(b.data(), d.ptr, 2 * n, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_value(b[i]);
  }
  return out;
}
template <typename T>
std::vector<T> download(const Dev& d, size_t n) {
  std::vector<T> out(n);
  cudaMemcpy(out.data(), d.ptr, sizeof(T) * n, cudaMemcpyDeviceToHost);
  return out;
}

inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ||a - b|| / ||b|| (absolute when b is zero); NaN anywhere gives +inf.
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

// Parity tolerance per activation dtype (fp8 weights: 2e-2 against the dequantised weights).
inline double tol_for(CudaDType act, bool fp8_weights = false) {
  if (fp8_weights) return 2e-2;
  return act == CudaDType::kF32 ? 1e-5 : 1e-2;
}

// One line per case, so a log shows which tolerance each op met.
inline void report(const std::string& op, const std::string& cas, double err, double tol) {
  std::printf("[parity] %-14s %-40s rel_l2 %.3e (tol %.0e)\n", op.c_str(), cas.c_str(), err, tol);
}

}  // namespace helix::testing
