// Backend parity in the spirit of ggml's test-backend-ops: every op of the CUDA library
// (ops/cuda/ops_cuda.h) on several shapes, odd sizes included, against the CPU reference
// (ops/ops.h, engine/sampler.h, or the obvious loop for data movement) with a tolerance per
// dtype: fp32 1e-5 relative L2, bf16 1e-2, FP8 weights 2e-2 against the CPU on the dequantised
// weights. Fixed seeds; each case prints the error it met. Skips without a GPU.
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <bit>
#include <map>
#include <numeric>

#include <gtest/gtest.h>

#include "backend_ops_util.h"
#include "engine/sampler.h"
#include "ops/cuda/mla_decode_bf16.h"
#include "ops/ops.h"

namespace helix {
namespace {

using namespace helix::testing;

class BackendOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    // FP8 scratch: GEMMs over kFp8DirectMaxRows rows take the widen + cuBLAS path.
    ASSERT_EQ(cuda_ops_context_create(&ctx_, 32u << 20, 8u << 20), cudaSuccess);
  }
  void TearDown() override { cuda_ops_context_destroy(&ctx_); }
  void sync() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }
  CudaOpsContext ctx_;
  std::mt19937 rng_{1234};
};

const CudaDType kActs[] = {CudaDType::kF32, CudaDType::kBF16};

// Random FP8 weight [n, k] with block scales; returns the bytes, the scales and the dequantised
// fp32 weight the CPU reference multiplies by.
struct Fp8Weight {
  std::vector<uint8_t> q;
  std::vector<float> scale, deq;
};
Fp8Weight make_fp8(int n, int k, std::mt19937& rng) {
  Fp8Weight w;
  const int nb = (n + 127) / 128, kb = (k + 127) / 128;
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(0.5e-3f, 2e-3f);
  w.scale.resize(static_cast<size_t>(nb) * kb);
  for (float& s : w.scale) s = sc(rng);
  w.q.resize(static_cast<size_t>(n) * k);
  w.deq.resize(w.q.size());
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < k; ++c) {
      uint8_t b;
      do b = static_cast<uint8_t>(byte(rng));
      while ((b & 0x7f) == 0x7f);  // NaN codes
      const size_t i = static_cast<size_t>(r) * k + c;
      w.q[i] = b;
      w.deq[i] = fp8_value(b) * w.scale[(r / 128) * kb + c / 128];
    }
  return w;
}

// ---- gemm ----------------------------------------------------------------------------------
TEST_F(BackendOps, GemmCublas) {
  struct Case {
    int m, n, k;
    float beta;
  };
  // cuBLAS for every case; bf16 also through the tensor-core kernel (GemmAlgo::kMma): m = 1, 7,
  // 8, 9, 64, 200 (token tiles of 8/16/32, partial tiles), n not a multiple of 16 or 64, k a
  // multiple of 8 but not of 128, split K (small n, long k), fp32 output accumulated (beta 1).
  for (const Case c :
       {Case{1, 7, 5, 0}, Case{3, 64, 128, 0}, Case{17, 130, 300, 1}, Case{64, 256, 512, 0},
        Case{1, 300, 1032, 0}, Case{7, 130, 4096, 1}, Case{8, 64, 520, 0}, Case{9, 200, 1040, 1},
        Case{200, 96, 256, 0}, Case{64, 33, 2056, 1}})
    for (CudaDType t : kActs)
      for (GemmAlgo algo : {GemmAlgo::kAuto, GemmAlgo::kMma})
        for (CudaDType yt : {t, CudaDType::kF32}) {
          if (t == CudaDType::kF32 && (algo == GemmAlgo::kMma || yt != t)) continue;
          const auto x = rounded(randn(size_t(c.m) * c.k, rng_), t);
          const auto w = rounded(randn(size_t(c.n) * c.k, rng_, 0.05f), t);
          auto y0 = rounded(randn(size_t(c.m) * c.n, rng_), yt);
          std::vector<float> ref = y0;
          matmul(x.data(), w.data(), ref.data(), c.m, c.n, c.k, c.beta != 0);
          auto dx = upload_as(x, t), dw = upload_as(w, t), dy = upload_as(y0, yt);
          GemmCudaParams p;
          p.m = c.m, p.n = c.n, p.k = c.k, p.x_dtype = p.w_dtype = t, p.y_dtype = yt;
          p.x = dx->ptr, p.w = dw->ptr, p.y = dy->ptr, p.beta = c.beta, p.algo = algo;
          CUDA_OK(gemm_cuda(ctx_, p, nullptr));
          sync();
          // bf16 output: its rounding (1e-2); fp32 output of bf16 operands: fp32 sums only.
          const double tol = t == CudaDType::kBF16 && yt == CudaDType::kF32 ? 1e-5 : tol_for(t);
          const double e = rel_l2(download_as(*dy, ref.size(), yt), ref);
          const std::string name = std::to_string(c.m) + "x" + std::to_string(c.n) + "x" +
                                   std::to_string(c.k) + (c.beta != 0 ? " beta1 " : " ") +
                                   dtype_name(t) + "->" + dtype_name(yt) +
                                   (algo == GemmAlgo::kMma ? " mma" : "");
          report("gemm", name, e, tol);
          EXPECT_LE(e, tol) << name;
        }
}

