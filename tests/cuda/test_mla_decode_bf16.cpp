// mla_decode_bf16_cuda (bf16 and FP8 latent KV) and mla_kv_write_cuda against the CPU reference
// mla_decode (ops.h). Fixed seeds, printed with every case. The pool is written by kv_write from
// fp32 rows; the reference runs on the same rows rounded the way the cache stores them (bf16, or
// e4m3 x scale decoded on the host), and for FP8 also on the original fp32 rows (the issue's
// 3e-2 bound). Outputs are poisoned (NaN) before each launch: unwritten elements fail.
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

#include "cuda_test_util.h"
#include "ops/cuda/mla_decode_bf16.h"
#include "ops/ops.h"

namespace helix {
namespace {

using namespace helix::testing;
template <typename T>
using Dev = DeviceArray<T>;

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

std::string describe(const Case& c) {
  std::string s =
      "H " + std::to_string(c.heads) + " L " + std::to_string(c.L) + " R " + std::to_string(c.R) +
      " block " + std::to_string(c.block) + " kv " + (c.kv == MlaKvDtype::kBf16 ? "bf16" : "fp8") +
      " out " + (c.out == MlaOutDtype::kBf16 ? "bf16" : "fp32") + " ctas " +
      std::to_string(c.num_ctas) + " seed " + std::to_string(c.seed) +
      (c.cluster  ? " cluster"
       : c.lat    ? " lat"
       : c.auto_k ? " auto"
       : c.sm90   ? " sm90"
       : c.wgmma  ? " wgmma"
                  : " mma.sync") +
      (c.nan_tail ? " nan-tail" : "") + (c.late_write ? " late-write" : "") + " q_len " +
      std::to_string(c.q_len) + " q_mag " + std::to_string(c.q_mag) + " row_exp " +
      std::to_string(c.row_exp_lo) + ".." + std::to_string(c.row_exp_hi) + " lens";
  for (int l : c.lens) s += " " + std::to_string(l);
  return s;
}

// CPU reference for every (sequence, query token) on the host pool `rows` [num_blocks * block, W].
void reference(const Case& c, const std::vector<float>& q, const std::vector<float>& rows,
               const std::vector<int32_t>& table, int max_blocks, std::vector<float>& out,
               std::vector<float>& lse) {
  const int B = static_cast<int>(c.lens.size()), H = c.heads, L = c.L, W = c.L + c.R;
  const int Q = c.q_len;
  out.assign(static_cast<size_t>(B) * Q * H * L, 0.f);
  lse.assign(static_cast<size_t>(B) * Q * H, 0.f);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < Q; ++j) {
      const int len = std::max(0, c.lens[b] - (Q - 1 - j));
      const int nb = (len + c.block - 1) / c.block;
      std::vector<const float*> blocks(nb);
      std::vector<int> blen(nb);
      for (int i = 0; i < nb; ++i) {
        blocks[i] = rows.data() + static_cast<size_t>(table[b * max_blocks + i]) * c.block * W;
        blen[i] = std::min(c.block, len - i * c.block);
      }
      const size_t r = static_cast<size_t>(b) * Q + j;
      MlaDecodeParams p;
      p.num_heads = H;
      p.kv_lora_rank = L;
      p.rope_dim = c.R;
      p.num_blocks = nb;
      p.scale = 1.0f / std::sqrt(static_cast<float>(c.R + 128));
      p.q = q.data() + r * H * W;
      p.blocks = blocks.data();
      p.block_len = blen.data();
      p.out = out.data() + r * H * L;
      p.lse = lse.data() + r * H;
      mla_decode(p);
    }
}

void run_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  std::printf("mla_decode_bf16 case: %s\n", describe(c).c_str());
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int B = static_cast<int>(c.lens.size()), H = c.heads, L = c.L, W = c.L + c.R;
  const bool fp8 = c.kv == MlaKvDtype::kFp8E4m3;
  int max_blocks = 1;
  for (int l : c.lens) max_blocks = std::max(max_blocks, (l + c.block - 1) / c.block);
  const int num_blocks = B * max_blocks + 3;  // a few never used
  const size_t pool_rows = static_cast<size_t>(num_blocks) * c.block;
  const size_t row_bytes = mla_kv_row_bytes(c.kv, L, c.R);

