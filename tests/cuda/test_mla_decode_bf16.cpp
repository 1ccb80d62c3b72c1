// mla_decode_bf16_cuda (bf16 and FP8 latent KV) and mla_kv_write_cuda against the CPU reference
// (harness: mla_bf16_case.h): the kAuto / mma.sync / wgmma paths over heads, block sizes, CTA
// counts and dtypes, several query tokens, the plan's API and bad input. The kernel-specific cases
// (sm90, memory-bound, latency, cluster) are in test_mla_decode_bf16_kernels.cpp.
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mla_bf16_case.h"

namespace helix {
namespace {

using namespace helix::testing;
using namespace helix::mla_test;

TEST(MlaDecodeBf16Cuda, DeepSeek128Heads) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (bool wg : {true, false})
    run_case({128, 512, 64, 64, uneven(64, 1500), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0,
              kSeed, wg});
}

TEST(MlaDecodeBf16Cuda, Heads16BlockSizes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int block : {16, 32, 64})
    run_case({16, 512, 64, block, uneven(block, 2100), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0,
              kSeed + block});
  // kMmaSync at <= 32 heads: the mla_bf16 kernels (the fallback) instead of the memory-bound one
  for (MlaKvDtype kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3})
    run_case({16, 512, 64, 64, uneven(64, 2100), kv, MlaOutDtype::kFloat32, 0, kSeed + 5, false});
}

TEST(MlaDecodeBf16Cuda, OddHeadsAndBlocks) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_case({1, 512, 64, 32, uneven(32, 700), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed});
  run_case(
      {40, 512, 64, 48, uneven(48, 900), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 1});
  run_case({32, 512, 64, 7, uneven(7, 300), MlaKvDtype::kBf16, MlaOutDtype::kBf16, 0, kSeed + 2});
  run_case({100, 512, 64, 64, {4096}, MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 3});
}

// Few CTAs: each holds several whole sequences and pieces of others; many: most hold one tile.
TEST(MlaDecodeBf16Cuda, CtaCounts) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int ctas : {1, 3, 7, 500})
    for (bool wg : {true, false})
      run_case({64, 512, 64, 16, uneven(16, 1000), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, ctas,
                kSeed + ctas, wg});
}

TEST(MlaDecodeBf16Cuda, AllEmpty) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_case({16, 512, 64, 64, {0, 0, 0}, MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed});
}

TEST(MlaDecodeBf16Cuda, TinyModelSizes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_case({4, 32, 16, 16, uneven(16, 300), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed});
  run_case({4, 32, 16, 16, uneven(16, 300), MlaKvDtype::kFp8E4m3, MlaOutDtype::kFloat32, 0, kSeed});
  // models/tiny (the embedded default): L 64, R 16, 4 heads
  run_case({4, 64, 16, 16, uneven(16, 300), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed});
  run_case({4, 64, 16, 16, uneven(16, 300), MlaKvDtype::kFp8E4m3, MlaOutDtype::kFloat32, 0, kSeed});
}

TEST(MlaDecodeBf16Cuda, Fp8Kv) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  run_case({16, 512, 64, 64, uneven(64, 2000), MlaKvDtype::kFp8E4m3, MlaOutDtype::kFloat32, 0,
            kSeed + 10});
  for (bool wg : {true, false})
    run_case({128, 512, 64, 32, uneven(32, 1200), MlaKvDtype::kFp8E4m3, MlaOutDtype::kBf16, 0,
              kSeed + 11, wg});
  run_case({16, 512, 64, 16, uneven(16, 900), MlaKvDtype::kFp8E4m3, MlaOutDtype::kFloat32, 5,
            kSeed + 12});
}

TEST(MlaDecodeBf16Cuda, BadInput) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  MlaPlanDesc d;
  d.num_heads = 16;
  d.max_batch = 4;
  d.kv_lora_rank = 100;
  MlaPlan plan;
  EXPECT_EQ(mla_plan(d, &plan), cudaErrorNotSupported);
  d.kv_lora_rank = 512;
  d.max_batch = 0;
  EXPECT_EQ(mla_plan(d, &plan), cudaErrorInvalidValue);
  d.max_batch = 4;
  for (int q_len : {0, -1, 9}) {
    d.q_len = q_len;
    EXPECT_EQ(mla_plan(d, &plan), cudaErrorInvalidValue) << "q_len " << q_len;
    EXPECT_EQ(mla_plan_workspace_bytes(d), 0u) << "q_len " << q_len;
  }
  d.q_len = 1;
  CUDA_OK(mla_plan(d, &plan));
  MlaDecodeBf16Params p;
  p.batch = 5;  // past max_batch
  EXPECT_EQ(mla_decode_bf16_cuda(p, plan, nullptr), cudaErrorInvalidValue);
  p.batch = 0;
  EXPECT_EQ(mla_decode_bf16_cuda(p, plan, nullptr), cudaSuccess);
  mla_plan_release(&plan);
}

