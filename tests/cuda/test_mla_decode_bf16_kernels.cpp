// mla_decode_bf16_cuda's kernels one by one against the CPU reference (harness: mla_bf16_case.h):
// the sm90 kernel (H >= 64), the memory-bound kernel (<= 32 heads), the one-launch latency kernel
// and the cluster kernel (batch 1), each with its own edge cases.
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

// The Hopper kernel for H >= 64 (kSm90): block sizes 16 / 32 / 64 / 128, uneven lengths with
// empty and one-token sequences, lengths not a multiple of the 64-token tile, NaN in the
// cache rows past each end, CTA counts from 1 (all sequences in one CTA) to 500, head counts
// not a multiple of 64, 2, 3 and 4 head groups, and block 48 (not taken: the launch falls back to
// the other kernels).
TEST(MlaDecodeBf16Cuda, Sm90ManyHeads) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto sm90 = [](Case c) {
    c.sm90 = true;
    c.nan_tail = c.block != 48;
    run_case(c);
  };
  for (int block : {16, 32, 64, 128})
    sm90({128, 512, 64, block, uneven(block, 1500), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0,
          kSeed + 20 + block});
  sm90({64, 512, 64, 64, uneven(64, 1000), MlaKvDtype::kBf16, MlaOutDtype::kBf16, 0, kSeed + 21});
  sm90({100, 512, 64, 32, {4096}, MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 22});
  // 4 and 3 head groups.
  sm90({256, 512, 64, 32, uneven(32, 1200), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0,
        kSeed + 28});
  sm90(
      {192, 512, 64, 64, uneven(64, 900), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 29});
  sm90({128, 512, 64, 64, {1, 1, 1, 2}, MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 23});
  sm90({128,
        512,
        64,
        16,
        {3000, 2500, 4100, 64, 65, 127, 128, 129},
        MlaKvDtype::kBf16,
        MlaOutDtype::kBf16,
        0,
        kSeed + 24});
  for (int ctas : {1, 3, 7, 500})
    sm90({128, 512, 64, 16, uneven(16, 1000), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, ctas,
          kSeed + 30 + ctas});
  sm90({128, 512, 64, 64, {0, 0}, MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 25});
  {  // graph replays, uneven lengths, several CTAs per sequence
    Case c{128, 512,       64, 64, uneven(64, 3000), MlaKvDtype::kBf16, MlaOutDtype::kBf16,
           0,   kSeed + 27};
    c.graph = true;
    sm90(c);
  }
  sm90(
      {128, 512, 64, 48, uneven(48, 500), MlaKvDtype::kBf16, MlaOutDtype::kFloat32, 0, kSeed + 26});
}

