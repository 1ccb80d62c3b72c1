// Every CUDA op against its CPU reference (ops/ops.h) on random inputs, fresh seeds each run
// (printed on failure). Outputs are poisoned with NaN before each launch so that an element the
// kernel forgot to write fails the test. Skips without a GPU.
#ifdef HELIX_HAVE_CUDA
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/ops.h"

namespace helix {
namespace {

using namespace helix::testing;

constexpr float kNinf = -std::numeric_limits<float>::infinity();

// Deterministic seeds: each case's seed is a hash of its description mixed with a base that
// HELIX_TEST_SEED may override to explore; the seed is printed with every failure and does not
// depend on which other tests ran, so a failure reproduces.
unsigned case_seed(const std::string& what) {
  static const unsigned base = [] {
    const char* env = std::getenv("HELIX_TEST_SEED");
    return env ? static_cast<unsigned>(std::strtoul(env, nullptr, 10)) : 20260501u;
  }();
  unsigned h = 2166136261u;  // FNV-1a
  for (unsigned char ch : what) h = (h ^ ch) * 16777619u;
  return h ^ base;
}

// Every element finite, -inf exactly where the reference is -inf, the finite ones within tol.
void expect_lse_close(const std::vector<float>& got, const std::vector<float>& ref, double tol) {
  ASSERT_EQ(got.size(), ref.size());
  std::vector<float> g, r;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i])) {
      EXPECT_EQ(got[i], ref[i]) << "lse row " << i;
    } else {
      ASSERT_TRUE(std::isfinite(got[i])) << "lse row " << i << " = " << got[i];
      g.push_back(got[i]);
      r.push_back(ref[i]);
    }
  }
  EXPECT_LT(rel_l2(g, r), tol);
}

void expect_all_finite(const std::vector<float>& v, const char* what) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " elements not written or not finite, first "
                     << first;
}

// ---- attn_combine ----------------------------------------------------------------------------

struct CombineCase {
  int num_parts, rows, dim;
};

