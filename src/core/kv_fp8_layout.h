#pragma once
// The byte size of one FP8 latent KV row, in one place for the host code (C++20) and the CUDA
// code (built as C++17, so this header includes nothing C++20): [c e4m3 x L][k_pe bf16 x R]
// [scale fp32], padded to 16 bytes so that every row starts 16-byte aligned for bulk copies.
#include <cstddef>

namespace helix {

constexpr size_t kv_fp8_row_bytes_for(int kv_lora_rank, int rope_dim) {
  return (static_cast<size_t>(kv_lora_rank) + 2 * static_cast<size_t>(rope_dim) + 4 + 15) / 16 * 16;
}

}  // namespace helix
