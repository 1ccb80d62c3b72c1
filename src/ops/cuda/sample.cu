// argmax_cuda and sample_cuda (ops_cuda.h): one block per row. Sampling avoids a sort: the kept
// set is {i : p_i >= tau}, tau the largest threshold that still keeps top_k tokens, then the
// largest (not below it) whose mass still reaches top_p, each found by bisection on tau's bit
// pattern (positive floats order as integers); the draw walks the kept tokens in index order.
// ops/cpu/sample.cpp is the same algorithm on the host (the reference of the parity test).
#include <cmath>

#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

constexpr int kThreads = 1024;

struct Best {
  float v;
  int i;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

// Argmax of one row over the block (first index on ties; NaN never wins); all threads get it.
__device__ Best block_argmax(const void* x, CudaDType t, int n, Best* sh) {
  Best b{-INFINITY, -1};
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = opsk::load_f(x, i, t);
    if (!(v != v)) b = better(b, Best{v, i});
  }
  for (int o = 16; o > 0; o >>= 1) {
    Best ob{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    b = better(b, ob);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) sh[warp] = b;
  __syncthreads();
  Best r{-INFINITY, -1};
  for (int w = 0; w < nw; ++w) r = better(r, sh[w]);
  __syncthreads();
  if (r.i < 0) r.i = 0;  // all NaN: index 0, as the CPU's loop
  return r;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(ArgmaxCudaParams p) {
  __shared__ Best sh[32];
  const void* row = static_cast<const char*>(p.x) +
                    static_cast<int64_t>(blockIdx.x) * p.n * opsk::dtype_bytes(p.dtype);
  const Best b = block_argmax(row, p.dtype, p.n, sh);
  if (threadIdx.x == 0) p.out[blockIdx.x] = b.i;
}

// Philox-4x32-10 (Salmon et al., SC'11): counter c, key k; ops/sample.h has the host twin.
__device__ uint4 philox(uint4 c, uint2 k) {
  for (int r = 0; r < 10; ++r) {
    const uint32_t lo0 = 0xD2511F53u * c.x, hi0 = __umulhi(0xD2511F53u, c.x);
    const uint32_t lo1 = 0xCD9E8D57u * c.z, hi1 = __umulhi(0xCD9E8D57u, c.z);
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k.x += 0x9E3779B9u;
    k.y += 0xBB67AE85u;
  }
  return c;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleCudaParams p) {
  __shared__ Best shb[32];
  __shared__ float red[32];
  __shared__ float pre[kThreads];
  __shared__ int chosen;
  const int r = blockIdx.x;
  const void* row = static_cast<const char*>(p.logits) +
                    static_cast<int64_t>(r) * p.vocab * opsk::dtype_bytes(p.dtype);
  // A NaN or Inf anywhere in the row: -1 (the host raises the non-finite error).
  int bad = 0;
  for (int i = threadIdx.x; i < p.vocab; i += blockDim.x)
    bad |= !isfinite(opsk::load_f(row, i, p.dtype));
  if (__syncthreads_or(bad)) {
    if (threadIdx.x == 0) p.out[r] = -1;
    return;
  }
  const Best top = block_argmax(row, p.dtype, p.vocab, shb);
  const SampleRow sp = p.params[r];
  if (!(sp.temperature > 0.0f)) {
    if (threadIdx.x == 0) p.out[r] = top.i;
    return;
  }
  const float inv_t = 1.0f / sp.temperature;
  auto prob = [&](int i) { return expf((opsk::load_f(row, i, p.dtype) - top.v) * inv_t); };
  // Mass (or count) of the tokens with p >= tau; counts stay exact in float below 2^24.
  auto mass = [&](float tau, bool count) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < p.vocab; i += blockDim.x) {
      const float q = prob(i);
      if (q >= tau) s += count ? 1.0f : q;
    }
    return opsk::block_sum(s, red);
  };
  // The top token has p = 1: nothing reaches the float just above 1.
  const uint32_t above_one = __float_as_uint(1.0f) + 1u;
  uint32_t lo = 0;
  if (sp.top_k > 0 && sp.top_k < p.vocab) {
    uint32_t hi = above_one;  // count(lo) >= top_k > count(hi)
    const float k = static_cast<float>(sp.top_k);
    while (hi - lo > 1u) {
      const uint32_t mid = lo + (hi - lo) / 2u;
      if (mass(__uint_as_float(mid), true) >= k)
        lo = mid;
      else
        hi = mid;
    }
  }
  if (sp.top_p < 1.0f) {
    const float target = sp.top_p * mass(__uint_as_float(lo), false);
    uint32_t hi = above_one;  // mass(lo) >= target > mass(hi)
    while (hi - lo > 1u) {
      const uint32_t mid = lo + (hi - lo) / 2u;
      if (mass(__uint_as_float(mid), false) >= target)
        lo = mid;
      else
        hi = mid;
    }
  }
  const float tau = __uint_as_float(lo);
  const float kept = mass(tau, false);
  const uint4 bits =
      philox(make_uint4(static_cast<uint32_t>(sp.counter), static_cast<uint32_t>(sp.counter >> 32),
                        static_cast<uint32_t>(sp.stream), static_cast<uint32_t>(sp.stream >> 32)),
             make_uint2(static_cast<uint32_t>(sp.seed), static_cast<uint32_t>(sp.seed >> 32)));
  const float u = static_cast<float>(bits.x >> 8) * (1.0f / 16777216.0f) * kept;
  // Each thread owns a contiguous slice of the vocabulary; prefix sums of the slices' kept mass
  // find the slice holding u, whose owner walks it in index order.
  const int per = (p.vocab + blockDim.x - 1) / blockDim.x;
  const int b0 = threadIdx.x * per, b1 = min(p.vocab, b0 + per);
  float own = 0.0f;
  for (int i = b0; i < b1; ++i) {
    const float q = prob(i);
    if (q >= tau) own += q;
  }
  pre[threadIdx.x] = own;
  if (threadIdx.x == 0) chosen = top.i;  // rounding fallback: the top token is always kept
  __syncthreads();
  // Inclusive scan of pre (Hillis-Steele; fixed order, so deterministic).
  for (int o = 1; o < blockDim.x; o <<= 1) {
    const float add = threadIdx.x >= o ? pre[threadIdx.x - o] : 0.0f;
    __syncthreads();
    pre[threadIdx.x] += add;
    __syncthreads();
  }
  const float before = pre[threadIdx.x] - own;
  if (own > 0.0f && u >= before && u < pre[threadIdx.x]) {
    float acc = before;
    int pick = -1;
    for (int i = b0; i < b1; ++i) {
      const float q = prob(i);
      if (q < tau) continue;
      pick = i;
      acc += q;
      if (acc > u) break;
    }
    if (pick >= 0) chosen = pick;
  }
  __syncthreads();
  if (threadIdx.x == 0) p.out[r] = chosen;
}

}  // namespace

cudaError_t argmax_cuda(const ArgmaxCudaParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.n <= 0 || !opsk::valid_act(p.dtype)) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  argmax_kernel<<<p.rows, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t sample_cuda(const SampleCudaParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.vocab <= 0 || !opsk::valid_act(p.dtype) || !p.params)
    return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  sample_kernel<<<p.rows, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
