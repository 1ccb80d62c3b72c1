#pragma once
// PTX wrappers of the sm90 MLA decode kernel (mla_decode_sm90.cuh): wgmma descriptors and MMAs;
// the ones shared with the other MLA kernels (barriers, mbarriers, TMA, fences, packing)
// come from ptx_common.cuh.
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_sm90 {

using namespace ptx;  // ptx_common.cuh

// ---- wgmma ----
// Descriptor of a 128B-swizzled operand: start, LBO, SBO in bytes (K-major: LBO unused, SBO =
// 1024 between 8-row groups; MN-major: LBO between 64-element column blocks, SBO between 8-row
// groups along K).
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffffu) >> 4) |
         (static_cast<uint64_t>((lbo & 0x3ffffu) >> 4) << 16) |
         (static_cast<uint64_t>((sbo & 0x3ffffu) >> 4) << 32) | (1ull << 62);
}
#include "ops/cuda/mla_decode_sm90_wgmma.inc"

}  // namespace helix::cuda::mla_sm90
