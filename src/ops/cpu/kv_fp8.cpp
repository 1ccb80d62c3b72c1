// FP8 e4m3 latent KV rows on the host (ops.h, kv_fp8.cpp): the reference of the CUDA writer
// (mla_kv_write_cuda) and the decode path's dequantisation. The element codec is core's
// (core/float_codec.h), shared with the weight loader.
#include <cmath>
#include <cstring>

#include "core/kv_fp8_layout.h"
#include "ops/ops.h"

namespace helix {

size_t kv_fp8_row_bytes(int kv_lora_rank, int rope_dim) {
  return kv_fp8_row_bytes_for(kv_lora_rank, rope_dim);
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
  const float* e4m3 = fp8_e4m3_table().data();
  for (int i = 0; i < L; ++i) dst[i] = e4m3[row[i]] * scale;
  for (int i = 0; i < R; ++i) {
    uint16_t b;
    std::memcpy(&b, row + L + 2 * i, 2);
    dst[L + i] = bf16_to_float(b);
  }
}

}  // namespace helix