TEST_F(BackendOps, GemmFp8BlockScaled) {
  struct Case {
    int m, n, k;
    float beta;
  };
  // kLegacy: odd k and n take the unaligned path; up to kFp8DirectMaxRows rows the direct kernel
  // (tiles of 1, 2, 4, 8 rows; two tiles at 16), beyond it the widen + cuBLAS path (33, 256).
  // kAuto with bf16 activations: the tensor-core kernel (k a multiple of 16; 700 falls back) with
  // m = 1, 7, 8, 9, 64, 200, k not a multiple of 128, split K, fp32 output accumulated.
  for (const Case c :
       {Case{1, 256, 512, 0}, Case{5, 300, 700, 0}, Case{16, 200, 640, 1}, Case{3, 160, 768, 0},
        Case{33, 384, 1024, 1}, Case{256, 128, 256, 0}, Case{2, 129, 1040, 0}, Case{1, 64, 4096, 1},
        Case{7, 130, 1296, 0}, Case{8, 256, 2048, 1}, Case{9, 300, 656, 0}, Case{64, 384, 1024, 1},
        Case{200, 200, 528, 0}})
    for (CudaDType t : kActs)
      for (GemmAlgo algo : {GemmAlgo::kAuto, GemmAlgo::kLegacy})
        for (CudaDType yt : {t, CudaDType::kF32}) {
          if (t == CudaDType::kF32 && (algo == GemmAlgo::kLegacy || yt != t)) continue;
          const Fp8Weight w = make_fp8(c.n, c.k, rng_);
          const auto x = rounded(randn(size_t(c.m) * c.k, rng_), t);
          auto y0 = rounded(randn(size_t(c.m) * c.n, rng_), yt);
          std::vector<float> ref = y0;
          matmul(x.data(), w.deq.data(), ref.data(), c.m, c.n, c.k, c.beta != 0);
          auto dx = upload_as(x, t), dw = upload(w.q), ds = upload(w.scale);
          auto dy = upload_as(y0, yt);
          GemmCudaParams p;
          p.m = c.m, p.n = c.n, p.k = c.k, p.x_dtype = t, p.y_dtype = yt;
          p.w_dtype = CudaDType::kF8E4M3, p.algo = algo;
          p.x = dx->ptr, p.w = dw->ptr, p.w_scale = ds->as<float>(), p.y = dy->ptr;
          p.beta = c.beta;
          CUDA_OK(gemm_cuda(ctx_, p, nullptr));
          sync();
          // fp32 activations or output: weights and bf16 products exact in fp32 on both sides,
          // only the summation order differs; bf16 output or the legacy widen + cuBLAS path
          // (weights rounded to bf16 after scaling): the FP8 bar.
          const bool widened = algo == GemmAlgo::kLegacy && c.m > kFp8DirectMaxRows;
          const double tol = yt == CudaDType::kF32 && !widened ? 1e-5 : tol_for(t, true);
          const double e = rel_l2(download_as(*dy, ref.size(), yt), ref);
          const std::string name = std::to_string(c.m) + "x" + std::to_string(c.n) + "x" +
                                   std::to_string(c.k) + (c.beta != 0 ? " beta1 " : " ") +
                                   dtype_name(t) + " x fp8 ->" + dtype_name(yt) +
                                   (algo == GemmAlgo::kLegacy ? " legacy" : "");
          report("gemm_fp8", name, e, tol);
          EXPECT_LE(e, tol) << name;
        }
}

