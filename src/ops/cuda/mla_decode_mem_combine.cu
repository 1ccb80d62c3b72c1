// The combine kernel of the memory-bound MLA decode (mla_decode_mem.h): merges the split
// kernel's per-CTA partials of sequences that span several CTAs, writes the empty sequences.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;

// Merges the partials of sequences that span several CTAs and writes the empty sequences. Grid
// (B, H); launched as a programmatic dependent of the split kernel, so it waits for it first.
// kCombineUnroll: partial loads in flight per thread.
constexpr int kCombineThreads = 512;
constexpr int kCombineUnroll = 8;

// The common case, a sequence of at most 4 x kCombineUnroll pieces (4 lanes a 4-column chunk),
// takes one L2 round trip after the split kernel (mla_combine::combine_one_trip, shared with the
// sm90 kernel's combine): the pieces' partial rows are computed before the PDL wait, then every
// partial value and lse a thread needs is loaded at once. More pieces, and the empty sequences:
// combine_partials (lse first, then the values).
// kFp8: the FP8 split kernel's partition (its seq_cost).
template <bool kFp8>
__global__ void __launch_bounds__(kCombineThreads) mla_mem_combine(const Args a) {
  mla_combine::combine_one_trip<kCombineThreads, L, kHeadGroup, kTile, kCombineUnroll,
                                mla_combine::kMinTiles, seq_cost<kFp8>(), false>(a);
}

}  // namespace

cudaError_t prepare_combine() {
  // On the all-shared carveout like the split kernel: no L1/shared reconfiguration between them.
  cudaError_t err =
      cudaFuncSetAttribute(mla_mem_combine<false>, cudaFuncAttributePreferredSharedMemoryCarveout,
                           cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  return cudaFuncSetAttribute(mla_mem_combine<true>, cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

bool pdl_off() {
  static const bool off = [] {
    const char* e = std::getenv("HELIX_MLA_NO_PDL");
    return e && e[0] == '1';
  }();
  return off;
}

cudaError_t launch_combine(const Args& a, bool fp8, cudaStream_t stream) {
  LaunchEx ex(dim3(a.batch, a.num_heads), dim3(kCombineThreads),
              8 * static_cast<size_t>(a.ctas_per_group), stream);
  ex.pdl(!pdl_off());
  return fp8 ? ex(mla_mem_combine<true>, a) : ex(mla_mem_combine<false>, a);
}

}  // namespace helix::cuda::mla_mem