// FP8 (e4m3 + per-token scale) KV through the Hopper kernel: the same edge cases (NaN bytes in
// the rows past each end: e4m3 0xff and a NaN scale), per-token scales 2^-6..2^6, CTA counts,
// empty batches and graph replays.
TEST(MlaDecodeBf16Cuda, Sm90Fp8) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto sm90 = [](Case c) {
    c.sm90 = true;
    c.nan_tail = true;
    run_case(c);
  };
  const auto fp8 = MlaKvDtype::kFp8E4m3;
  for (int block : {16, 32, 64, 128})
    sm90({128, 512, 64, block, uneven(block, 1500), fp8, MlaOutDtype::kFloat32, 0,
          kSeed + 40 + block});
  {
    Case c{128, 512, 64, 64, uneven(64, 2000), fp8, MlaOutDtype::kBf16, 0, kSeed + 41};
    c.row_exp_lo = -6;
    c.row_exp_hi = 6;
    sm90(c);
  }
  // Per-token scales far from 1 with q scaled the other way (rows x 2^9..2^17, scales up to about
  // 2^10; rows x 2^-20..2^-10): the FP8 path's power-of-two biases (kFp8ScaleBias, kFp8QBias in
  // mla_decode_sm90_fp8.cuh) must neither overflow nor push the products into subnormals.
  for (int big : {1, 0}) {
    Case c{128, 512, 64, 64, uneven(64, 1500), fp8, MlaOutDtype::kFloat32, 0, kSeed + 38 + big};
    c.row_exp_lo = big ? 9 : -20;
    c.row_exp_hi = big ? 17 : -10;
    c.q_mag = big ? 0x1p-16f : 0x1p12f;
    sm90(c);
  }
  sm90({100, 512, 64, 32, {4096}, fp8, MlaOutDtype::kFloat32, 0, kSeed + 42});
  // 4 and 3 head groups; odd piece lengths (a sequence's last tile alone: a tile a, no tile b)
  sm90({256, 512, 64, 32, uneven(32, 1200), fp8, MlaOutDtype::kFloat32, 0, kSeed + 46});
  sm90({192, 512, 64, 64, uneven(64, 900), fp8, MlaOutDtype::kFloat32, 0, kSeed + 47});
  sm90(
      {128, 512, 64, 64, {64 * 5, 64 * 3 + 1, 64, 130}, fp8, MlaOutDtype::kFloat32, 3, kSeed + 48});
  sm90({64, 512, 64, 64, {1, 1, 1, 2}, fp8, MlaOutDtype::kFloat32, 0, kSeed + 43});
  for (int ctas : {1, 7, 500})
    sm90({128, 512, 64, 16, uneven(16, 1000), fp8, MlaOutDtype::kFloat32, ctas, kSeed + 50 + ctas});
  sm90({128, 512, 64, 64, {0, 0}, fp8, MlaOutDtype::kFloat32, 0, kSeed + 44});
  {
    Case c{128, 512, 64, 64, uneven(64, 3000), fp8, MlaOutDtype::kBf16, 0, kSeed + 45};
    c.graph = true;
    sm90(c);
  }
}

// The sm90 kernel over a plan's launches of other batches (other splits over the CTAs) and graph
// replays before the checked one: batch 1 x 16K (one sequence over all CTAs of a group) to 24
// sequences, long among short, empty ones between; bf16 and FP8 KV.
TEST(MlaDecodeBf16Cuda, Sm90Repeats) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto f32 = MlaOutDtype::kFloat32;
  std::vector<int> big(24);
  for (int b = 0; b < 24; ++b) big[b] = b % 7 == 3 ? 0 : 100 + 61 * b;
  for (bool graph : {false, true})
    for (auto kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3}) {
      std::vector<std::vector<int>> batches = {{9000, 0, 4000, 1, 0, 300}, uneven(64, 2500), big};
      if (!graph) batches.push_back({16384});
      for (size_t i = 0; i < batches.size(); ++i) {
        Case c{128,
               512,
               64,
               64,
               batches[i],
               kv,
               i % 2 ? MlaOutDtype::kBf16 : f32,
               0,
               kSeed + 60 + static_cast<unsigned>(i)};
        c.sm90 = true;
        c.nan_tail = true;
        c.graph = graph;
        c.repeats = 5;
        run_case(c);
      }
    }
  // 192 heads: three head groups (the block order interleaves the groups of a range)
  Case c{192, 512, 64, 32, uneven(32, 2000), MlaKvDtype::kBf16, f32, 0, kSeed + 70};
  c.sm90 = true;
  c.repeats = 3;
  run_case(c);
}

// FP8 on the memory-bound kernel's fp16 MMAs: q past fp16's range (per-head power-of-two scaling)
// with tiny per-token scales (p . s_t would underflow fp16 without the running 2^c), and per-token
// scales spread over 2^-24..2^8 (the running 2^c moves down mid-sequence); bf16 KV on the same
// data.
TEST(MlaDecodeBf16Cuda, MemKernelFp8Ranges) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (MlaKvDtype kv : {MlaKvDtype::kFp8E4m3, MlaKvDtype::kBf16}) {
    for (int heads : {16, 8}) {
      Case big_q{heads, 512, 64, 64, uneven(64, 3000), kv, MlaOutDtype::kFloat32, 0, kSeed + 400};
      big_q.q_mag = 65536.f;
      big_q.row_exp_lo = big_q.row_exp_hi = -17;
      run_case(big_q);
      Case spread{heads, 512, 64, 32, uneven(32, 3000), kv, MlaOutDtype::kFloat32, 0, kSeed + 401};
      spread.q_mag = 1.f / 16;
      spread.row_exp_lo = -24;
      spread.row_exp_hi = 8;
      run_case(spread);
      Case small_q{heads, 512, 64, 16, {5000, 70, 1}, kv, MlaOutDtype::kBf16, 7, kSeed + 402};
      small_q.q_mag = 1.f / 65536;
      small_q.row_exp_lo = 10;
      small_q.row_exp_hi = 14;
      run_case(small_q);
    }
  }
}