TEST_F(BackendOps, GemmBatched) {
  for (bool trans : {true, false})
    for (CudaDType t : kActs) {
      const int B = 5, m = 3, n = 17, k = 24;
      const auto x = rounded(randn(size_t(B) * m * k, rng_), t);
      const auto w = rounded(randn(size_t(B) * n * k, rng_, 0.2f), t);
      std::vector<float> ref(size_t(B) * m * n);
      for (int b = 0; b < B; ++b)
        matmul_strided(x.data() + size_t(b) * m * k, k, w.data() + size_t(b) * n * k, trans ? k : n,
                       trans, ref.data() + size_t(b) * m * n, n, m, n, k, 0.0f);
      auto dx = upload_as(x, t), dw = upload_as(w, t);
      Dev dy(ref.size() * dtype_size(t));
      dy.poison();
      GemmBatchedCudaParams p;
      p.batch = B, p.m = m, p.n = n, p.k = k, p.x_dtype = p.y_dtype = t;
      p.x = dx->ptr, p.stride_x = int64_t(m) * k;
      p.w = dw->ptr, p.stride_w = int64_t(n) * k, p.trans_w = trans;
      p.y = dy.ptr, p.stride_y = int64_t(m) * n;
      CUDA_OK(gemm_batched_cuda(ctx_, p, nullptr));
      sync();
      const double e = rel_l2(download_as(dy, ref.size(), t), ref), tol = tol_for(t);
      const std::string name = std::string(trans ? "w^T " : "w ") + dtype_name(t);
      report("gemm_batched", name, e, tol);
      EXPECT_LE(e, tol) << name;
    }
}

