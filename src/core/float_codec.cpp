// bf16 / FP8 e4m3 conversions (float_codec.h).
#include "core/float_codec.h"

#include <cmath>

namespace helix {

uint16_t bf16_from_float(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint8_t fp8_e4m3_from_float(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7f;  // NaN
  const float a = std::bit_cast<float>(abs);
  if (a >= 448.0f) return sign | 0x7e;  // saturate (inf included): SATFINITE
  if (a < 0.015625f) {
    // Subnormals (and zero): multiples of 2^-9; the product is exact, nearbyint rounds to even
    // in the default rounding mode. 8 * 2^-9 = 2^-6 is code 0x08, the smallest normal.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  // Normals: keep 3 of the 23 mantissa bits, round to nearest even on the dropped 20; a carry
  // into the exponent is the correct next binade.
  const uint32_t r = abs + 0x7ffffu + ((abs >> 20) & 1u);
  const uint32_t exp = (r >> 23) - 127 + 7, mant = (r >> 20) & 7u;
  const uint32_t code = (exp << 3) | mant;
  return sign | static_cast<uint8_t>(code > 0x7e ? 0x7e : code);  // 464 rounds up past 448
}

float fp8_e4m3_to_float(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t e = (v >> 3) & 15u, m = v & 7u;
  if (e == 15 && m == 7) return std::bit_cast<float>(sign | 0x7fc00000u);
  if (e == 0) {
    const float f = static_cast<float>(m) * 0.001953125f;  // m * 2^-9, exact
    return sign ? -f : f;
  }
  return std::bit_cast<float>(sign | ((e - 7 + 127) << 23) | (m << 20));
}

const std::array<float, 256>& fp8_e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i)
      t[static_cast<size_t>(i)] = fp8_e4m3_to_float(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

}  // namespace helix