// The memory-bound kernel (<= 32 heads at 512/64, groups of 16 heads): every head count of the
// shape, both cache dtypes, the block sizes, both output dtypes.
TEST(MlaDecodeBf16Cuda, MemKernelHeads) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = kSeed + 100;
  for (int heads : {1, 8, 16, 32})
    for (MlaKvDtype kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3})
      for (int block : {16, 32, 64})
        run_case({heads, 512, 64, block, uneven(block, 1300), kv,
                  block == 32 ? MlaOutDtype::kBf16 : MlaOutDtype::kFloat32, 0, ++seed});
}

// One CTA holding every sequence (many sequence ends inside a CTA, the workers' merge), a few,
// and many (most holding one tile, long sequences split over many CTAs).
TEST(MlaDecodeBf16Cuda, MemKernelCtaCounts) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (int ctas : {1, 3, 7, 500})
    for (MlaKvDtype kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3})
      run_case(
          {16, 512, 64, 16, uneven(16, 1000), kv, MlaOutDtype::kFloat32, ctas, kSeed + 200 + ctas});
}

TEST(MlaDecodeBf16Cuda, MemKernelEdges) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (MlaKvDtype kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3}) {
    run_case({16, 512, 64, 64, {1, 1, 1, 1, 1}, kv, MlaOutDtype::kFloat32, 0, kSeed + 300});
    run_case({16, 512, 64, 64, {0}, kv, MlaOutDtype::kFloat32, 0, kSeed + 301});
    run_case({16,
              512,
              64,
              32,
              {31, 32, 33, 0, 64, 65, 16, 17},
              kv,
              MlaOutDtype::kFloat32,
              0,
              kSeed + 302});
    run_case({16, 512, 64, 64, {9000}, kv, MlaOutDtype::kBf16, 0, kSeed + 303});
    run_case({8, 512, 64, 7, {4100, 3, 0, 777}, kv, MlaOutDtype::kFloat32, 0, kSeed + 304});
  }
}

// The memory-bound kernel's loads: FP8 rows land in one bulk copy per run of a tile's rows inside
// one block, which must stop at block edges (blocks smaller and larger than the 32-token tile, odd
// sizes) and at the sequence end (the rows past it hold NaN); bf16 rows alike (a copy per row;
// at blocks of 32, 64, 128 whole tiles by TMA, NaN rows included, zeroed before P.V).
// Many CTAs: most hold one or two tiles, every sequence spans several (the combine's merge).
TEST(MlaDecodeBf16Cuda, MemKernelRunCopies) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = kSeed + 500;
  for (MlaKvDtype kv : {MlaKvDtype::kFp8E4m3, MlaKvDtype::kBf16})
    for (int block : {5, 32, 33, 64, 100, 128}) {
      Case c{16, 512, 64, block, uneven(block, 1500), kv, MlaOutDtype::kFloat32, 0, ++seed};
      c.nan_tail = true;
      run_case(c);
    }
  for (MlaKvDtype kv : {MlaKvDtype::kFp8E4m3, MlaKvDtype::kBf16}) {
    Case c{16, 512, 64, 100, {4000, 1, 0, 2500, 33}, kv, MlaOutDtype::kBf16, 300, ++seed};
    c.nan_tail = true;
    run_case(c);
  }
  // bf16 tiles by TMA (the tensor map passed by value) through graph replays
  Case g{16, 512, 64, 64, uneven(64, 3000), MlaKvDtype::kBf16, MlaOutDtype::kBf16, 0, ++seed};
  g.nan_tail = true;
  g.graph = true;
  run_case(g);
}

