#pragma once
// A dense row-major fp32 tensor that owns its storage. The CPU backend computes in fp32 whatever
// the checkpoint dtype, so one element type is enough here.
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace helix {

// "[a, b, c]": shapes in error messages.
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)) {
    data.assign(static_cast<size_t>(numel_of(shape)), fill);
  }

  static int64_t numel_of(const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
  }
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i < 0 ? i + rank() : i)); }
  int rank() const { return static_cast<int>(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  bool empty() const { return data.empty(); }
};

}  // namespace helix
