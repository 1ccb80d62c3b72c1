// The mla_decode_bf16_cuda test harness (mla_bf16_case.h): a case against the CPU reference.
#ifdef HELIX_HAVE_CUDA
#include "mla_bf16_case.h"

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

#include "ops/ops.h"

namespace helix::mla_test {

using namespace helix::testing;

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

namespace {

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

}  // namespace

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

}  // namespace helix::mla_test
#endif  // HELIX_HAVE_CUDA
