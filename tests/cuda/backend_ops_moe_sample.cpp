// Second half of test_backend_ops (same binary): MoE routing and permutation, argmax and
// sampling, prefill attention. See test_backend_ops.cpp for the tolerances.
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "backend_ops_util.h"
#include "engine/sampler.h"
#include "ops/ops.h"
#include "ops/sample.h"

namespace helix {
namespace {

using namespace helix::testing;

class BackendOpsMoe : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
  void sync() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }
  std::mt19937 rng_{4321};
};

const CudaDType kActs[] = {CudaDType::kF32, CudaDType::kBF16};

TEST_F(BackendOpsMoe, MoeRoute) {
  struct Case {
    int T, E, k, G, kg;
    bool norm, bias;
    float scale;
  };
  for (const Case c :
       {Case{37, 256, 8, 8, 4, true, true, 2.5f}, Case{5, 16, 4, 4, 2, true, true, 2.5f},
        Case{9, 64, 6, 1, 1, false, false, 1.0f}, Case{3, 8, 8, 8, 8, true, true, 1.0f}})
    for (CudaDType t : kActs) {
      const auto logits = rounded(randn(size_t(c.T) * c.E, rng_, 2.0f), t);
      const auto bias = randn(c.E, rng_, 0.1f);
      std::vector<int> ids_ref(size_t(c.T) * c.k);
      std::vector<float> w_ref(ids_ref.size());
      MoeRouteParams r;
      r.num_tokens = c.T, r.num_experts = c.E, r.top_k = c.k, r.n_group = c.G;
      r.topk_group = c.kg, r.norm_topk_prob = c.norm, r.routed_scaling_factor = c.scale;
      r.logits = logits.data(), r.bias = c.bias ? bias.data() : nullptr;
      r.expert_ids = ids_ref.data(), r.weights = w_ref.data();
      moe_route(r);
      auto dl = upload_as(logits, t), db = upload(bias);
      Dev di(ids_ref.size() * 4), dw(w_ref.size() * 4);
      di.poison(), dw.poison();
      MoeRouteCudaParams p;
      p.num_tokens = c.T, p.num_experts = c.E, p.top_k = c.k, p.n_group = c.G;
      p.topk_group = c.kg, p.norm_topk_prob = c.norm, p.routed_scaling_factor = c.scale;
      p.logits_dtype = t, p.logits = dl->ptr, p.bias = c.bias ? db->as<float>() : nullptr;
      p.expert_ids = di.as<int32_t>(), p.weights = dw.as<float>();
      CUDA_OK(moe_route_cuda(p, nullptr));
      sync();
      const auto ids = download<int32_t>(di, ids_ref.size());
      // Same experts in the same order (ids are exact: inputs are the same floats).
      EXPECT_TRUE(std::equal(ids.begin(), ids.end(), ids_ref.begin()));
      const double e = rel_l2(download<float>(dw, w_ref.size()), w_ref);
      const std::string name = "T" + std::to_string(c.T) + " E" + std::to_string(c.E) + " k" +
                               std::to_string(c.k) + " G" + std::to_string(c.G) + " " +
                               dtype_name(t);
      report("moe_route", name + " (ids exact)", e, 1e-5);
      EXPECT_LE(e, 1e-5) << name;  // weights are computed in fp32 on both sides
    }
}

