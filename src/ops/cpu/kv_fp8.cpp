// FP8 e4m3 latent KV rows on the host (ops.h, kv_fp8.cpp): the reference of the CUDA writer
// (mla_kv_write_cuda) and the decode path's dequantisation.
#include <bit>
#include <cstring>

#include "ops/ops.h"

namespace helix {

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

uint16_t bf16_from_float(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

size_t kv_fp8_row_bytes(int kv_lora_rank, int rope_dim) {
  return (static_cast<size_t>(kv_lora_rank) + 2 * static_cast<size_t>(rope_dim) + 4 + 15) / 16 * 16;
}

void kv_fp8_write_row(const float* src, int kv_lora_rank, int rope_dim, uint8_t* row) {
  const int L = kv_lora_rank, R = rope_dim;
  // fmax ignores NaN, as the CUDA writer's fmaxf reduction does.
  float amax = 0.0f;
  for (int i = 0; i < L; ++i) amax = std::fmax(amax, std::fabs(src[i]));
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  const float inv = 1.0f / scale;  // the writer multiplies by the reciprocal: same products
  for (int i = 0; i < L; ++i) row[i] = fp8_e4m3_from_float(src[i] * inv);
  for (int i = 0; i < R; ++i) {
    const uint16_t b = bf16_from_float(src[L + i]);
    std::memcpy(row + L + 2 * i, &b, 2);
  }
  std::memcpy(row + L + 2 * R, &scale, 4);
  const size_t used = static_cast<size_t>(L) + 2 * R + 4;
  std::memset(row + used, 0, kv_fp8_row_bytes(L, R) - used);
}

void kv_fp8_read_row(const uint8_t* row, int kv_lora_rank, int rope_dim, float* dst) {
  const int L = kv_lora_rank, R = rope_dim;
  float scale;
  std::memcpy(&scale, row + L + 2 * R, 4);
  for (int i = 0; i < L; ++i) dst[i] = fp8_e4m3_to_float(row[i]) * scale;
  for (int i = 0; i < R; ++i) {
    uint16_t b;
    std::memcpy(&b, row + L + 2 * i, 2);
    dst[L + i] = std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
  }
}

}  // namespace helix
