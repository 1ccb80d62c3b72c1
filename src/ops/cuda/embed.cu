// embed_cuda (ops_cuda.h): out[t] = table[ids[t]], ids read on the device.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

__global__ void embed_kernel(EmbedCudaParams p) {
  const int t = blockIdx.x;
  const int id = p.ids[t];
  const bool ok = id >= 0 && id < p.vocab;
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v =
        ok ? opsk::load_f(p.table, static_cast<int64_t>(id) * p.dim + i, p.table_dtype) : 0.0f;
    opsk::store_f(p.out, static_cast<int64_t>(t) * p.dim + i, v, p.out_dtype);
  }
}

}  // namespace

cudaError_t embed_cuda(const EmbedCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.dim <= 0 || !opsk::valid_act(p.table_dtype) ||
      !opsk::valid_act(p.out_dtype))
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  embed_kernel<<<p.num_tokens, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