TEST_F(BackendOpsMoe, MoePermuteUnpermute) {
  for (CudaDType t : kActs) {
    const int T = 13, K = 8, E = 32, D = 100, P = T * K;
    std::uniform_int_distribution<int> pick(-1, E + 1);  // -1, E, E+1: dropped (not local)
    std::vector<int32_t> ids(P);
    for (int& e : ids) e = pick(rng_);
    const auto x = rounded(randn(size_t(T) * D, rng_), t);
    const auto w = randn(P, rng_, 0.3f);
    // Reference: stable grouping by expert in pair order.
    std::vector<int32_t> off(E + 1, 0), row_of(P, -1), pair_of;
    for (int e = 0; e < E; ++e) {
      off[e] = static_cast<int32_t>(pair_of.size());
      for (int i = 0; i < P; ++i)
        if (ids[i] == e) {
          row_of[i] = static_cast<int32_t>(pair_of.size());
          pair_of.push_back(i);
        }
    }
    off[E] = static_cast<int32_t>(pair_of.size());
    const int kept = off[E];
    std::vector<float> xperm_ref(size_t(kept) * D);
    for (int r = 0; r < kept; ++r)
      std::copy_n(x.data() + size_t(pair_of[r] / K) * D, D, xperm_ref.data() + size_t(r) * D);
    auto di = upload(ids), dx = upload_as(x, t);
    Dev dxp(size_t(P) * D * dtype_size(t)), doff((E + 1) * 4), drow(P * 4), dpair(P * 4);
    MoePermuteCudaParams p;
    p.num_tokens = T, p.top_k = K, p.num_experts = E, p.dim = D, p.dtype = t;
    p.expert_ids = di->as<int32_t>(), p.x = dx->ptr, p.x_perm = dxp.ptr;
    p.offsets = doff.as<int32_t>(), p.row_of_pair = drow.as<int32_t>();
    p.pair_of_row = dpair.as<int32_t>();
    CUDA_OK(moe_permute_cuda(p, nullptr));
    sync();
    EXPECT_EQ(download<int32_t>(doff, E + 1), off);
    EXPECT_EQ(download<int32_t>(drow, P), row_of);
    auto pair_got = download<int32_t>(dpair, P);
    pair_got.resize(kept);
    EXPECT_EQ(pair_got, pair_of);
    EXPECT_EQ(download_as(dxp, size_t(kept) * D, t), xperm_ref);
    report("moe_permute", std::string("T13 k8 E32 drops ") + dtype_name(t) + " (exact)", 0.0, 0.0);
    // Unpermute: a per-row "expert output" y = 2 * x_perm + row, weighted back, accumulated.
    std::vector<float> y(size_t(P) * D, 0.0f);
    for (int r = 0; r < kept; ++r)
      for (int i = 0; i < D; ++i) y[size_t(r) * D + i] = 2 * xperm_ref[size_t(r) * D + i] + r;
    y = rounded(y, t);
    const auto out0 = rounded(randn(size_t(T) * D, rng_), t);
    std::vector<float> ref = out0;
    for (int tk = 0; tk < T; ++tk)
      for (int i = 0; i < D; ++i) {
        float acc = ref[size_t(tk) * D + i];
        for (int j = 0; j < K; ++j) {
          const int r = row_of[tk * K + j];
          if (r >= 0) acc += w[tk * K + j] * y[size_t(r) * D + i];
        }
        ref[size_t(tk) * D + i] = acc;
      }
    auto dy = upload_as(y, t), dw = upload(w), dout = upload_as(out0, t);
    MoeUnpermuteCudaParams u;
    u.num_tokens = T, u.top_k = K, u.dim = D, u.dtype = t, u.y_perm = dy->ptr;
    u.row_of_pair = drow.as<int32_t>(), u.weights = dw->as<float>(), u.out = dout->ptr;
    u.accumulate = true;
    CUDA_OK(moe_unpermute_cuda(u, nullptr));
    sync();
    const double e = rel_l2(download_as(*dout, ref.size(), t), ref);
    report("moe_unpermute", std::string("T13 k8 accumulate ") + dtype_name(t), e, tol_for(t));
    EXPECT_LE(e, tol_for(t));
  }
}