// Rows permuted by expert times per-expert weights, for f32 / bf16 / fp8 weights.
TEST_F(BackendOps, GroupedGemm) {
  struct Case {
    std::vector<int> rows;
    int max_rows, n, k;
  };
  // Empty groups, groups of 1, 7, 8, 9, 64 and 200 rows (token tiles of 8, 16, 32 and partial
  // ones), k not a multiple of 128 (656, 1040), n not a multiple of 16 (33, 130, 300), a host
  // bound above the real row count; bf16 activations through the tensor-core kernel (kMma)
  // and the row-tile kernel (kLegacy).
  const Case cases[] = {{{0, 3, 17, 1, 0, 40, 2, 5}, 80, 96, 160},
                        {{1, 1, 0, 2, 1, 0, 0, 3, 1, 1, 0, 0, 2, 0, 1, 3}, 16, 256, 512},
                        {{7}, 7, 33, 1000},
                        {{3, 0, 5, 4}, 12, 130, 512},
                        {{0, 8, 9, 0, 1, 7, 0, 0}, 40, 300, 656},
                        {{64, 0, 200, 1}, 270, 130, 1040},
                        {{2, 3, 1, 0, 2, 1, 4, 3, 0, 2, 1, 1}, 24, 192, 1024}};
  for (const Case& c : cases)
    for (CudaDType wt : {CudaDType::kF32, CudaDType::kBF16, CudaDType::kF8E4M3})
      for (CudaDType t : kActs)
        for (GemmAlgo algo : {GemmAlgo::kMma, GemmAlgo::kLegacy}) {
          if (t == CudaDType::kF32 && algo == GemmAlgo::kLegacy) continue;
          if (wt == CudaDType::kF32 && algo == GemmAlgo::kLegacy) continue;
          const int G = static_cast<int>(c.rows.size());
          std::vector<int32_t> off(G + 1, 0);
          for (int g = 0; g < G; ++g) off[g + 1] = off[g] + c.rows[g];
          const int total = off[G];
          const auto x = rounded(randn(size_t(c.max_rows) * c.k, rng_), t);
          std::vector<float> ref(size_t(total) * c.n);
          std::vector<std::unique_ptr<Dev>> wd, sd;
          std::vector<const void*> wp;
          std::vector<const float*> sp;
          for (int g = 0; g < G; ++g) {
            std::vector<float> deq;
            if (wt == CudaDType::kF8E4M3) {
              Fp8Weight w = make_fp8(c.n, c.k, rng_);
              wd.push_back(upload(w.q));
              sd.push_back(upload(w.scale));
              sp.push_back(sd.back()->as<float>());
              deq = std::move(w.deq);
            } else {
              deq = rounded(randn(size_t(c.n) * c.k, rng_, 0.05f), wt);
              wd.push_back(upload_as(deq, wt));
            }
            wp.push_back(wd.back()->ptr);
            if (c.rows[g])
              matmul(x.data() + size_t(off[g]) * c.k, deq.data(), ref.data() + size_t(off[g]) * c.n,
                     c.rows[g], c.n, c.k);
          }
          auto dx = upload_as(x, t), doff = upload(off), dwp = upload(wp);
          std::unique_ptr<Dev> dsp = sp.empty() ? nullptr : upload(sp);
          Dev dy(size_t(c.max_rows) * c.n * dtype_size(t));
          dy.poison();
          const size_t ws = grouped_gemm_cuda_workspace_bytes(G, c.max_rows);
          Dev dws(ws);
          GroupedGemmCudaParams p;
          p.num_groups = G, p.max_rows = c.max_rows, p.n = c.n, p.k = c.k;
          p.x_dtype = p.y_dtype = t, p.w_dtype = wt;
          p.x = dx->ptr, p.offsets = doff->as<int32_t>(), p.w_ptrs = dwp->as<const void*>();
          p.scale_ptrs = dsp ? dsp->as<const float*>() : nullptr;
          p.y = dy.ptr, p.workspace = dws.ptr, p.workspace_bytes = ws, p.algo = algo;
          CUDA_OK(grouped_gemm_cuda(p, nullptr));
          sync();
          // fp32 x: weights exact in fp32 (the CPU uses the same dequantised values), only the
          // summation order differs; bf16 x: bf16 output rounding (fp8 weights: their bar).
          const double tol = t == CudaDType::kF32 ? 1e-5 : tol_for(t, wt == CudaDType::kF8E4M3);
          const double e = rel_l2(download_as(dy, ref.size(), t), ref);
          const std::string name = "G" + std::to_string(G) + " rows" + std::to_string(total) + " " +
                                   std::to_string(c.n) + "x" + std::to_string(c.k) + " " +
                                   dtype_name(t) + " x " + dtype_name(wt) +
                                   (algo == GemmAlgo::kLegacy ? " legacy" : "");
          report("grouped_gemm", name, e, tol);
          EXPECT_LE(e, tol) << name;
        }
}

