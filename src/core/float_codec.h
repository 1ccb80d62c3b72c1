#pragma once
// The project's one bf16 / FP8 e4m3 codec: the weight loader (model/safetensors.cpp), the FP8 KV
// rows (ops/cpu/kv_fp8.cpp, through ops.h) and the host references of the CUDA tests all call
// these. It lives in core/ and depends on nothing else, so the sanitizer and fuzz builds of the
// loader, which link a few sources and not the library, can link it from float_codec.cpp alone.
#include <array>
#include <bit>
#include <cstdint>

namespace helix {

// bf16 bits -> float, exact.
inline float bf16_to_float(uint16_t v) {
  return std::bit_cast<float>(static_cast<uint32_t>(v) << 16);
}
// float -> bf16 bits, round-to-nearest-even (NaN stays NaN, quiet).
uint16_t bf16_from_float(float x);

// float -> e4m3 (1-4-3, bias 7, no infinities): round-to-nearest-even, finite values and +-inf
// saturate to +-448 (0x7e / 0xfe), NaN -> 0x7f with the sign bit of the input.
uint8_t fp8_e4m3_from_float(float x);
// e4m3 -> float, exact; 0x7f / 0xff are NaN (quiet, with the code's sign).
float fp8_e4m3_to_float(uint8_t v);
// fp8_e4m3_to_float of all 256 codes, for decode loops (the same bits, one load each).
const std::array<float, 256>& fp8_e4m3_table();

}  // namespace helix