TEST_F(BackendOpsMoe, Argmax) {
  for (CudaDType t : kActs) {
    const int rows = 4, n = 129280;
    auto x = rounded(randn(size_t(rows) * n, rng_), t);
    // Ties: row 1 has its maximum twice, the first must win; row 3 has it at the last index.
    x[size_t(1) * n + 500] = x[size_t(1) * n + 77] = 100.0f;
    x[size_t(3) * n + n - 1] = 50.0f;
    auto dx = upload_as(x, t);
    Dev dout(rows * 4);
    CUDA_OK(argmax_cuda({rows, n, t, dx->ptr, dout.as<int32_t>()}, nullptr));
    sync();
    const auto got = download<int32_t>(dout, rows);
    for (int r = 0; r < rows; ++r) EXPECT_EQ(got[r], argmax(x.data() + size_t(r) * n, n)) << r;
    report("argmax", std::string("4x129280 ties ") + dtype_name(t) + " (exact)", 0.0, 0.0);
  }
}

// The CPU Sampler's kept tokens (engine/sampler.cpp: the top_k most probable, then the smallest
// nucleus reaching top_p) and each one's probability among them.
std::map<int, double> nucleus(const std::vector<float>& l, float temp, float top_p, int top_k) {
  const int V = static_cast<int>(l.size());
  const double mx = *std::max_element(l.begin(), l.end());
  std::vector<double> p(V);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += p[i] = std::exp((l[i] - mx) / temp);
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  size_t cand = order.size();
  if (top_k > 0 && top_k < V) {
    cand = top_k;
    sum = 0;
    for (size_t i = 0; i < cand; ++i) sum += p[order[i]];
  }
  double mass = 0, kept = 0;
  size_t keep = 0;
  while (keep < cand) {
    mass += p[order[keep]] / sum;
    ++keep;
    if (mass >= top_p) break;
  }
  for (size_t i = 0; i < keep; ++i) kept += p[order[i]];
  std::map<int, double> out;
  for (size_t i = 0; i < keep; ++i) out[order[i]] = p[order[i]] / kept;
  return out;
}

