#pragma once
// A non-owning, typed, device-tagged view of a strided tensor (pointer, dtype, device, shape,
// strides in elements). Plain data: launchers take it by value. C++17-clean: .cu files include
// this.
#include <cstdint>

#include "core/dtype.h"

namespace helix {

struct TensorView {
  static constexpr int kMaxRank = 4;
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device;
  int rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0};
  int64_t stride[kMaxRank] = {0, 0, 0, 0};  // elements

  // A contiguous row-major view.
  static TensorView make(void* p, DType t, Device d, const int64_t* s, int r) {
    TensorView v;
    v.data = p;
    v.dtype = t;
    v.device = d;
    v.rank = r;
    int64_t st = 1;
    for (int i = r - 1; i >= 0; --i) {
      v.shape[i] = s[i];
      v.stride[i] = st;
      st *= s[i];
    }
    return v;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return rank == 0 ? (data ? 1 : 0) : n;
  }
  int64_t dim(int i) const { return shape[i < 0 ? i + rank : i]; }
  bool empty() const { return data == nullptr || numel() == 0; }
  bool contiguous() const {
    int64_t st = 1;
    for (int i = rank - 1; i >= 0; --i) {
      if (shape[i] != 1 && stride[i] != st) return false;
      st *= shape[i];
    }
    return true;
  }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  // Element pointer of index i along dim 0.
  char* at(int64_t i) const {
    return static_cast<char*>(data) + i * stride[0] * static_cast<int64_t>(dtype_size(dtype));
  }
  // Rows [r0, r1) along dim 0 (same strides).
  TensorView rows(int64_t r0, int64_t r1) const {
    TensorView v = *this;
    v.data = at(r0);
    v.shape[0] = r1 - r0;
    return v;
  }
  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }
};

}  // namespace helix