// ---- norms and elementwise ------------------------------------------------------------------
TEST_F(BackendOps, RmsNorm) {
  struct Case {
    int rows, dim, ld;
  };
  for (const Case c : {Case{1, 7, 7}, Case{5, 7168, 7168}, Case{3, 1000, 1003}, Case{2, 512, 576}})
    for (CudaDType t : kActs)
      for (CudaDType wt : kActs) {
        const auto x = rounded(randn(size_t(c.rows) * c.ld, rng_), t);
        const auto w = rounded(randn(c.dim, rng_), wt);
        std::vector<float> ref(size_t(c.rows) * c.dim);
        rms_norm(x.data(), w.data(), ref.data(), c.rows, c.dim, 1e-6f, c.ld, c.dim);
        auto dx = upload_as(x, t), dw = upload_as(w, wt);
        Dev dy(ref.size() * dtype_size(t));
        dy.poison();
        RmsNormCudaParams p;
        p.rows = c.rows, p.dim = c.dim, p.eps = 1e-6f, p.dtype = t, p.w_dtype = wt;
        p.x = dx->ptr, p.ldx = c.ld, p.w = dw->ptr, p.y = dy.ptr;
        CUDA_OK(rms_norm_cuda(p, nullptr));
        sync();
        const double e = rel_l2(download_as(dy, ref.size(), t), ref), tol = tol_for(t);
        const std::string name = std::to_string(c.rows) + "x" + std::to_string(c.dim) + " ld" +
                                 std::to_string(c.ld) + " " + dtype_name(t) + " w " +
                                 dtype_name(wt);
        report("rms_norm", name, e, tol);
        EXPECT_LE(e, tol) << name;
      }
}

TEST_F(BackendOps, AddCastSiluMul) {
  for (int64_t n : {int64_t(1), int64_t(1000003)})
    for (CudaDType t : kActs) {
      const auto a = rounded(randn(n, rng_), t), b = rounded(randn(n, rng_), t);
      std::vector<float> ref(n);
      for (int64_t i = 0; i < n; ++i) ref[i] = a[i] + b[i];
      auto da = upload_as(a, t), db = upload_as(b, t);
      AddCudaParams p{n, t, da->ptr, db->ptr, da->ptr};  // in place, as the residual stream
      CUDA_OK(add_cuda(p, nullptr));
      sync();
      double e = rel_l2(download_as(*da, n, t), ref);
      report("add", std::to_string(n) + " " + dtype_name(t), e, tol_for(t));
      EXPECT_LE(e, tol_for(t));
    }
  for (int64_t n : {int64_t(3), int64_t(300001)}) {
    const auto x = randn(n, rng_);
    auto dx = upload(x);
    Dev dh(n * 2), df(n * 4);
    CUDA_OK(cast_cuda({n, CudaDType::kF32, CudaDType::kBF16, dx->ptr, dh.ptr}, nullptr));
    CUDA_OK(cast_cuda({n, CudaDType::kBF16, CudaDType::kF32, dh.ptr, df.ptr}, nullptr));
    sync();
    // f32 -> bf16 is round-to-nearest-even: bit-exact against the host codec.
    EXPECT_EQ(download_as(dh, n, CudaDType::kBF16), rounded(x, CudaDType::kBF16));
    EXPECT_EQ(download_as(df, n, CudaDType::kF32), rounded(x, CudaDType::kBF16));
    report("cast", std::to_string(n) + " f32<->bf16 (bit-exact)", 0.0, 0.0);
  }
  for (CudaDType t : kActs) {
    const int rows = 3, dim = 2049;  // gate and up interleaved per row: [gate | up]
    const auto gu = rounded(randn(size_t(rows) * 2 * dim, rng_, 3.0f), t);
    std::vector<float> ref(size_t(rows) * dim);
    for (int r = 0; r < rows; ++r)
      silu_mul(gu.data() + size_t(r) * 2 * dim, gu.data() + size_t(r) * 2 * dim + dim,
               ref.data() + size_t(r) * dim, dim);
    auto dgu = upload_as(gu, t);
    Dev dout(ref.size() * dtype_size(t));
    dout.poison();
    SiluMulCudaParams p;
    p.rows = rows, p.dim = dim, p.dtype = t;
    p.gate = dgu->ptr, p.ld_gate = 2 * dim;
    p.up = static_cast<const char*>(dgu->ptr) + dim * dtype_size(t), p.ld_up = 2 * dim;
    p.out = dout.ptr;
    CUDA_OK(silu_mul_cuda(p, nullptr));
    sync();
    const double e = rel_l2(download_as(dout, ref.size(), t), ref);
    report("silu_mul", std::string("3x2049 ") + dtype_name(t), e, tol_for(t));
    EXPECT_LE(e, tol_for(t));
  }
}

