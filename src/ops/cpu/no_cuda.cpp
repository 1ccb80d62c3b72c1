// Builds without the CUDA backend: --device cuda is a clear error.
#include "core/error.h"
#include "ops/backend.h"

namespace helix {

#ifndef HELIX_HAVE_CUDA
std::unique_ptr<Ops> make_cuda_ops(int, DType) {
  fail("--device cuda: helix was built without CUDA support");
}
int cuda_device_count() {
  return 0;
}
#endif

}  // namespace helix