  // Latent rows for every slot (fp32, as the model produces them), written by kv_write.
  std::vector<float> rows(pool_rows * W);
  for (auto& x : rows) x = normal(rng);
  std::vector<float> row_mag(pool_rows, 1.f);
  if (c.row_exp_lo != 0 || c.row_exp_hi != 0) {
    std::uniform_int_distribution<int> ex(c.row_exp_lo, c.row_exp_hi);
    for (size_t r = 0; r < pool_rows; ++r) {
      row_mag[r] = std::ldexp(1.f, ex(rng));
      for (int i = 0; i < W; ++i) rows[r * W + i] *= row_mag[r];
    }
  }
  std::vector<int64_t> slots(pool_rows);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots[5 % pool_rows] = -1;  // skipped: that slot keeps its zero bytes
  std::vector<float> src(pool_rows * W, 0.f);
  for (size_t i = 0; i < pool_rows; ++i)
    if (slots[i] >= 0) std::copy_n(rows.data() + slots[i] * W, W, src.data() + i * W);
  std::vector<float> stored(rows);  // what the cache holds, decoded
  Dev<uint8_t> pool(pool_rows * row_bytes);
  CUDA_OK(cudaMemset(pool.ptr, 0, pool_rows * row_bytes));
  Dev<float> d_src(src);
  Dev<int64_t> d_slots(slots);
  MlaKvWriteParams w;
  w.num_tokens = static_cast<int>(pool_rows);
  w.kv_lora_rank = L;
  w.rope_dim = c.R;
  w.kv_dtype = c.kv;
  w.src = d_src.ptr;
  w.slot_mapping = d_slots.ptr;
  w.kv_pool = pool.ptr;
  CUDA_OK(mla_kv_write_cuda(w, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  // Decode the pool on the host; check kv_write wrote exactly the rounded rows.
  const std::vector<uint8_t> pool_h = pool.host();
  double write_err = 0;
  for (size_t r = 0; r < pool_rows; ++r) {
    const uint8_t* row = pool_h.data() + r * row_bytes;
    float* dst = stored.data() + r * W;
    if (!fp8) {
      for (int i = 0; i < W; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        dst[i] = bf16_value(h);
      }
    } else {
      float scale;
      std::memcpy(&scale, row + L + 2 * c.R, 4);
      for (int i = 0; i < L; ++i) dst[i] = fp8_value(row[i]) * scale;
      for (int i = 0; i < c.R; ++i) {
        uint16_t h;
        std::memcpy(&h, row + L + 2 * i, 2);
        dst[L + i] = bf16_value(h);
      }
    }
  }
  // The slot of the skipped token was never written: zero there; elsewhere the rounded row.
  std::vector<char> written(pool_rows, 0);
  for (size_t i = 0; i < pool_rows; ++i)
    if (slots[i] >= 0) written[slots[i]] = 1;
  for (size_t r = 0; r < pool_rows; ++r) {
    const float* got = stored.data() + r * W;
    const float* want = rows.data() + r * W;
    for (int i = 0; i < W; ++i) {
      if (!written[r]) {
        ASSERT_EQ(got[i], 0.f) << "skipped slot " << r << " was written";
        continue;
      }
      const bool exact = !fp8 || i >= L;
      if (exact) {
        ASSERT_EQ(got[i], bf16_value(bf16_bits(want[i]))) << "slot " << r << " elem " << i;
      } else {
        write_err =
            std::max(write_err, std::fabs(static_cast<double>(got[i]) - want[i]) / row_mag[r]);
      }
    }
    if (!written[r]) std::fill_n(rows.data() + r * W, W, 0.f);  // reference sees zeros too
  }
  if (fp8) {
    EXPECT_LT(write_err, 0.35) << "e4m3 error past half an ulp at max |c| ~ 4";
  }

  // Block tables: each sequence's blocks scattered over the pool.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(static_cast<size_t>(B) * max_blocks);
  for (size_t i = 0; i < table.size(); ++i) table[i] = perm[i];
  std::vector<float> q(static_cast<size_t>(B) * c.q_len * H * W);
  std::vector<uint16_t> q_bf(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q_bf[i] = bf16_bits(normal(rng) * c.q_mag);
    q[i] = bf16_value(q_bf[i]);
  }
  std::vector<float> ref_out, ref_lse, ref32_out, ref32_lse;
  reference(c, q, stored, table, max_blocks, ref_out, ref_lse);
  if (fp8) reference(c, q, rows, table, max_blocks, ref32_out, ref32_lse);

  MlaPlanDesc d;
  d.num_heads = H;
  d.kv_lora_rank = L;
  d.rope_dim = c.R;
  d.max_batch = B + 2;
  d.kv_dtype = c.kv;
  d.num_ctas = c.num_ctas;
  d.q_len = c.q_len;
  d.kernel = c.cluster  ? MlaKernelChoice::kCluster
             : c.lat    ? MlaKernelChoice::kLatency
             : c.auto_k ? MlaKernelChoice::kAuto
             : c.sm90   ? MlaKernelChoice::kSm90
             : c.wgmma  ? MlaKernelChoice::kWgmma
                        : MlaKernelChoice::kMmaSync;
  if (c.nan_tail) {
    for (int b = 0; b < B; ++b) {
      const int nb = (c.lens[b] + c.block - 1) / c.block;
      for (int pos = c.lens[b]; pos < nb * c.block; ++pos) {
        const size_t row =
            static_cast<size_t>(table[b * max_blocks + pos / c.block]) * c.block + pos % c.block;
        CUDA_OK(cudaMemset(pool.ptr + row * row_bytes, 0xff, row_bytes));  // bf16 0xffff: NaN
      }
    }
  }
  MlaPlan plan;
  CUDA_OK(mla_plan(d, &plan));
  Dev<uint16_t> d_q(q_bf);
  Dev<int32_t> d_table(table), d_lens(std::vector<int32_t>(c.lens.begin(), c.lens.end()));
  const bool out_bf = c.out == MlaOutDtype::kBf16;
  const size_t out_n = static_cast<size_t>(B) * c.q_len * H * L;
  Dev<float> d_out32(out_bf ? 1 : out_n);
  Dev<uint16_t> d_out16(out_bf ? out_n : 1);
  Dev<float> d_lse(static_cast<size_t>(B) * c.q_len * H);
  d_out32.poison();
  d_out16.poison();
  d_lse.poison();
  MlaDecodeBf16Params p;
  p.batch = B;
  p.block_size = c.block;
  p.max_blocks_per_seq = max_blocks;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.R + 128));
  p.q = d_q.ptr;
  p.kv_pool = pool.ptr;
  p.block_table = d_table.ptr;
  p.seq_lens = d_lens.ptr;
  p.out = out_bf ? static_cast<void*>(d_out16.ptr) : static_cast<void*>(d_out32.ptr);
  p.out_dtype = c.out;
  p.lse = d_lse.ptr;
  if (c.graph) {
    cudaStream_t st;
    CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    CUDA_OK(mla_decode_bf16_cuda(p, plan, st));
    CUDA_OK(cudaStreamEndCapture(st, &g));
    CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
    for (int r = 0; r <= c.repeats; ++r) CUDA_OK(cudaGraphLaunch(ge, st));
    CUDA_OK(cudaStreamSynchronize(st));
    d_out32.poison();
    d_out16.poison();
    d_lse.poison();
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaGraphLaunch(ge, st));
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaGraphExecDestroy(ge));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaStreamDestroy(st));
  } else {
    for (int r = 0; r < c.repeats; ++r) {
      MlaDecodeBf16Params pr = p;
      pr.batch = r % 2 ? B : std::max(1, B - 1 - r);
      CUDA_OK(mla_decode_bf16_cuda(pr, plan, nullptr));
    }
    if (c.repeats > 0) {
      CUDA_OK(cudaDeviceSynchronize());
      d_out32.poison();
      d_out16.poison();
      d_lse.poison();
      CUDA_OK(cudaDeviceSynchronize());
    }
    if (c.late_write) {
      CUDA_OK(cudaMemset(pool.ptr, 0, pool_rows * row_bytes));
      CUDA_OK(cudaDeviceSynchronize());
      CUDA_OK(mla_kv_write_cuda(w, nullptr));  // the same rows again, on the stream
    }
    CUDA_OK(mla_decode_bf16_cuda(p, plan, nullptr));
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> out(out_n);
  if (out_bf) {
    const auto h = d_out16.host();
    for (size_t i = 0; i < out_n; ++i) out[i] = bf16_value(h[i]);
  } else {
    out = d_out32.host();
  }
  const std::vector<float> lse = d_lse.host();
  mla_plan_release(&plan);

  size_t bad = 0;
  for (float x : out) bad += !std::isfinite(x);
  EXPECT_EQ(bad, 0u) << "outputs not written or not finite";
  std::vector<float> lg, lr;
  for (size_t i = 0; i < lse.size(); ++i) {
    ASSERT_FALSE(std::isnan(lse[i])) << "lse row " << i;
    if (std::isinf(ref_lse[i])) {
      EXPECT_EQ(lse[i], ref_lse[i]) << "lse row " << i << " (empty sequence)";
      for (int k = 0; k < L; ++k) ASSERT_EQ(out[i * L + k], 0.f) << "empty row " << i;
    } else {
      lg.push_back(lse[i]);
      lr.push_back(ref_lse[i]);
    }
  }
  const double err = rel_l2(out, ref_out), lerr = rel_l2(lg, lr);
  std::printf("  rel_l2 out %.2e lse %.2e", err, lerr);
  // Against the rows the cache holds: bf16 q and P, fp32 accumulation. (FP8: the bound
  // is 3e-2; the kernel's own error over the dequantised rows is the bf16 one.)
  EXPECT_LT(err, 1e-2);
  EXPECT_LT(lerr, 1e-3);
  if (fp8) {
    // Against the unquantised rows: e4m3 keeps 3 mantissa bits, so rounding alone costs ~2.9%
    // RMS per element on Gaussian rows whatever the scale; the output inherits about that.
    const double err32 = rel_l2(out, ref32_out);
    std::printf(" | vs fp32 rows: out %.2e", err32);
    // Rows of very different magnitudes (row_exp spread) make the softmax sharp, which amplifies
    // the e4m3 rounding of the scores: only the dequantised-rows bound above applies there.
    if (c.row_exp_lo == c.row_exp_hi) {
      EXPECT_LT(err32, 5e-2);
    }
  }
  std::printf("\n");
}

constexpr unsigned kSeed = 20261122;

// Uneven lengths with the edge cases: empty, one token, one short of / one past a block.
std::vector<int> uneven(int block, int longest) {
  return {0, 1, block - 1, block + 1, longest, 37, 3 * block, 0, longest / 3 + 5};
}

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
