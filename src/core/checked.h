#pragma once
// Checked integer arithmetic for sizes and layout products: every count that sizes memory or a
// rank grid goes through these, so an overflow is an Error naming what was computed instead of
// a wrapped (negative, tiny) size or a SIGFPE later.
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string_view>
#include <utility>

#include "core/error.h"

namespace helix {

// a * b, or Error "<what> overflows".
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail("{} overflows ({} x {})", what, a, b);
  return r;
}

// Product of every factor, or Error.
inline int64_t checked_product(std::initializer_list<int64_t> factors, std::string_view what) {
  int64_t r = 1;
  for (int64_t f : factors) r = checked_mul(r, f, what);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail("{} overflows ({} + {})", what, a, b);
  return r;
}

// A 64-bit count narrowed to int, or Error.
inline int checked_int(int64_t v, std::string_view what) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail("{} ({}) does not fit a 32-bit int", what, v);
  return static_cast<int>(v);
}

// Requires lo <= v <= hi, naming the quantity and the bound's origin.
inline void check_range(int64_t v, int64_t lo, int64_t hi, std::string_view what) {
  if (v < lo || v > hi) fail("{} = {} is out of range [{}, {}]", what, v, lo, hi);
}

// [begin, end) of part i when n items split over `parts` as evenly as possible: the first
// n % parts parts get one more. The one even split of the code base (heads over CP ranks, rows
// over TP ranks, tokens over EP ranks, collective chunks).
template <typename N>
inline std::pair<N, N> even_split(N n, N parts, N i) {
  const N base = n / parts, extra = n % parts;
  const N begin = i * base + (i < extra ? i : extra);
  return {begin, begin + base + (i < extra ? N(1) : N(0))};
}

// Index of the first non-finite value of x[0..n), or -1. Cheap: one pass, no branches taken
// on finite data.
inline int64_t first_non_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

}  // namespace helix