TEST_F(BackendOps, Embed) {
  for (CudaDType tt : kActs)
    for (CudaDType ot : kActs) {
      if (tt == CudaDType::kBF16 && ot == CudaDType::kF32) continue;
      const int vocab = 1000, dim = 77;
      const auto table = rounded(randn(size_t(vocab) * dim, rng_), tt);
      const std::vector<int32_t> ids = {5, 999, 0, -1, 1000, 5, 431};
      std::vector<float> ref(ids.size() * dim, 0.0f);
      for (size_t t = 0; t < ids.size(); ++t)
        if (ids[t] >= 0 && ids[t] < vocab)
          std::copy_n(table.data() + size_t(ids[t]) * dim, dim, ref.data() + t * dim);
      auto dt = upload_as(table, tt), di = upload(ids);
      Dev dout(ref.size() * dtype_size(ot));
      dout.poison();
      EmbedCudaParams p;
      p.num_tokens = static_cast<int>(ids.size()), p.dim = dim, p.vocab = vocab;
      p.table_dtype = tt, p.out_dtype = ot, p.ids = di->as<int32_t>(), p.table = dt->ptr;
      p.out = dout.ptr;
      CUDA_OK(embed_cuda(p, nullptr));
      sync();
      // A row copy: exact (table values are representable in the output dtype).
      const auto got = download_as(dout, ref.size(), ot);
      EXPECT_EQ(got, rounded(ref, ot));
      report("embed", std::string(dtype_name(tt)) + "->" + dtype_name(ot) + " (exact)", 0.0, 0.0);
    }
}

TEST_F(BackendOps, Rope) {
  for (bool interleave : {true, false})
    for (CudaDType t : kActs) {
      // q rows [T, H, 192] with the rope part at +128 (DeepSeek-V3's layout), 64 wide.
      const int T = 5, H = 3, QK = 192, NOPE = 128, R = 64;
      std::vector<double> inv_freq_d(R / 2);
      std::vector<float> inv_freq(R / 2);
      for (int i = 0; i < R / 2; ++i) {
        inv_freq_d[i] = 1.0 / std::pow(10000.0, 2.0 * i / R);
        inv_freq[i] = static_cast<float>(inv_freq_d[i]);
      }
      const double mult = 1.3;
      const std::vector<int32_t> pos = {0, 1, 17, 4095, 32767};
      auto x = rounded(randn(size_t(T) * H * QK, rng_), t);
      std::vector<float> ref = x, cs(R);
      for (int tk = 0; tk < T; ++tk) {
        // The model's table (DeepseekModel::rope_table).
        for (int i = 0; i < R / 2; ++i) {
          const float ang = static_cast<float>(pos[tk]) * inv_freq[i];
          cs[i] = static_cast<float>(std::cos(ang) * mult);
          cs[R / 2 + i] = static_cast<float>(std::sin(ang) * mult);
        }
        rope_apply(ref.data() + size_t(tk) * H * QK + NOPE, H, QK, R, cs.data(), interleave);
      }
      auto dx = upload_as(x, t), dp = upload(pos), df = upload(inv_freq);
      RopeCudaParams p;
      p.num_tokens = T, p.num_vecs = H, p.dim = R, p.dtype = t;
      p.x = static_cast<char*>(dx->ptr) + NOPE * dtype_size(t);
      p.token_stride = int64_t(H) * QK, p.vec_stride = QK;
      p.positions = dp->as<int32_t>(), p.inv_freq = df->as<float>(), p.mult = float(mult);
      p.interleave = interleave;
      CUDA_OK(rope_cuda(p, nullptr));
      sync();
      const double e = rel_l2(download_as(*dx, ref.size(), t), ref), tol = tol_for(t);
      const std::string name =
          std::string(interleave ? "interleave " : "rotate_half ") + dtype_name(t);
      report("rope", name, e, tol);
      EXPECT_LE(e, tol) << name;
    }
}

