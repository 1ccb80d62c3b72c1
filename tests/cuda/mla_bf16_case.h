#pragma once
// The harness of the mla_decode_bf16_cuda tests (test_mla_decode_bf16*.cpp): one Case (heads,
// sizes, lengths, cache and output dtypes, kernel choice, launch style), run against the CPU
// reference mla_decode (ops.h) by run_case. Fixed seeds, printed with every case. The pool is
// written by kv_write from fp32 rows; the reference runs on the same rows rounded the way the cache
// stores them (bf16, or e4m3 x scale decoded on the host), and for FP8 also on the original fp32
// rows (the 3e-2 bound). Outputs are poisoned (NaN) before each launch: unwritten elements
// fail.
#ifdef HELIX_HAVE_CUDA
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cuda/mla_decode_bf16.h"

namespace helix::mla_test {

template <typename T>
using Dev = helix::testing::DeviceArray<T>;

struct Case {
  int heads, L, R, block;
  std::vector<int> lens;
  MlaKvDtype kv = MlaKvDtype::kBf16;
  MlaOutDtype out = MlaOutDtype::kFloat32;
  int num_ctas = 0;  // 0: planner's choice
  unsigned seed = 1;
  bool wgmma = true;  // MlaPlanDesc::kernel for 64-head groups at 512/64: wgmma or mma.sync
  bool sm90 = false;  // MlaKernelChoice::kSm90 (overrides wgmma)
  // MlaKernelChoice::kLatency (the one-launch small-batch kernel at every launch), or kAuto
  // (overrides the two above)
  bool lat = false, auto_k = false;
  // MlaKernelChoice::kCluster (the one-cluster kernel at every launch; num_ctas: the cluster
  // size), overrides all of the above
  bool cluster = false;
  // Pool rows past each sequence's end in its last block hold NaN (stale cache rows may hold
  // anything; their weight is 0 and must stay 0).
  bool nan_tail = false;
  // q drawn as N(0, 1) x q_mag; each cache row (latent and rope) x 2^k, k uniform in
  // [row_exp_lo, row_exp_hi] (FP8: per-token scales far from 1 and far apart).
  float q_mag = 1.f;
  int row_exp_lo = 0, row_exp_hi = 0;
  // Launch through a captured CUDA graph, replayed twice with the outputs poisoned in between
  // (graph-stable launches: programmatic dependent launch, no state left between replays).
  bool graph = false;
  // Launches before the checked one, on the same plan: batches B - 1, B, B - 3, B, ... on the
  // stream (other splits over the CTAs), or more graph replays: nothing a launch leaves behind
  // may change the next.
  int repeats = 0;
  // The pool zeroed, then rewritten by kv_write on the stream right before the checked launch (no
  // sync between): the split kernel, a programmatic dependent launch, must not read it earlier.
  bool late_write = false;
  // Query tokens per sequence (MlaPlanDesc::q_len): query j of sequence b sees its first
  // lens[b] - (q_len - 1 - j) tokens.
  int q_len = 1;
};

std::string describe(const Case& c);
// Runs the case and checks it against the CPU reference (gtest assertions).
void run_case(const Case& c);

constexpr unsigned kSeed = 20261122;

// Uneven lengths with the edge cases: empty, one token, one short of / one past a block.
inline std::vector<int> uneven(int block, int longest) {
  return {0, 1, block - 1, block + 1, longest, 37, 3 * block, 0, longest / 3 + 5};
}

}  // namespace helix::mla_test
#endif  // HELIX_HAVE_CUDA