// The memory-bound kernel launched right behind the kernel that writes its pool (kv_write, same
// stream, no sync): as a programmatic dependent it may start early but must read after it. Long
// sequences (a long write), TMA tiles (bf16 at 64), row copies (bf16 at 5) and FP8.
TEST(MlaDecodeBf16Cuda, MemKernelAfterWrite) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = kSeed + 600;
  for (MlaKvDtype kv : {MlaKvDtype::kBf16, MlaKvDtype::kFp8E4m3})
    for (int block : {64, 5}) {
      if (kv == MlaKvDtype::kFp8E4m3 && block == 5) continue;
      Case c{16, 512, 64, block, {12000, 3000, 1, 0, 7000}, kv, MlaOutDtype::kFloat32, 0, ++seed};
      c.late_write = true;
      run_case(c);
    }
}

// The one-launch small-batch kernel (mla_decode_lat.cu): split, grid barrier and combine in one
// launch, forced at every batch; and kAuto reaching it at batch 1-2.
TEST(MlaDecodeBf16Cuda, LatencyKernel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = kSeed + 500;
  auto lat = [&](Case c, bool auto_k = false) {
    c.seed = ++seed;
    c.lat = !auto_k;
    c.auto_k = auto_k;
    run_case(c);
  };
  const auto bf = MlaKvDtype::kBf16;
  const auto f32 = MlaOutDtype::kFloat32, o16 = MlaOutDtype::kBf16;
  // batch 1 at the bench's shape, both head counts, stream and graph replays
  lat({16, 512, 64, 64, {4096}, bf, f32});
  lat({128, 512, 64, 64, {4096}, bf, o16});
  for (int H : {16, 128}) {
    Case g{H, 512, 64, 64, {4095}, bf, f32};
    g.graph = true;
    g.nan_tail = true;
    lat(g);
  }
  // kAuto: batch 1 at 16 heads with a small block table takes the latency kernel; batch 2 at 128
  // heads the split kernels (the same plan workspace holds both kernels' partials)
  lat({16, 512, 64, 64, {3000}, bf, f32}, true);
  lat({128, 512, 64, 32, {2000, 77}, bf, f32}, true);
  // empty, one token, lengths off the block and the tile, odd heads and blocks
  lat({16, 512, 64, 64, {0}, bf, f32});
  lat({16, 512, 64, 64, {0, 0}, bf, o16});
  lat({16, 512, 64, 64, {1}, bf, f32});
  lat({128, 512, 64, 16, {1, 0}, bf, f32});
  lat({1, 512, 64, 32, {700}, bf, f32});
  lat({40, 512, 64, 48, {900, 0, 33}, bf, f32});
  lat({100, 512, 64, 7, {333, 1}, bf, o16});
  for (int block : {16, 32, 64}) {
    Case c{16, 512, 64, block, uneven(block, 2100), bf, f32};
    c.nan_tail = true;
    lat(c);
  }
  lat({128, 512, 64, 64, uneven(64, 1500), bf, f32});
  // a few CTAs: sequences inside one CTA, two per CTA, and split ones side by side
  for (int ctas : {1, 3, 7}) lat({16, 512, 64, 16, {1000, 5, 0, 64, 300}, bf, f32, ctas});
  // long contexts: 64K+ at 16 heads (each CTA streams many tiles), 20K at 128 heads
  lat({16, 512, 64, 64, {70000}, bf, f32});
  lat({16, 512, 64, 32, {66000, 9}, bf, o16});
  lat({128, 512, 64, 64, {20000}, bf, f32});
}

