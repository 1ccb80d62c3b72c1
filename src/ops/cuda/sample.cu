// argmax_cuda and sample_cuda (ops_cuda.h): one block per row, strided (coalesced) passes.
// Sampling avoids a sort: the kept set is {i : p_i >= tau}, tau the largest threshold that still
// keeps top_k tokens, then the largest (not below it) whose mass still reaches top_p, each found
// by bisection on tau's bit pattern (positive floats order as integers); the draw walks the kept
// tokens in index order. Tokens with p < kSampleMinP never count (ops/sample.h). One pass
// histograms the row by octave of p; with top_k or top_p the octave of the threshold bounds the
// tokens that can be kept (the candidates), which usually fit in shared memory: a second pass
// stores them there and the bisections read only them. Otherwise (more than kCap, or no
// truncation) every pass re-reads the row.
// ops/cpu/sample.cpp is the same algorithm on the host (the reference of the parity test).
#include <cmath>

#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

constexpr int kThreads = 1024;
constexpr int kCap = 16384;      // candidates in dynamic shared memory: (p, index), 128 KiB
constexpr int kBins = 31;        // octaves of p in [2^-30, 1]
constexpr int kWarpCand = 4096;  // up to this many candidates one warp runs the bisections

struct Best {
  float v;
  int i;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

// This thread's contiguous slice [b0, b1) of a row of n.
__device__ __forceinline__ void slice(int n, int* b0, int* b1) {
  const int per = (n + blockDim.x - 1) / blockDim.x;
  *b0 = min(n, static_cast<int>(threadIdx.x) * per);
  *b1 = min(n, *b0 + per);
}

// Argmax of one row over the block (first index on ties; NaN never wins); all threads get it.
// *bad (optional): whether the row holds a NaN or an Inf, for every thread. Strided (coalesced)
// loads, one pass.
__device__ Best block_argmax(const void* x, CudaDType t, int n, Best* sh, bool* bad = nullptr) {
  Best b{-INFINITY, -1};
  int nonfinite = 0;
  if (t == CudaDType::kF32 && n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    // fp32 logits (the model's): 16-byte loads, four tokens each, in index order per thread.
    const float4* x4 = static_cast<const float4*>(x);
#pragma unroll 2
    for (int j = threadIdx.x; j < n / 4; j += blockDim.x) {
      const float4 q = x4[j];
      const float e[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        nonfinite |= !isfinite(e[k]);
        if (!(e[k] != e[k]) && (b.i < 0 || e[k] > b.v)) b = Best{e[k], 4 * j + k};
      }
    }
  } else {
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = opsk::load_f(x, i, t);
      nonfinite |= !isfinite(v);
      if (!(v != v) && (b.i < 0 || v > b.v)) b = Best{v, i};
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    Best ob{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    b = better(b, ob);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) sh[warp] = b;
  const int any_bad = __syncthreads_or(nonfinite);
  if (bad) *bad = any_bad != 0;
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

// Inclusive scan of v over the block in `buf` (blockDim.x entries; Hillis-Steele, fixed order, so
// deterministic); returns this thread's inclusive prefix.
template <typename T>
__device__ T block_scan(T v, T* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int o = 1; o < blockDim.x; o <<= 1) {
    const T add = threadIdx.x >= o ? buf[threadIdx.x - o] : T(0);
    __syncthreads();
    buf[threadIdx.x] += add;
    __syncthreads();
  }
  const T r = buf[threadIdx.x];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleCudaParams p) {
  extern __shared__ float4 dyn[];
  float* cand_p = reinterpret_cast<float*>(dyn);
  int* cand_i = reinterpret_cast<int*>(cand_p + kCap);
  __shared__ Best shb[32];
  __shared__ float red[32];
  __shared__ float fscan[kThreads];
  __shared__ unsigned hcount[32][kBins];
  __shared__ unsigned long long hmass[32][kBins];
  __shared__ unsigned tot_count[kBins];
  __shared__ unsigned long long tot_mass[kBins];
  __shared__ int chosen, n_cand_s, lb_e_s;
  __shared__ uint32_t lo_s;
  const int r = blockIdx.x, V = p.vocab;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const void* row =
      static_cast<const char*>(p.logits) + static_cast<int64_t>(r) * V * opsk::dtype_bytes(p.dtype);
  // A NaN or Inf anywhere in the row: -1 (the host raises the non-finite error).
  bool bad = false;
  const Best top = block_argmax(row, p.dtype, V, shb, &bad);
  if (bad) {
    if (threadIdx.x == 0) p.out[r] = -1;
    return;
  }
  const SampleRow sp = p.params[r];
  if (!(sp.temperature > 0.0f)) {
    if (threadIdx.x == 0) p.out[r] = top.i;
    return;
  }
  const float inv_t = 1.0f / sp.temperature;
  auto prob = [&](int i) {
    const float q = expf((opsk::load_f(row, i, p.dtype) - top.v) * inv_t);
    return q >= kSampleMinP ? q : 0.0f;
  };
  const bool trunc_k = sp.top_k > 0 && sp.top_k < V, trunc_p = sp.top_p < 1.0f;
  // One pass: count (and, for top_p alone, fixed-point mass) of the tokens per octave of p (bin
  // e: p in [2^-e, 2^-e+1), p = 1 in bin 0) and warp (integer atomics: deterministic), and the
  // total. Warp w reads its own contiguous chunk of the row, 32 tokens at a time (coalesced), so
  // its counts also place its candidates below without a block barrier per tile.
  const bool need_mass = trunc_p && !trunc_k;
  for (int j = threadIdx.x; j < 32 * kBins; j += blockDim.x) {
    hcount[j / kBins][j % kBins] = 0;
    hmass[j / kBins][j % kBins] = 0;
  }
  __syncthreads();
  const int chunk = (V + nw - 1) / nw;
  const int w0 = min(V, warp * chunk), w1 = min(V, w0 + chunk);
  float own_total = 0.0f;
  for (int i0 = w0; i0 < w1; i0 += 32) {
    const int i = i0 + lane;
    const float q = i < w1 ? prob(i) : 0.0f;
    own_total += q;
    const int e = q > 0.0f ? min(kBins - 1, 127 - static_cast<int>(__float_as_uint(q) >> 23)) : -1;
    // Lanes of one octave add once (their leader), the mass one by one (top_p alone).
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (e >= 0) {
      if (lane == __ffs(peers) - 1)
        atomicAdd(&hcount[warp][e], static_cast<unsigned>(__popc(peers)));
      if (need_mass) atomicAdd(&hmass[warp][e], __float2ull_rz(q * 4294967296.0f));
    }
  }
  const float total = opsk::block_sum(own_total, red);  // ends with a barrier
  if (threadIdx.x < kBins) {
    unsigned c = 0;
    unsigned long long m = 0;
    for (int w = 0; w < nw; ++w) {
      c += hcount[w][threadIdx.x];
      m += hmass[w][threadIdx.x];
    }
    tot_count[threadIdx.x] = c;
    tot_mass[threadIdx.x] = m;
  }
  __syncthreads();
  // The lower bound 2^-lb_e of the kept tokens: the octave where the top_k-th token lies, or
  // one below the octave where the mass reaches top_p (fixed point vs float: one octave of
  // slack); every threshold the bisections test then lies above it or gives the same answer,
  // so the candidates above it decide exactly as the whole row would.
  if (threadIdx.x == 0) {
    int e_lb = kBins - 1;
    if (trunc_k) {
      unsigned acc = 0;
      for (int e = 0; e < kBins; ++e) {
        acc += tot_count[e];
        if (acc >= static_cast<unsigned>(sp.top_k)) {
          e_lb = e;
          break;
        }
      }
    } else if (trunc_p) {
      unsigned long long all = 0, acc = 0;
      for (int e = 0; e < kBins; ++e) all += tot_mass[e];
      const double target = static_cast<double>(sp.top_p) * static_cast<double>(all);
      for (int e = 0; e < kBins; ++e) {
        acc += tot_mass[e];
        if (static_cast<double>(acc) >= target) {
          e_lb = min(kBins - 1, e + 1);
          break;
        }
      }
    }
    unsigned n = 0;
    for (int e = 0; e <= e_lb; ++e) n += tot_count[e];
    lb_e_s = e_lb;
    n_cand_s = static_cast<int>(n);
  }
  __syncthreads();
  const int n_cand = n_cand_s;
  const float lb = (trunc_k || trunc_p) ? ldexpf(1.0f, -lb_e_s) : 0.0f;
  const bool in_smem = n_cand <= kCap;
  if (in_smem) {
    // The candidates (p >= lb, i.e. octave <= lb_e) in index order: warp w's go after those of
    // warps 0..w-1 (its counts above), each warp placing 32 tokens at a time by ballot.
    int at = 0;
    for (int w = 0; w < warp; ++w)
      for (int e = 0; e <= lb_e_s; ++e) at += hcount[w][e];
    for (int i0 = w0; i0 < w1; i0 += 32) {
      const int i = i0 + lane;
      const float q = i < w1 ? prob(i) : 0.0f;
      const bool keep = q > 0.0f && q >= lb;
      const unsigned ballot = __ballot_sync(0xffffffffu, keep);
      if (keep) {
        const int c = at + __popc(ballot & ((1u << lane) - 1u));
        cand_p[c] = q;
        cand_i[c] = i;
      }
      at += __popc(ballot);
    }
    __syncthreads();
  }
  // Mass (or count) of the tokens with p >= tau (tau > 0); counts stay exact in float below
  // 2^24.
  auto mass = [&](float tau, bool count) {
    float s = 0.0f;
    if (in_smem) {
      for (int c = threadIdx.x; c < n_cand; c += blockDim.x) {
        const float q = cand_p[c];
        if (q >= tau) s += count ? 1.0f : q;
      }
    } else {
      for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float q = prob(i);
        if (q > 0.0f && q >= tau) s += count ? 1.0f : q;
      }
    }
    return opsk::block_sum(s, red);
  };
  // The top token has p = 1: nothing reaches the float just above 1.
  const uint32_t above_one = __float_as_uint(1.0f) + 1u;
  // Both bisections with mass function m (block-wide or one warp's); returns the threshold.
  auto bisect = [&](auto&& m) {
    uint32_t lo = 0;
    if (trunc_k) {
      uint32_t hi = above_one;  // count(lo) >= top_k > count(hi)
      const float k = static_cast<float>(sp.top_k);
      while (hi - lo > 1u) {
        const uint32_t mid = lo + (hi - lo) / 2u;
        if (m(__uint_as_float(mid), true) >= k)
          lo = mid;
        else
          hi = mid;
      }
    }
    if (trunc_p) {
      // Without top_k the mass to reach is top_p of the whole row (candidates hold p >= lb).
      const float target = sp.top_p * (trunc_k || !in_smem ? m(__uint_as_float(lo), false) : total);
      if (!trunc_k && in_smem) lo = __float_as_uint(lb);
      uint32_t hi = above_one;  // mass(lo) >= target > mass(hi)
      while (hi - lo > 1u) {
        const uint32_t mid = lo + (hi - lo) / 2u;
        if (m(__uint_as_float(mid), false) >= target)
          lo = mid;
        else
          hi = mid;
      }
    }
    return lo;
  };
  uint32_t lo;
  if (in_smem && n_cand <= kWarpCand) {
    // A small candidate set: one warp bisects (no block barrier per step), in a fixed order.
    auto wmass = [&](float tau, bool count) {
      float s = 0.0f;
      for (int c = lane; c < n_cand; c += 32) {
        const float q = cand_p[c];
        if (q >= tau) s += count ? 1.0f : q;
      }
      return opsk::warp_sum(s);
    };
    if (warp == 0) {
      const uint32_t l = bisect(wmass);
      if (lane == 0) lo_s = l;
    }
    __syncthreads();
    lo = lo_s;
  } else {
    lo = bisect(mass);
  }
  const float tau = __uint_as_float(lo);
  const float kept = mass(tau > 0.0f ? tau : kSampleMinP, false);
  const uint4 bits =
      philox(make_uint4(static_cast<uint32_t>(sp.counter), static_cast<uint32_t>(sp.counter >> 32),
                        static_cast<uint32_t>(sp.stream), static_cast<uint32_t>(sp.stream >> 32)),
             make_uint2(static_cast<uint32_t>(sp.seed), static_cast<uint32_t>(sp.seed >> 32)));
  const float u = static_cast<float>(bits.x >> 8) * (1.0f / 16777216.0f) * kept;
  // Each thread owns a contiguous slice (of the candidates, or of the row); prefix sums of the
  // slices' kept mass find the slice holding u, whose owner walks it in index order.
  int c0, c1;
  slice(in_smem ? n_cand : V, &c0, &c1);
  auto kept_at = [&](int c, int* idx) {
    float q;
    if (in_smem) {
      q = cand_p[c];
      *idx = cand_i[c];
    } else {
      q = prob(c);
      *idx = c;
    }
    return q > 0.0f && q >= tau ? q : 0.0f;
  };
  float own = 0.0f;
  int idx = 0;
  for (int c = c0; c < c1; ++c) own += kept_at(c, &idx);
  if (threadIdx.x == 0) chosen = top.i;  // rounding fallback: the top token is always kept
  const float incl = block_scan(own, fscan);
  const float before = incl - own;
  if (own > 0.0f && u >= before && u < incl) {
    float acc = before;
    int pick = -1;
    for (int c = c0; c < c1; ++c) {
      const float q = kept_at(c, &idx);
      if (q <= 0.0f) continue;
      pick = idx;
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
  constexpr size_t dyn = static_cast<size_t>(kCap) * (sizeof(float) + sizeof(int));
  // Over 48 KiB of dynamic shared memory must be allowed once per process (a function
  // attribute, not a stream operation: fine during graph capture too).
  static const cudaError_t attr = cudaFuncSetAttribute(
      sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dyn));
  if (attr != cudaSuccess) return attr;
  sample_kernel<<<p.rows, kThreads, dyn, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
