#pragma once
// The non-finite guard: a NaN or Inf in the hidden state fails the request with an error naming
// the layer where it first appeared (the engine adds the step), instead of all-NaN logits and a
// silent greedy id 0. One pass over [tokens, hidden] per layer: noise next to the layer's GEMMs.
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace helix {

class NonFiniteError : public Error {
 public:
  using Error::Error;
};

// Throws NonFiniteError when x[0..n) holds a NaN or Inf: "<what> after layer <layer>".
// layer < 0: no layer (the logits).
inline void require_finite(const float* x, int64_t n, int layer, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(x[i])) continue;
    const std::string where = layer >= 0 ? fmt::format(" after layer {}", layer) : "";
    throw NonFiniteError(
        fmt::format("non-finite value ({}) in the {}{} (element {}); "
                    "check the weights with --check-weights",
                    std::isnan(x[i]) ? "nan" : "inf", what, where, i));
  }
}

}  // namespace helix