// The one-cluster kernel (mla_decode_cluster.cu): every (sequence, 16 heads) on one cluster, the
// partials merged in distributed shared memory; forced at every batch and cluster size, and kAuto
// reaching it at batch 1.
TEST(MlaDecodeBf16Cuda, ClusterKernel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = kSeed + 700;
  auto cl = [&](Case c, bool auto_k = false) {
    c.seed = ++seed;
    c.cluster = !auto_k;
    c.auto_k = auto_k;
    run_case(c);
  };
  const auto bf = MlaKvDtype::kBf16;
  const auto f32 = MlaOutDtype::kFloat32, o16 = MlaOutDtype::kBf16;
  // batch 1 at the bench's shape, every cluster size (0: the largest), both head counts
  for (int cs : {0, 16, 8, 5, 2, 1}) cl({16, 512, 64, 64, {4096}, bf, f32, cs});
  cl({128, 512, 64, 64, {4096}, bf, o16});
  // graph replays (nothing left between launches), NaN rows past the end
  for (int H : {16, 128}) {
    Case g{H, 512, 64, 64, {4095}, bf, f32};
    g.graph = true;
    g.repeats = 2;
    g.nan_tail = true;
    cl(g);
  }
  // kAuto at batch 1, 16 and 32 heads, small block tables
  cl({16, 512, 64, 64, {3000}, bf, f32}, true);
  cl({32, 512, 64, 16, {1000}, bf, o16}, true);
  {
    Case g{16, 512, 64, 32, {1023}, bf, o16};
    g.graph = true;
    g.nan_tail = true;
    g.auto_k = true;
    g.seed = ++seed;
    run_case(g);
  }
  // empty, one token, fewer tiles than CTAs, lengths off the block and the tile, odd heads/blocks
  cl({16, 512, 64, 64, {0}, bf, f32});
  cl({16, 512, 64, 64, {0, 0}, bf, o16});
  cl({16, 512, 64, 64, {1}, bf, f32});
  cl({16, 512, 64, 64, {33}, bf, f32});
  cl({16, 512, 64, 64, {500}, bf, f32});
  cl({128, 512, 64, 16, {1, 0}, bf, f32});
  cl({1, 512, 64, 32, {700}, bf, f32});
  cl({40, 512, 64, 48, {900, 0, 33}, bf, f32, 4});
  cl({100, 512, 64, 7, {333, 1}, bf, o16});
  cl({16, 512, 64, 32, {31, 32, 33, 0, 64, 65, 16, 17}, bf, f32, 3});
  for (int block : {16, 32, 64}) {
    Case c{16, 512, 64, block, uneven(block, 2100), bf, f32};
    c.nan_tail = true;
    c.repeats = 2;
    cl(c);
  }
  // long contexts: each CTA streams many tiles (the ring wraps many times)
  cl({16, 512, 64, 64, {70000}, bf, f32});
  cl({16, 512, 64, 32, {20000, 9}, bf, o16, 8});
  // several clusters a sequence at batch 1 (num_ctas / 16 clusters, the last to arrive merges):
  // more CTAs than tiles, one token, empty, many heads, graph replays (counters left at zero)
  for (int ctas : {32, 48, 128}) cl({16, 512, 64, 64, {4096}, bf, f32, ctas});
  cl({16, 512, 64, 16, {1000}, bf, o16, 128});
  cl({16, 512, 64, 64, {1}, bf, f32, 64});
  cl({16, 512, 64, 64, {0}, bf, f32, 64});
  cl({128, 512, 64, 32, {2500}, bf, f32, 32});
  cl({40, 512, 64, 7, {777}, bf, o16, 48});
  cl({16, 512, 64, 64, {70000}, bf, f32, 128});
  {
    Case g{16, 512, 64, 64, {4000}, bf, f32, 128};
    g.graph = true;
    g.repeats = 3;
    g.nan_tail = true;
    cl(g);
  }
  // several query tokens a sequence (heads folded: 2 x 16 and 3 x 16 kernel heads; the tail op
  // adds the last tokens), one cluster and several; kAuto with q_len 2 at 16 heads
  for (int ql : {2, 3}) {
    Case c{16, 512, 64, 32, {1500}, bf, f32, ql == 2 ? 0 : 64};
    c.q_len = ql;
    cl(c);
  }
  {
    Case c{16, 512, 64, 64, {2049}, bf, o16};
    c.q_len = 2;
    cl(c, true);
  }
  {
    Case r{16, 512, 64, 64, {3333}, bf, f32, 64};
    r.repeats = 3;  // stream launches back to back on one plan
    cl(r);
  }
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
