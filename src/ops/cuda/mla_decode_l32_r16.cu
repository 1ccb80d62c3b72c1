// Small sizes of the tests and toy models.
#include "ops/cuda/mla_decode_kernel.cuh"

namespace helix::cuda {
HELIX_INSTANTIATE_MLA_DECODE(32, 16, 16)
}  // namespace helix::cuda