void run_combine(const CombineCase& c, bool with_lse) {
  const std::string what = "parts " + std::to_string(c.num_parts) + " rows " +
                           std::to_string(c.rows) + " dim " + std::to_string(c.dim) +
                           (with_lse ? " lse" : "");
  const unsigned seed = case_seed(what);
  SCOPED_TRACE(what + " seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(-8.f, 8.f);
  const size_t rows = c.rows, dim = c.dim, parts_n = c.num_parts;
  std::vector<float> parts(parts_n * rows * dim), lse(parts_n * rows);
  for (auto& x : parts) x = normal(rng);
  for (auto& x : lse) x = uni(rng);
  // Some empty parts (their outputs are NaN: they must not be read), some rows all empty.
  for (size_t i = 0; i < parts_n; ++i)
    for (size_t r = 0; r < rows; ++r)
      if (rng() % 4 == 0 || r % 5 == 3) {
        lse[i * rows + r] = kNinf;
        for (size_t d = 0; d < dim; ++d)
          parts[(i * rows + r) * dim + d] = std::numeric_limits<float>::quiet_NaN();
      }
  std::vector<float> ref(rows * dim), ref_lse(rows);
  AttnCombineParams p;
  p.num_parts = c.num_parts;
  p.rows = c.rows;
  p.dim = c.dim;
  p.parts = parts.data();
  p.lse = lse.data();
  p.out = ref.data();
  p.out_lse = ref_lse.data();
  attn_combine(p);

  DeviceArray<float> d_parts(parts), d_lse(lse), d_out(rows * dim), d_out_lse(rows);
  ASSERT_TRUE(d_parts.ptr && d_lse.ptr && d_out.ptr && d_out_lse.ptr);
  d_out.poison();
  d_out_lse.poison();
  CUDA_OK(attn_combine_cuda(d_parts.ptr, d_lse.ptr, d_out.ptr, with_lse ? d_out_lse.ptr : nullptr,
                            c.num_parts, c.rows, c.dim, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto out = d_out.host();
  expect_all_finite(out, "out");
  EXPECT_LT(rel_l2(out, ref), 1e-5);
  for (size_t r = 0; r < rows; ++r) {
    if (std::isinf(ref_lse[r])) {
      for (size_t d = 0; d < dim; ++d) ASSERT_EQ(out[r * dim + d], 0.f) << "empty row " << r;
    }
  }
  if (with_lse) expect_lse_close(d_out_lse.host(), ref_lse, 1e-5);
}

TEST(AttnCombineCuda, MatchesCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const CombineCase cases[] = {{1, 16, 512},  {2, 128, 512}, {3, 7, 32},     {8, 1024, 512},
                               {64, 33, 512}, {5, 19, 7},    {4, 300, 1030}, {200, 4, 64}};
  for (const auto& c : cases) {
    run_combine(c, true);
    run_combine(c, false);
  }
}

TEST(AttnCombineCuda, ZeroPartsGiveZeros) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  DeviceArray<float> d_lse(1), d_out(4 * 8), d_out_lse(4);
  d_out.poison();
  d_out_lse.poison();
  CUDA_OK(attn_combine_cuda(nullptr, d_lse.ptr, d_out.ptr, d_out_lse.ptr, 0, 4, 8, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  for (float x : d_out.host()) EXPECT_EQ(x, 0.f);
  for (float x : d_out_lse.host()) EXPECT_EQ(x, kNinf);
}

// ---- mla_decode ------------------------------------------------------------------------------

struct DecodeCase {
  int num_heads, lora, rope, block_size;
  std::vector<int> seq_lens;  // batch = size
  int num_splits = 0;         // 0: the launcher's choice
  int max_seq_len = 0;        // 0: from the block table
};

std::string describe(const DecodeCase& c) {
  std::string s = "H " + std::to_string(c.num_heads) + " L " + std::to_string(c.lora) + " R " +
                  std::to_string(c.rope) + " block " + std::to_string(c.block_size) + " lens";
  for (int n : c.seq_lens) s += " " + std::to_string(n);
  return s + " splits " + std::to_string(c.num_splits);
}

void run_decode(const DecodeCase& c) {
  const unsigned seed = case_seed(describe(c));
  SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int B = static_cast<int>(c.seq_lens.size()), H = c.num_heads, L = c.lora;
  const int W = c.lora + c.rope, bs = c.block_size;
  int max_blocks = 1, used_blocks = 0;
  for (int n : c.seq_lens) {
    max_blocks = std::max(max_blocks, (n + bs - 1) / bs);
    used_blocks += (n + bs - 1) / bs;
  }
  // Physical blocks in a random order with spare ones in between: non-contiguous tables.
  const int num_phys = used_blocks + 3;
  std::vector<int> perm(num_phys);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  // Unused slots (spare blocks, tails of last blocks) are NaN: the kernel must not read them.
  std::vector<float> pool(static_cast<size_t>(num_phys) * bs * W,
                          std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> table(static_cast<size_t>(B) * max_blocks, -1);
  std::vector<float> q(static_cast<size_t>(B) * H * W);
  for (auto& x : q) x = normal(rng);
  std::vector<float> ref(static_cast<size_t>(B) * H * L), ref_lse(static_cast<size_t>(B) * H);
  int next = 0;
  for (int b = 0; b < B; ++b) {
    const int n = c.seq_lens[b], nb = (n + bs - 1) / bs;
    std::vector<const float*> blocks;
    std::vector<int> lens;
    for (int i = 0; i < nb; ++i) {
      const int phys = perm[next++];
      table[static_cast<size_t>(b) * max_blocks + i] = phys;
      float* blk = pool.data() + static_cast<size_t>(phys) * bs * W;
      const int len = std::min(bs, n - i * bs);
      for (int64_t k = 0; k < static_cast<int64_t>(len) * W; ++k) blk[k] = normal(rng);
      blocks.push_back(blk);
      lens.push_back(len);
    }
    MlaDecodeParams p;
    p.num_heads = H;
    p.kv_lora_rank = L;
    p.rope_dim = c.rope;
    p.num_blocks = nb;
    p.scale = 1.0f / std::sqrt(192.0f);
    p.q = q.data() + static_cast<size_t>(b) * H * W;
    p.blocks = blocks.data();
    p.block_len = lens.data();
    p.out = ref.data() + static_cast<size_t>(b) * H * L;
    p.lse = ref_lse.data() + static_cast<size_t>(b) * H;
    mla_decode(p);
  }

  std::vector<int32_t> lens32(c.seq_lens.begin(), c.seq_lens.end());
  DeviceArray<float> d_q(q), d_pool(pool), d_out(ref.size()), d_lse(ref_lse.size());
  DeviceArray<int32_t> d_table(table), d_lens(lens32);
  ASSERT_TRUE(d_q.ptr && d_pool.ptr && d_out.ptr && d_lse.ptr && d_table.ptr && d_lens.ptr);
  // Both fast kernels on the same inputs (sizes without one take the generic kernel twice).
  for (const MlaDecodeKernel kernel : {MlaDecodeKernel::kMma, MlaDecodeKernel::kFma}) {
    SCOPED_TRACE(kernel == MlaDecodeKernel::kMma ? "kernel mma" : "kernel fma");
    d_out.poison();
    d_lse.poison();
    MlaDecodeCudaParams p;
    p.kernel = kernel;
    p.batch = B;
    p.num_heads = H;
    p.kv_lora_rank = L;
    p.rope_dim = c.rope;
    p.block_size = bs;
    p.max_blocks_per_seq = max_blocks;
    p.max_seq_len = c.max_seq_len;
    p.num_splits = c.num_splits;
    p.scale = 1.0f / std::sqrt(192.0f);
    p.q = d_q.ptr;
    p.kv_pool = d_pool.ptr;
    p.block_table = d_table.ptr;
    p.seq_lens = d_lens.ptr;
    p.out = d_out.ptr;
    p.lse = d_lse.ptr;
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    CUDA_OK(mla_decode_cuda(p, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaStreamDestroy(stream));
    const auto out = d_out.host();
    expect_all_finite(out, "out");
    const double err = rel_l2(out, ref);
    EXPECT_LT(err, 1e-4);
    std::printf("mla_decode %s H=%d L=%d B=%d rel_l2 %.2e\n",
                p.kernel == MlaDecodeKernel::kFma ? "fma" : "mma/auto", H, L, B, err);
    for (int b = 0; b < B; ++b) {
      if (c.seq_lens[b] != 0) continue;
      for (size_t i = 0; i < static_cast<size_t>(H) * L; ++i)
        ASSERT_EQ(out[static_cast<size_t>(b) * H * L + i], 0.f) << "empty sequence " << b;
    }
    expect_lse_close(d_lse.host(), ref_lse, 1e-4);
  }
}

TEST(MlaDecodeCuda, DeepSeekSizes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_decode({16, 512, 64, 64, {4097}});
  run_decode({128, 512, 64, 64, {4097}});
  run_decode({16, 512, 64, 64, {0, 1, 7, 64, 1000, 4097}});
  run_decode({128, 512, 64, 16, {1000, 0, 64, 7}});
  run_decode({16, 512, 64, 16, {1, 4097, 63}});
  run_decode({128, 512, 64, 64, {1}});
  run_decode({16, 512, 64, 64, {0}});
}

TEST(MlaDecodeCuda, SplitCounts) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int splits : {1, 2, 7, 1000}) {
    run_decode({16, 512, 64, 64, {4097, 100}, splits});
    run_decode({16, 32, 16, 16, {1000, 0, 33}, splits});
  }
  // A tighter host bound on the lengths than the table's capacity.
  run_decode({16, 512, 64, 16, {100, 31}, 0, 100});
}

TEST(MlaDecodeCuda, SmallSizes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_decode({16, 32, 16, 16, {0, 1, 7, 64, 1000}});
  run_decode({5, 32, 16, 64, {7, 4097}});        // heads not a multiple of the group
  run_decode({40, 512, 64, 16, {64, 7, 1000}});  // 3 groups, the last one partial
}

TEST(MlaDecodeCuda, GenericFallback) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_decode({3, 40, 8, 16, {7, 300, 0}});
  run_decode({2, 30, 6, 5, {1, 64, 129}});  // widths not multiples of 4, odd block size
  run_decode({3, 33, 7, 16, {50, 0, 17}});  // odd rope width
  run_decode({4, 256, 32, 64, {1000, 4097}});
}

TEST(MlaDecodeCuda, EmptyBatchIsNoOp) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  MlaDecodeCudaParams p;
  CUDA_OK(mla_decode_cuda(p, nullptr));
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