// Several query tokens per sequence (speculative decoding): query j sees j more tokens than query
// 0. Lengths shorter than q_len (some queries see nothing), every kernel family (memory-bound at
// <= 32 folded heads, sm90 and wgmma at 64+, mma.sync), bf16 and FP8 KV, bf16 output, a graph.
TEST(MlaDecodeBf16Cuda, SeveralQueryTokens) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto bf = MlaKvDtype::kBf16, f8 = MlaKvDtype::kFp8E4m3;
  const auto f32 = MlaOutDtype::kFloat32, o16 = MlaOutDtype::kBf16;
  auto qlen = [](Case c, int q_len) {
    c.q_len = q_len;
    run_case(c);
  };
  const std::vector<int> lens = {0, 1, 2, 3, 31, 33, 700, 64, 2};
  for (int q_len : {2, 3}) {
    qlen({16, 512, 64, 32, lens, bf, f32, 0, kSeed + 60 + q_len, true, false, false, true}, q_len);
    qlen({16, 512, 64, 16, lens, f8, o16, 0, kSeed + 62 + q_len, true, false, false, true}, q_len);
    qlen({128, 512, 64, 64, lens, bf, f32, 0, kSeed + 64 + q_len, true, false, false, true}, q_len);
    qlen({128, 512, 64, 32, lens, f8, f32, 0, kSeed + 66 + q_len, true, false, false, true}, q_len);
  }
  qlen({64, 512, 64, 64, lens, bf, o16, 0, kSeed + 70, true}, 2);                 // wgmma
  qlen({16, 512, 64, 48, lens, bf, f32, 0, kSeed + 71, false}, 4);                // mma.sync
  qlen({8, 64, 16, 16, {5, 0, 40}, bf, f32, 0, kSeed + 72, false}, 8);            // tiny model dims
  qlen({16, 512, 64, 64, {4000}, bf, f32, 0, kSeed + 73, true, false, true}, 2);  // kLatency: split
  Case g{16, 512, 64, 32, lens, bf, f32, 0, kSeed + 74, true, false, false, true};
  g.graph = true;
  g.repeats = 1;
  qlen(g, 2);
}

// mla_plan_workspace_bytes is what mla_plan allocates, and a caller's buffer of that size is used
// as is (not reallocated); one byte short, the plan allocates its own.
TEST(MlaDecodeBf16Cuda, PlanWorkspaceBytes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int heads, batch;
    MlaKvDtype kv;
    MlaKernelChoice kernel;
    int q_len = 1;
  };
  const auto bf = MlaKvDtype::kBf16, f8 = MlaKvDtype::kFp8E4m3;
  const Case cases[] = {
      {16, 1, bf, MlaKernelChoice::kAuto},    {16, 64, f8, MlaKernelChoice::kAuto},
      {128, 8, bf, MlaKernelChoice::kAuto},   {128, 32, f8, MlaKernelChoice::kAuto},
      {40, 3, bf, MlaKernelChoice::kLatency}, {128, 4, bf, MlaKernelChoice::kMmaSync},
      {64, 300, f8, MlaKernelChoice::kWgmma}, {128, 16, bf, MlaKernelChoice::kAuto, 2},
      {16, 1, bf, MlaKernelChoice::kAuto, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.heads << " heads, max_batch " << c.batch);
    MlaPlanDesc d;
    d.num_heads = c.heads;
    d.max_batch = c.batch;
    d.kv_dtype = c.kv;
    d.kernel = c.kernel;
    d.q_len = c.q_len;
    const size_t bytes = mla_plan_workspace_bytes(d);
    ASSERT_GT(bytes, 0u);
    MlaPlan own;
    CUDA_OK(mla_plan(d, &own));
    EXPECT_EQ(own.workspace_bytes, bytes);
    EXPECT_TRUE(own.owns_workspace);
    mla_plan_release(&own);
    void* buf = nullptr;
    CUDA_OK(cudaMalloc(&buf, bytes));
    MlaPlan given;
    CUDA_OK(mla_plan(d, &given, buf, bytes));
    EXPECT_EQ(given.workspace, buf);
    EXPECT_FALSE(given.owns_workspace);
    mla_plan_release(&given);
    MlaPlan short_by_one;
    CUDA_OK(mla_plan(d, &short_by_one, buf, bytes - 1));
    EXPECT_NE(short_by_one.workspace, buf);
    EXPECT_TRUE(short_by_one.owns_workspace);
    mla_plan_release(&short_by_one);
    CUDA_OK(cudaFree(buf));
  }
  MlaPlanDesc bad;
  bad.num_heads = 16;
  bad.max_batch = 4;
  bad.kv_lora_rank = 100;
  EXPECT_EQ(mla_plan_workspace_bytes(bad), 0u);
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