// The GPU sampler against its CPU reference sample_row (ops/sample.h: same thresholds, same
// Philox bits; the draws agree but where float32 vs float64 sums move a boundary) and against
// the engine's CPU Sampler's distribution: every draw among the Sampler's kept tokens (or tied
// with its least probable one: the GPU keeps ties at a threshold), frequencies within 5 sigma of
// its probabilities (fp32 cases, one logits row repeated over the rows, a fixed seed set).
TEST_F(BackendOpsMoe, Sample) {
  struct Case {
    int V, rows;
    float temp, top_p;
    int top_k;
    CudaDType t;
  };
  for (const Case c : {Case{50, 8192, 0.8f, 0.9f, 0, CudaDType::kF32},
                       Case{50, 8192, 1.0f, 1.0f, 7, CudaDType::kF32},
                       Case{1000, 4096, 0.7f, 0.8f, 40, CudaDType::kF32},
                       Case{1000, 2048, 1.1f, 0.95f, 0, CudaDType::kBF16},
                       Case{1000, 2048, 0.05f, 1.0f, 0, CudaDType::kF32},  // most below 2^-30
                       Case{129280, 24, 1.0f, 0.9f, 50, CudaDType::kBF16}}) {
    const int V = c.V, rows = c.rows;
    const auto row = rounded(randn(V, rng_, 1.5f), c.t);
    std::vector<float> logits;
    for (int r = 0; r < rows; ++r) logits.insert(logits.end(), row.begin(), row.end());
    std::vector<SampleRow> params(rows);
    for (int r = 0; r < rows; ++r) {
      params[r].temperature = c.temp;
      params[r].top_p = c.top_p;
      params[r].top_k = c.top_k;
      params[r].seed = 1000 + r;
      params[r].stream = r % 3;
      params[r].counter = 7;
    }
    // Rows 0 and 1: greedy (temperature 0) and a nucleus of one token (tiny top_p).
    params[0].temperature = 0.0f;
    params[1].top_p = 1e-6f;
    auto dl = upload_as(logits, c.t), dp = upload(params);
    Dev dout(rows * 4);
    SampleCudaParams p;
    p.rows = rows, p.vocab = V, p.dtype = c.t, p.logits = dl->ptr;
    p.params = dp->as<SampleRow>(), p.out = dout.as<int32_t>();
    CUDA_OK(sample_cuda(p, nullptr));
    sync();
    const auto got = download<int32_t>(dout, rows);
    const int top = argmax(row.data(), V);
    EXPECT_EQ(got[0], top);
    EXPECT_EQ(got[1], top);
    int same = 0;
    for (int r = 0; r < rows; ++r) same += got[r] == sample_row(row.data(), V, params[r]);
    EXPECT_GE(same, rows - std::max(1, rows / 200)) << "GPU vs sample_row draws, V " << V;
    const auto nuc = nucleus(row, c.temp, c.top_p, c.top_k);
    const double mx = *std::max_element(row.begin(), row.end());
    auto q = [&](int i) { return std::exp((row[i] - mx) / c.temp); };
    double q_min = 1;
    for (const auto& [tok, pr] : nuc) q_min = std::min(q_min, q(tok));
    std::map<int, int> count;
    for (int r = 2; r < rows; ++r) {
      ASSERT_TRUE(got[r] >= 0 && got[r] < V) << got[r];
      if (!nuc.count(got[r])) {  // only a token tied with the least probable kept one
        EXPECT_GE(q(got[r]), q_min * (1 - 1e-5))
            << "row " << r << " drew " << got[r] << " outside the kept tokens";
      }
      ++count[got[r]];
    }
    double worst = 0;
    if (c.t == CudaDType::kF32) {
      const double n = rows - 2;
      for (const auto& [tok, prob] : nuc) {
        const double sigma = std::sqrt(n * prob * (1 - prob)) + 1.0;
        const double z = std::abs(count[tok] - n * prob) / sigma;
        worst = std::max(worst, z);
        EXPECT_LE(z, 5.0) << "token " << tok << " p " << prob << " count " << count[tok];
      }
    }
    const std::string name = "V" + std::to_string(V) + " T" + std::to_string(c.temp).substr(0, 4) +
                             " p" + std::to_string(c.top_p).substr(0, 4) + " k" +
                             std::to_string(c.top_k) + " " + dtype_name(c.t);
    std::printf("[parity] %-14s %-40s same as sample_row %d/%d, worst |z| %.2f over %zu kept\n",
                "sample", name.c_str(), same, rows, worst, nuc.size());
    // Same seed, stream and counter: the same draw.
    CUDA_OK(sample_cuda(p, nullptr));
    sync();
    EXPECT_EQ(download<int32_t>(dout, rows), got);
  }
  // A NaN or Inf in a row: -1 for that row only, greedy or not.
  std::vector<float> x(3 * 64, 0.5f);
  x[10] = NAN;
  x[64 + 63] = INFINITY;
  std::vector<SampleRow> sp(3);
  sp[1].temperature = 1.0f;
  auto dx = upload(x), dsp = upload(sp);
  Dev dout(3 * 4);
  SampleCudaParams p;
  p.rows = 3, p.vocab = 64, p.logits = dx->ptr, p.params = dsp->as<SampleRow>();
  p.out = dout.as<int32_t>();
  CUDA_OK(sample_cuda(p, nullptr));
  sync();
  EXPECT_EQ(download<int32_t>(dout, 3), (std::vector<int32_t>{-1, -1, 0}));
}