// The pool writers: kv_write_cuda into a float32 pool (c and k_pe by their own row strides) and
// mla_kv_write_cuda, the one writer of the bf16 / FP8 rows the MLA kernels read, into a bf16 pool
// ([c, k_pe] rows with a row stride). Copies or round-to-nearest-even, so the pool's bits equal
// the CPU's rows (bf16: the core codec's bf16_from_float). FP8 pools: backend_ops_kv_fp8.cpp.
TEST_F(BackendOps, KvWrite) {
  for (CudaDType st : kActs)
    for (CudaDType pt : kActs) {
      const int T = 6, L = 512, R = 64, W = L + R, ld = W + 8, slots_n = 40;
      const auto lat = rounded(randn(size_t(T) * ld, rng_), st);  // rows [c, k_pe, 8 unused]
      const std::vector<int64_t> slots = {3, 39, -1, 0, 17, 18};
      std::vector<float> pool = rounded(randn(size_t(slots_n) * W, rng_), pt);
      std::vector<float> ref = pool;
      for (int t = 0; t < T; ++t)
        if (slots[t] >= 0) std::copy_n(lat.data() + size_t(t) * ld, W, ref.data() + slots[t] * W);
      auto dl = upload_as(lat, st), ds = upload(slots);
      auto dpool = upload_as(pool, pt);
      size_t diff = 0;
      if (pt == CudaDType::kF32) {
        KvWriteCudaParams p;
        p.num_tokens = T, p.kv_lora_rank = L, p.rope_dim = R, p.src_dtype = st;
        p.c = dl->ptr, p.ld_c = ld;
        p.k_pe = static_cast<const char*>(dl->ptr) + L * dtype_size(st), p.ld_k_pe = ld;
        p.slots = ds->as<int64_t>(), p.pool = dpool->as<float>();
        CUDA_OK(kv_write_cuda(p, nullptr));
        sync();
        const auto got = download<uint32_t>(*dpool, ref.size());
        for (size_t i = 0; i < ref.size(); ++i) diff += got[i] != std::bit_cast<uint32_t>(ref[i]);
      } else {
        MlaKvWriteParams w;
        w.num_tokens = T, w.kv_lora_rank = L, w.rope_dim = R, w.kv_dtype = MlaKvDtype::kBf16;
        w.src = dl->ptr, w.src_bf16 = st == CudaDType::kBF16, w.src_stride = ld;
        w.slot_mapping = ds->as<int64_t>(), w.kv_pool = dpool->ptr;
        CUDA_OK(mla_kv_write_cuda(w, nullptr));
        sync();
        const auto got = download<uint16_t>(*dpool, ref.size());
        for (size_t i = 0; i < ref.size(); ++i) diff += got[i] != bf16_bits(ref[i]);
      }
      EXPECT_EQ(diff, 0u) << dtype_name(st) << "->" << dtype_name(pt);
      report(pt == CudaDType::kF32 ? "kv_write" : "mla_kv_write",
             std::string(dtype_name(st)) + "->" + dtype_name(pt) + " pool: elements differing",
             static_cast<double>(diff), 0.0);
    }
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
