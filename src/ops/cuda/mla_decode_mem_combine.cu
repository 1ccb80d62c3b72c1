// The combine kernel of the memory-bound MLA decode (mla_decode_mem.h): merges the split
// kernel's per-CTA partials of sequences that span several CTAs, writes the empty sequences.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem.h"
#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem {
namespace {

using namespace detail;

// Merges the partials of sequences that span several CTAs and writes the empty sequences. Grid
// (B, H); launched as a programmatic dependent of the split kernel, so it waits for it first.
// Thread = (partial group, 4-column chunk): each keeps 8 independent partial loads in flight.
constexpr int kCombineThreads = 512;
constexpr int kCombineUnroll = 8;

// kFp8: the FP8 split kernel's partition (its seq_cost).
template <bool kFp8>
__global__ void __launch_bounds__(kCombineThreads) mla_mem_combine(const Args a) {
  mla_combine::combine_partials<kCombineThreads, L, kHeadGroup, kTile, kCombineUnroll, true,
                                mla_combine::kMinTiles, seq_cost<kFp8>()>(a);
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

cudaError_t launch_combine(const Args& a, bool fp8, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(a.batch, a.num_heads);
  cfg.blockDim = dim3(kCombineThreads);
  cfg.dynamicSmemBytes = 8 * static_cast<size_t>(a.ctas_per_group);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  // HELIX_MLA_NO_PDL=1: a plain launch (for measuring what the programmatic launch saves).
  static const bool no_pdl = [] {
    const char* e = std::getenv("HELIX_MLA_NO_PDL");
    return e && e[0] == '1';
  }();
  cfg.attrs = attr;
  cfg.numAttrs = no_pdl ? 0 : 1;
  return fp8 ? cudaLaunchKernelEx(&cfg, mla_mem_combine<true>, a)
             : cudaLaunchKernelEx(&cfg, mla_mem_combine<false>, a);
}

}  // namespace helix::cuda::mla_mem
