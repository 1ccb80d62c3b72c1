#pragma once
// Helpers of test_backend_ops.cpp: device buffers in any op dtype, fixed-seed random data, the
// tolerances (GPU check, codecs and rel_l2: cuda_test_util.h).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_test_util.h"
#include "ops/cuda/ops_cuda.h"

namespace helix::testing {

inline const char* dtype_name(CudaDType t) {
  return t == CudaDType::kF32 ? "f32" : t == CudaDType::kBF16 ? "bf16" : "fp8";
}
inline size_t dtype_size(CudaDType t) {
  return t == CudaDType::kF32 ? 4 : t == CudaDType::kBF16 ? 2 : 1;
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