// What sampling on the device costs at the real vocabulary (129280): greedy and top-k + top-p
// rows, batch 1 and 64, one launch timed with events over 20 (printed for bench/RESULTS.md);
// every id in range. Rows "peaked" like a language model's (N(0, 2.5) plus +12 on 50 tokens:
// ~2K candidates above 2^-30 at T 0.8, in shared memory) and "flat" (N(0, 2): ~all 129280 are
// candidates, every bisection pass re-reads the row).
TEST_F(BackendOpsMoe, SampleTiming) {
  const int V = 129280;
  for (int rows : {1, 64})
    for (int kind : {0, 1, 2}) {  // greedy, peaked, flat
      const bool greedy = kind == 0;
      std::vector<float> logits;
      for (int r = 0; r < rows; ++r) {
        auto row = randn(V, rng_, kind == 2 ? 2.0f : 2.5f);
        if (kind != 2)
          for (int j = 0; j < 50; ++j) row[(r * 7919 + j * 2579) % V] += 12.0f;
        logits.insert(logits.end(), row.begin(), row.end());
      }
      std::vector<SampleRow> params(rows);
      for (int r = 0; r < rows; ++r) {
        params[r].temperature = greedy ? 0.0f : 0.8f;
        params[r].top_k = greedy ? 0 : 50;
        params[r].top_p = greedy ? 1.0f : 0.9f;
        params[r].seed = r;
      }
      auto dl = upload(logits), dp = upload(params);
      Dev dout(rows * 4);
      SampleCudaParams p;
      p.rows = rows, p.vocab = V, p.logits = dl->ptr, p.params = dp->as<SampleRow>();
      p.out = dout.as<int32_t>();
      CUDA_OK(sample_cuda(p, nullptr));
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      cudaEventRecord(e0);
      for (int i = 0; i < 20; ++i) CUDA_OK(sample_cuda(p, nullptr));
      cudaEventRecord(e1);
      sync();
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      for (int id : download<int32_t>(dout, rows)) ASSERT_TRUE(id >= 0 && id < V) << id;
      std::printf("[timing] sample V%d rows %d %-32s %.1f us per launch\n", V, rows,
                  kind == 0   ? "greedy"
                  : kind == 1 ? "peaked T0.8 top-k50 top-p0.9"
                              : "flat T0.8 top-k50 top-p0.9",
                  ms * 1000.0f / 20);
    }
}

TEST_F(BackendOpsMoe, AttnPrefill) {
  struct Case {
    int T, H, qk, v;
  };
  for (const Case c : {Case{1, 2, 24, 16}, Case{37, 3, 24, 16}, Case{130, 2, 192, 128}})
    for (CudaDType t : kActs) {
      const auto q = rounded(randn(size_t(c.T) * c.H * c.qk, rng_), t);
      const auto k = rounded(randn(size_t(c.T) * c.H * c.qk, rng_), t);
      const auto v = rounded(randn(size_t(c.T) * c.H * c.v, rng_), t);
      std::vector<float> ref(size_t(c.T) * c.H * c.v);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.qk));
      AttnPrefillParams r;
      r.num_tokens = c.T, r.num_heads = c.H, r.qk_dim = c.qk, r.v_dim = c.v, r.scale = scale;
      r.q = q.data(), r.k = k.data(), r.v = v.data(), r.out = ref.data();
      attn_prefill(r);
      auto dq = upload_as(q, t), dk = upload_as(k, t), dv = upload_as(v, t);
      Dev dout(ref.size() * dtype_size(t));
      dout.poison();
      AttnPrefillCudaParams p;
      p.num_tokens = c.T, p.num_heads = c.H, p.qk_dim = c.qk, p.v_dim = c.v, p.scale = scale;
      p.dtype = t, p.q = dq->ptr, p.k = dk->ptr, p.v = dv->ptr, p.out = dout.ptr;
      CUDA_OK(attn_prefill_cuda(p, nullptr));
      sync();
      const double e = rel_l2(download_as(dout, ref.size(), t), ref), tol = tol_for(t);
      const std::string name = "T" + std::to_string(c.T) + " H" + std::to_string(c.H) + " " +
                               std::to_string(c.qk) + "/" + std::to_string(c.v) + " " +
                               dtype_name(t);
      report("attn_prefill", name, e, tol);
      EXPECT_LE(e, tol) << name;
    }
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
