// Every CPU op of ops.h against a plain float64 implementation written here (random inputs,
// fixed seeds, several sizes). Tolerance: relative L2 1e-5 unless a test states otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "ops/ops.h"

namespace helix {
namespace {

constexpr double kTol = 1e-5;
const float kNinf = -std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// ||got - want|| / ||want|| (want in float64); 0/0 counts as 0.
double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// ---- matmul -----------------------------------------------------------------------------------

struct MmShape {
  int m, n, k;
};
const MmShape kMmShapes[] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 48, 1}, {2, 130, 96}};

// y[m,n] = x[m,k] . op(w) (+ beta*y0) in float64, with leading dimensions.
std::vector<double> ref_mm(const std::vector<float>& x, int ldx, const std::vector<float>& w,
                           int ldw, bool trans_w, const std::vector<float>& y0, int ldy, int m,
                           int n, int k, double beta) {
  std::vector<double> y(y0.begin(), y0.end());
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int l = 0; l < k; ++l)
        acc += double(x[size_t(i) * ldx + l]) *
               (trans_w ? w[size_t(j) * ldw + l] : w[size_t(l) * ldw + j]);
      double& out = y[size_t(i) * ldy + j];
      out = acc + (beta != 0 ? beta * out : 0.0);
    }
  return y;
}

TEST(OpsMatmul, MatmulAndNnMatchFloat64) {
  uint32_t seed = 1;
  for (const auto& s : kMmShapes) {
    for (bool acc : {false, true}) {
      auto x = randn(size_t(s.m) * s.k, seed++);
      auto w = randn(size_t(s.n) * s.k, seed++);
      auto y0 = randn(size_t(s.m) * s.n, seed++);
      // nn.Linear layout: w [n, k].
      std::vector<float> y = y0;
      matmul(x.data(), w.data(), y.data(), s.m, s.n, s.k, acc);
      auto want = ref_mm(x, s.k, w, s.k, true, y0, s.n, s.m, s.n, s.k, acc ? 1.0 : 0.0);
      EXPECT_LT(rel_l2(y, want), kTol) << "matmul " << s.m << "x" << s.n << "x" << s.k;
      // w [k, n].
      y = y0;
      matmul_nn(x.data(), w.data(), y.data(), s.m, s.n, s.k, acc);
      want = ref_mm(x, s.k, w, s.n, false, y0, s.n, s.m, s.n, s.k, acc ? 1.0 : 0.0);
      EXPECT_LT(rel_l2(y, want), kTol) << "matmul_nn " << s.m << "x" << s.n << "x" << s.k;
    }
  }
}

TEST(OpsMatmul, StridedWithPaddingAndBeta) {
  uint32_t seed = 100;
  for (const auto& s : kMmShapes) {
    for (bool trans : {true, false}) {
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const int ldx = s.k + 3, ldy = s.n + 5;
        const int ldw = (trans ? s.k : s.n) + 2;
        const int wrows = trans ? s.n : s.k;
        auto x = randn(size_t(s.m) * ldx, seed++);
        auto w = randn(size_t(wrows) * ldw, seed++);
        auto y0 = randn(size_t(s.m) * ldy, seed++);
        std::vector<float> y = y0;
        matmul_strided(x.data(), ldx, w.data(), ldw, trans, y.data(), ldy, s.m, s.n, s.k, beta);
        auto want = ref_mm(x, ldx, w, ldw, trans, y0, ldy, s.m, s.n, s.k, beta);
        EXPECT_LT(rel_l2(y, want), kTol)
            << s.m << "x" << s.n << "x" << s.k << " trans " << trans << " beta " << beta;
        // The padding columns of y are never written.
        for (int i = 0; i < s.m; ++i)
          for (int j = s.n; j < ldy; ++j)
            ASSERT_EQ(y[size_t(i) * ldy + j], y0[size_t(i) * ldy + j]) << "padding written";
      }
    }
  }
}

TEST(OpsMatmul, KZeroAccumulateKeepsYAndOverwriteGivesZero) {
  const int m = 4, n = 6;
  auto y0 = randn(size_t(m) * n, 7);
  std::vector<float> y = y0;
  // k = 0 with beta = 1: y unchanged (an empty sum added).
  matmul_strided(nullptr, 1, nullptr, 1, true, y.data(), n, m, n, 0, 1.0f);
  EXPECT_EQ(y, y0);
  y = y0;
  matmul(nullptr, nullptr, y.data(), m, n, 0, /*accumulate=*/true);
  EXPECT_EQ(y, y0);
  // k = 0, overwrite: the empty sum is 0.
  y = y0;
  matmul(nullptr, nullptr, y.data(), m, n, 0, false);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// beta = 0 means y is output only (BLAS convention): whatever it held before, even NaN, must not
// leak into the result. Output buffers are often uninitialised.
TEST(OpsMatmul, BetaZeroIgnoresPreviousContentsEvenNaN) {
  for (int k : {0, 3}) {
    const int m = 3, n = 5;
    auto x = randn(size_t(m) * std::max(k, 1), 11);
    auto w = randn(size_t(n) * std::max(k, 1), 12);
    std::vector<float> y(size_t(m) * n, kNaN);
    matmul_strided(x.data(), std::max(k, 1), w.data(), std::max(k, 1), true, y.data(), n, m, n, k,
                   0.0f);
    auto want = ref_mm(x, std::max(k, 1), w, std::max(k, 1), true,
                       std::vector<float>(size_t(m) * n, 0.0f), n, m, n, k, 0.0);
    EXPECT_LT(rel_l2(y, want), kTol) << "k=" << k << " (NaN in y leaked through beta=0)";
  }
}

// ---- rms_norm ---------------------------------------------------------------------------------

std::vector<double> ref_rms(const std::vector<float>& x, int ldx, const std::vector<float>& w,
                            int rows, int dim, double eps) {
  std::vector<double> y(size_t(rows) * dim);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[size_t(r) * ldx + i]) * x[size_t(r) * ldx + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) y[size_t(r) * dim + i] = w[i] * x[size_t(r) * ldx + i] * inv;
  }
  return y;
}

TEST(OpsRmsNorm, ContiguousStridedAndInPlace) {
  uint32_t seed = 200;
  for (int rows : {1, 3, 9}) {
    for (int dim : {1, 7, 48, 512}) {
      for (float eps : {1e-6f, 1e-2f}) {
        auto w = randn(dim, seed++);
        // Contiguous.
        auto x = randn(size_t(rows) * dim, seed++, 3.0f);
        std::vector<float> y(x.size(), kNaN);
        rms_norm(x.data(), w.data(), y.data(), rows, dim, eps);
        EXPECT_LT(rel_l2(y, ref_rms(x, dim, w, rows, dim, eps)), kTol) << rows << "x" << dim;
        // Strided: x rows of ldx, y rows of ldy; y's padding untouched.
        const int ldx = dim + 5, ldy = dim + 2;
        auto xs = randn(size_t(rows) * ldx, seed++);
        std::vector<float> ys(size_t(rows) * ldy, 42.0f);
        rms_norm(xs.data(), w.data(), ys.data(), rows, dim, eps, ldx, ldy);
        std::vector<float> packed;
        for (int r = 0; r < rows; ++r) {
          for (int i = 0; i < dim; ++i) packed.push_back(ys[size_t(r) * ldy + i]);
          for (int i = dim; i < ldy; ++i) ASSERT_EQ(ys[size_t(r) * ldy + i], 42.0f);
        }
        EXPECT_LT(rel_l2(packed, ref_rms(xs, ldx, w, rows, dim, eps)), kTol) << "strided";
        // In place with a stride (the latent half of a [c, k_pe] row, say).
        auto xi = xs;
        rms_norm(xi.data(), w.data(), xi.data(), rows, dim, eps, ldx, ldx);
        std::vector<float> got;
        for (int r = 0; r < rows; ++r) {
          for (int i = 0; i < dim; ++i) got.push_back(xi[size_t(r) * ldx + i]);
          for (int i = dim; i < ldx; ++i)
            ASSERT_EQ(xi[size_t(r) * ldx + i], xs[size_t(r) * ldx + i]);
        }
        EXPECT_LT(rel_l2(got, ref_rms(xs, ldx, w, rows, dim, eps)), kTol) << "in place";
      }
    }
  }
}

// ---- rope -------------------------------------------------------------------------------------

std::vector<double> inv_freq(int dim, double base = 10000.0) {
  std::vector<double> f(dim / 2);
  for (int i = 0; i < dim / 2; ++i) f[i] = std::pow(base, -2.0 * i / dim);
  return f;
}

std::vector<float> cos_sin_at(double pos, const std::vector<double>& freq) {
  const size_t half = freq.size();
  std::vector<float> cs(2 * half);
  for (size_t i = 0; i < half; ++i) {
    cs[i] = static_cast<float>(std::cos(pos * freq[i]));
    cs[i + half] = static_cast<float>(std::sin(pos * freq[i]));
  }
  return cs;
}

// Rotation of one vector in float64: pair (a, b) -> (a c - b s, b c + a s), output first
// halves then second halves.
std::vector<double> ref_rope(const float* x, int dim, const std::vector<float>& cs,
                             bool interleave) {
  const int half = dim / 2;
  std::vector<double> y(dim);
  for (int i = 0; i < half; ++i) {
    const double a = interleave ? x[2 * i] : x[i];
    const double b = interleave ? x[2 * i + 1] : x[i + half];
    const double c = cs[i], s = cs[i + half];
    y[i] = a * c - b * s;
    y[i + half] = b * c + a * s;
  }
  return y;
}

TEST(OpsRope, BothLayoutsMatchFloat64) {
  uint32_t seed = 300;
  for (bool interleave : {true, false}) {
    for (int dim : {2, 8, 16, 64}) {
      for (int n : {1, 4}) {
        for (double pos : {0.0, 1.0, 37.0, 4095.0}) {
          const int stride = dim + 24;  // e.g. q_pe after q_nope: only [0, dim) rotates
          auto x0 = randn(size_t(n) * stride, seed++);
          auto x = x0;
          auto cs = cos_sin_at(pos, inv_freq(dim));
          rope_apply(x.data(), n, stride, dim, cs.data(), interleave);
          std::vector<float> got;
          std::vector<double> want;
          for (int v = 0; v < n; ++v) {
            auto r = ref_rope(x0.data() + size_t(v) * stride, dim, cs, interleave);
            want.insert(want.end(), r.begin(), r.end());
            for (int i = 0; i < dim; ++i) got.push_back(x[size_t(v) * stride + i]);
            for (int i = dim; i < stride; ++i)
              ASSERT_EQ(x[size_t(v) * stride + i], x0[size_t(v) * stride + i]) << "past dim";
          }
          EXPECT_LT(rel_l2(got, want), kTol)
              << "interleave " << interleave << " dim " << dim << " pos " << pos;
        }
      }
    }
  }
}

TEST(OpsRope, PositionZeroIsIdentityUpToLayout) {
  const int dim = 8;
  std::vector<float> x = {0, 1, 2, 3, 4, 5, 6, 7};
  auto cs = cos_sin_at(0.0, inv_freq(dim));
  auto a = x;
  rope_apply(a.data(), 1, dim, dim, cs.data(), false);
  EXPECT_EQ(a, x);
  auto b = x;
  rope_apply(b.data(), 1, dim, dim, cs.data(), true);
  // Interleaved pairs (0,1),(2,3).. are written de-interleaved: evens then odds.
  EXPECT_EQ(b, (std::vector<float>{0, 2, 4, 6, 1, 3, 5, 7}));
}

// q.k after rotating q by p1 and k by p2 depends only on p1 - p2, and equals the closed form
// sum_i (qa ka + qb kb) cos(d w_i) - (qb ka - qa kb) sin(d w_i), d = p1 - p2.
TEST(OpsRope, DotProductDependsOnlyOnRelativePosition) {
  const int dim = 32;
  const auto freq = inv_freq(dim);
  uint32_t seed = 400;
  for (bool interleave : {true, false}) {
    for (auto [p1, p2] : {std::pair{5, 2}, {100, 40}, {7, 7}, {3, 50}}) {
      auto q = randn(dim, seed++), k = randn(dim, seed++);
      // closed form in float64
      double want = 0;
      const int half = dim / 2;
      for (int i = 0; i < half; ++i) {
        const double qa = interleave ? q[2 * i] : q[i],
                     qb = interleave ? q[2 * i + 1] : q[i + half];
        const double ka = interleave ? k[2 * i] : k[i],
                     kb = interleave ? k[2 * i + 1] : k[i + half];
        const double d = double(p1 - p2) * freq[i];
        want += (qa * ka + qb * kb) * std::cos(d) - (qb * ka - qa * kb) * std::sin(d);
      }
      for (int shift : {0, 1, 13, 200}) {
        auto qr = q, kr = k;
        auto c1 = cos_sin_at(p1 + shift, freq), c2 = cos_sin_at(p2 + shift, freq);
        rope_apply(qr.data(), 1, dim, dim, c1.data(), interleave);
        rope_apply(kr.data(), 1, dim, dim, c2.data(), interleave);
        double dot = 0;
        for (int i = 0; i < dim; ++i) dot += double(qr[i]) * kr[i];
        double norm = 0;
        for (int i = 0; i < dim; ++i) norm += std::abs(double(q[i]) * k[i]);
        EXPECT_NEAR(dot, want, 1e-5 * norm)
            << "interleave " << interleave << " p1 " << p1 << " p2 " << p2 << " shift " << shift;
      }
    }
  }
}

// ---- silu_mul ---------------------------------------------------------------------------------

TEST(OpsSiluMul, MatchesFloat64) {
  uint32_t seed = 500;
  for (int64_t n : {1, 7, 1000, 70000}) {
    auto gate = randn(n, seed++, 4.0f), up = randn(n, seed++);
    if (n > 4) {  // saturated ends
      gate[0] = 30.0f;
      gate[1] = -30.0f;
      gate[2] = -100.0f;
      gate[3] = 0.0f;
    }
    std::vector<float> out(n, kNaN);
    silu_mul(gate.data(), up.data(), out.data(), n);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i)
      want[i] = double(gate[i]) / (1.0 + std::exp(-double(gate[i]))) * up[i];
    EXPECT_LT(rel_l2(out, want), kTol) << n;
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(out[i], want[i], 1e-6 * (1 + std::abs(want[i]))) << i;
  }
}

// ---- moe_route --------------------------------------------------------------------------------

struct RouteRef {
  std::vector<int> ids;        // chosen experts (any order)
  std::vector<double> weight;  // weight of ids[i]
  double margin;               // smallest gap at a decision boundary (ties make the set ambiguous)
};

RouteRef ref_route(const float* logit, const float* bias, int E, int G, int topk_group, int top_k,
                   bool norm, double scaling) {
  const int per = E / G;
  std::vector<double> score(E), choice(E);
  for (int e = 0; e < E; ++e) {
    score[e] = 1.0 / (1.0 + std::exp(-double(logit[e])));
    choice[e] = score[e] + (bias ? bias[e] : 0.0);
  }
  std::vector<double> gscore(G);
  for (int g = 0; g < G; ++g) {
    std::vector<double> v(choice.begin() + g * per, choice.begin() + (g + 1) * per);
    std::sort(v.rbegin(), v.rend());
    gscore[g] = v[0] + v[1];
  }
  std::vector<int> gorder(G);
  std::iota(gorder.begin(), gorder.end(), 0);
  std::sort(gorder.begin(), gorder.end(), [&](int a, int b) { return gscore[a] > gscore[b]; });
  double margin = INFINITY;
  if (topk_group < G) margin = gscore[gorder[topk_group - 1]] - gscore[gorder[topk_group]];
  std::vector<int> cand;
  for (int i = 0; i < topk_group; ++i)
    for (int e = gorder[i] * per; e < (gorder[i] + 1) * per; ++e) cand.push_back(e);
  std::sort(cand.begin(), cand.end(), [&](int a, int b) { return choice[a] > choice[b]; });
  if (top_k < static_cast<int>(cand.size()))
    margin = std::min(margin, choice[cand[top_k - 1]] - choice[cand[top_k]]);
  RouteRef r;
  r.margin = margin;
  double sum = 0;
  for (int i = 0; i < top_k; ++i) {
    r.ids.push_back(cand[i]);
    sum += score[cand[i]];
  }
  for (int i = 0; i < top_k; ++i) {
    double w = score[cand[i]];
    if (norm) w /= (sum + 1e-20);
    r.weight.push_back(w * scaling);
  }
  return r;
}

struct RouteCase {
  int E, G, topk_group, top_k;
  bool norm;
  float scaling;
  bool bias;
};

TEST(OpsMoeRoute, MatchesDeepSeekV3RulesAsSets) {
  const RouteCase cases[] = {
      {16, 4, 2, 4, true, 2.5f, true},  {16, 4, 2, 4, false, 1.0f, false},
      {64, 8, 4, 8, true, 2.5f, true},  {8, 1, 1, 2, true, 1.0f, true},
      {256, 8, 4, 8, true, 2.5f, true}, {32, 4, 4, 6, false, 1.5f, true},
      {12, 6, 1, 2, true, 1.0f, true},
  };
  uint32_t seed = 600;
  int checked = 0, skipped = 0;
  for (const auto& c : cases) {
    const int T = 40;
    auto logits = randn(size_t(T) * c.E, seed++, 2.0f);
    std::vector<float> bias(c.E);
    {
      std::mt19937 g(seed++);
      std::uniform_real_distribution<float> d(-0.3f, 0.3f);
      for (auto& b : bias) b = d(g);
    }
    std::vector<int> ids(size_t(T) * c.top_k, -1);
    std::vector<float> w(size_t(T) * c.top_k, kNaN);
    MoeRouteParams p;
    p.num_tokens = T;
    p.num_experts = c.E;
    p.top_k = c.top_k;
    p.n_group = c.G;
    p.topk_group = c.topk_group;
    p.norm_topk_prob = c.norm;
    p.routed_scaling_factor = c.scaling;
    p.logits = logits.data();
    p.bias = c.bias ? bias.data() : nullptr;
    p.expert_ids = ids.data();
    p.weights = w.data();
    moe_route(p);
    for (int t = 0; t < T; ++t) {
      RouteRef r = ref_route(logits.data() + size_t(t) * c.E, c.bias ? bias.data() : nullptr, c.E,
                             c.G, c.topk_group, c.top_k, c.norm, c.scaling);
      if (r.margin < 1e-5) {  // float32 rounding could legitimately pick either side
        ++skipped;
        continue;
      }
      ++checked;
      std::vector<std::pair<int, double>> want, got;
      for (int i = 0; i < c.top_k; ++i) {
        want.push_back({r.ids[i], r.weight[i]});
        got.push_back({ids[size_t(t) * c.top_k + i], w[size_t(t) * c.top_k + i]});
      }
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      for (int i = 0; i < c.top_k; ++i) {
        ASSERT_EQ(got[i].first, want[i].first) << "E " << c.E << " token " << t;
        EXPECT_NEAR(got[i].second, want[i].second, 1e-6 * (1 + std::abs(want[i].second)))
            << "E " << c.E << " token " << t << " expert " << want[i].first;
      }
      std::set<int> uniq(ids.begin() + size_t(t) * c.top_k, ids.begin() + size_t(t + 1) * c.top_k);
      EXPECT_EQ(static_cast<int>(uniq.size()), c.top_k) << "duplicate expert";
    }
  }
  EXPECT_GT(checked, 20 * skipped + 100) << "too many near-ties skipped";
}

// Hand-built token: the single best expert sits in a group whose second-best is poor, so the
// group loses; a low-score expert with a big bias is chosen but weighted by its unbiased score.
TEST(OpsMoeRoute, GroupLimitAndBiasOnlySteersSelection) {
  const int E = 8, G = 4;  // groups {0,1} {2,3} {4,5} {6,7}
  auto logit_of = [](double s) { return static_cast<float>(std::log(s / (1 - s))); };
  std::vector<float> logits = {logit_of(0.99), logit_of(0.01),   // group 0: sum 1.00
                               logit_of(0.80), logit_of(0.70),   // group 1: 1.50
                               logit_of(0.60), logit_of(0.55),   // group 2: 1.15
                               logit_of(0.10), logit_of(0.05)};  // group 3: 0.15 (+bias)
  std::vector<float> bias = {0, 0, 0, 0, 0, 0, 0.9f, 0.0f};      // group 3 biased: 1.05
  std::vector<int> ids(3);
  std::vector<float> w(3);
  MoeRouteParams p;
  p.num_tokens = 1;
  p.num_experts = E;
  p.top_k = 3;
  p.n_group = G;
  p.topk_group = 2;
  p.norm_topk_prob = true;
  p.routed_scaling_factor = 2.0f;
  p.logits = logits.data();
  p.bias = bias.data();
  p.expert_ids = ids.data();
  p.weights = w.data();
  moe_route(p);
  // Groups kept: 1 (1.50) and 2 (1.15); expert 0 (0.99) is excluded with its group.
  std::vector<std::pair<int, float>> got = {{ids[0], w[0]}, {ids[1], w[1]}, {ids[2], w[2]}};
  std::sort(got.begin(), got.end());
  const double sum = 0.80 + 0.70 + 0.60;
  ASSERT_EQ(got[0].first, 2);
  ASSERT_EQ(got[1].first, 3);
  ASSERT_EQ(got[2].first, 4);
  EXPECT_NEAR(got[0].second, 2.0 * 0.80 / sum, 1e-6);
  EXPECT_NEAR(got[1].second, 2.0 * 0.70 / sum, 1e-6);
  EXPECT_NEAR(got[2].second, 2.0 * 0.60 / sum, 1e-6);

  // A larger bias lifts group 3 above group 2 and expert 6 into the top 3, with weight from its
  // unbiased score 0.10.
  bias[6] = 1.3f;  // group 3: 1.40 + 0.05
  p.norm_topk_prob = false;
  moe_route(p);
  got = {{ids[0], w[0]}, {ids[1], w[1]}, {ids[2], w[2]}};
  std::sort(got.begin(), got.end());
  ASSERT_EQ(got[0].first, 2);
  ASSERT_EQ(got[1].first, 3);
  ASSERT_EQ(got[2].first, 6);
  EXPECT_NEAR(got[2].second, 2.0 * 0.10, 1e-6);
}

// ---- attn_prefill -----------------------------------------------------------------------------

TEST(OpsAttnPrefill, CausalMatchesFloat64) {
  uint32_t seed = 700;
  struct S {
    int T, H, D, V;
  };
  for (const S& s : {S{1, 1, 8, 8}, S{5, 3, 24, 16}, S{17, 2, 32, 8}, S{40, 4, 16, 24}}) {
    auto q = randn(size_t(s.T) * s.H * s.D, seed++), k = randn(size_t(s.T) * s.H * s.D, seed++),
         v = randn(size_t(s.T) * s.H * s.V, seed++);
    const float scale = 1.0f / std::sqrt(float(s.D)) * 1.7f;
    std::vector<float> out(size_t(s.T) * s.H * s.V, kNaN);
    AttnPrefillParams p;
    p.num_tokens = s.T;
    p.num_heads = s.H;
    p.qk_dim = s.D;
    p.v_dim = s.V;
    p.scale = scale;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.out = out.data();
    attn_prefill(p);
    std::vector<double> want(out.size());
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h) {
        std::vector<double> sc(t + 1);
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < s.D; ++i)
            d += double(q[(size_t(t) * s.H + h) * s.D + i]) * k[(size_t(j) * s.H + h) * s.D + i];
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& x : sc) sum += (x = std::exp(x - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < s.V; ++i)
            want[(size_t(t) * s.H + h) * s.V + i] +=
                sc[j] / sum * v[(size_t(j) * s.H + h) * s.V + i];
      }
    EXPECT_LT(rel_l2(out, want), kTol) << "T " << s.T << " H " << s.H;
  }
}

// ---- mla_decode -------------------------------------------------------------------------------

// Absorbed MLA over paged blocks against naive attention with decompressed per-head K and V:
// k_nope[h,t] = W_UK[h] c_t, v[h,t] = W_UV[h] c_t, score = scale (q_nope.k_nope + q_pe.k_pe).
void check_mla(int H, int nope, int L, int R, int V, const std::vector<int>& lens, uint32_t seed) {
  int T = 0;
  for (int l : lens) T += l;
  auto wuk = randn(size_t(H) * nope * L, seed + 1, 0.3f);  // [H, nope, L]
  auto wuv = randn(size_t(H) * V * L, seed + 2, 0.3f);     // [H, V, L]
  auto c = randn(size_t(T) * L, seed + 3);                 // [T, L]
  auto kpe = randn(size_t(T) * R, seed + 4);               // [T, R]
  auto qn = randn(size_t(H) * nope, seed + 5);             // [H, nope]
  auto qpe = randn(size_t(H) * R, seed + 6);               // [H, R]
  const double scale = 1.0 / std::sqrt(double(nope + R));

  // Naive reference in float64.
  std::vector<double> want_v(size_t(H) * V), want_lse(H);
  for (int h = 0; h < H; ++h) {
    std::vector<double> sc(T);
    double mx = -INFINITY;
    for (int t = 0; t < T; ++t) {
      double d = 0;
      for (int i = 0; i < nope; ++i) {
        double kn = 0;
        for (int l = 0; l < L; ++l)
          kn += double(wuk[(size_t(h) * nope + i) * L + l]) * c[size_t(t) * L + l];
        d += double(qn[size_t(h) * nope + i]) * kn;
      }
      for (int i = 0; i < R; ++i) d += double(qpe[size_t(h) * R + i]) * kpe[size_t(t) * R + i];
      sc[t] = d * scale;
      mx = std::max(mx, sc[t]);
    }
    double sum = 0;
    for (auto& x : sc) sum += (x = std::exp(x - mx));
    want_lse[h] = T ? mx + std::log(sum) : -INFINITY;
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < V; ++j) {
        double vv = 0;
        for (int l = 0; l < L; ++l)
          vv += double(wuv[(size_t(h) * V + j) * L + l]) * c[size_t(t) * L + l];
        want_v[size_t(h) * V + j] += sc[t] / sum * vv;
      }
  }

  // Absorbed query [H, L + R] = [W_UK^T q_nope, q_pe].
  const int W = L + R;
  std::vector<float> q(size_t(H) * W);
  for (int h = 0; h < H; ++h) {
    for (int l = 0; l < L; ++l) {
      double a = 0;
      for (int i = 0; i < nope; ++i)
        a += double(wuk[(size_t(h) * nope + i) * L + l]) * qn[size_t(h) * nope + i];
      q[size_t(h) * W + l] = static_cast<float>(a);
    }
    for (int i = 0; i < R; ++i) q[size_t(h) * W + L + i] = qpe[size_t(h) * R + i];
  }
  // Paged blocks of capacity 8 (rows past the valid length hold NaN: never read).
  const int cap = 8;
  std::vector<std::vector<float>> store;
  std::vector<const float*> ptrs;
  int t0 = 0;
  for (int len : lens) {
    EXPECT_LE(len, cap);
    std::vector<float> blk(size_t(cap) * W, kNaN);
    for (int j = 0; j < len; ++j) {
      for (int l = 0; l < L; ++l) blk[size_t(j) * W + l] = c[size_t(t0 + j) * L + l];
      for (int i = 0; i < R; ++i) blk[size_t(j) * W + L + i] = kpe[size_t(t0 + j) * R + i];
    }
    t0 += len;
    store.push_back(std::move(blk));
  }
  for (auto& b : store) ptrs.push_back(b.data());
  std::vector<float> out(size_t(H) * L, kNaN), lse(H, kNaN);
  MlaDecodeParams p;
  p.num_heads = H;
  p.kv_lora_rank = L;
  p.rope_dim = R;
  p.num_blocks = static_cast<int>(lens.size());
  p.scale = static_cast<float>(scale);
  p.q = q.data();
  p.blocks = ptrs.data();
  p.block_len = lens.data();
  p.out = out.data();
  p.lse = lse.data();
  mla_decode(p);

  if (T == 0) {
    for (float v : out) EXPECT_EQ(v, 0.0f);
    for (float v : lse) EXPECT_TRUE(std::isinf(v) && v < 0) << v;
    return;
  }
  // Up-project the latent output with W_UV and compare to the naive output.
  std::vector<float> got_v(size_t(H) * V);
  for (int h = 0; h < H; ++h)
    for (int j = 0; j < V; ++j) {
      double a = 0;
      for (int l = 0; l < L; ++l)
        a += double(wuv[(size_t(h) * V + j) * L + l]) * out[size_t(h) * L + l];
      got_v[size_t(h) * V + j] = static_cast<float>(a);
    }
  EXPECT_LT(rel_l2(got_v, want_v), kTol) << "H " << H << " T " << T;
  for (int h = 0; h < H; ++h)
    EXPECT_NEAR(lse[h], want_lse[h], 1e-5 * (1 + std::abs(want_lse[h]))) << "head " << h;
}

TEST(OpsMlaDecode, AbsorbedEqualsNaiveDecompressed) {
  check_mla(1, 8, 16, 4, 8, {5}, 800);
  check_mla(4, 16, 32, 16, 16, {8, 8, 3}, 810);
  check_mla(8, 16, 64, 8, 24, {1}, 820);
  check_mla(3, 12, 32, 8, 12, {8, 8, 8, 8, 8, 8, 2}, 830);
}

TEST(OpsMlaDecode, UnevenAndEmptyBlocks) {
  check_mla(4, 16, 32, 16, 16, {0, 7, 0, 1, 8, 0}, 840);
  check_mla(2, 8, 16, 8, 8, {3, 0}, 850);
  check_mla(2, 8, 16, 8, 8, {0, 0, 2}, 860);
}

TEST(OpsMlaDecode, NoTokensGivesZeroAndMinusInf) {
  check_mla(4, 16, 32, 16, 16, {}, 870);
  check_mla(4, 16, 32, 16, 16, {0, 0, 0}, 880);
}

// ---- attn_combine -----------------------------------------------------------------------------

struct Partial {
  std::vector<float> out;  // [parts, rows, dim]
  std::vector<float> lse;  // [parts, rows]
};

std::vector<float> combine(const Partial& pp, int parts, int rows, int dim,
                           std::vector<float>* out_lse = nullptr) {
  std::vector<float> out(size_t(rows) * dim, kNaN);
  AttnCombineParams p;
  p.num_parts = parts;
  p.rows = rows;
  p.dim = dim;
  p.parts = pp.out.data();
  p.lse = pp.lse.data();
  p.out = out.data();
  if (out_lse) {
    out_lse->assign(rows, kNaN);
    p.out_lse = out_lse->data();
  }
  attn_combine(p);
  return out;
}

// Full softmax over S keys per row in float64 vs. the combination of N chunk softmaxes.
TEST(OpsAttnCombine, ChunkedSoftmaxCombinesToFullSoftmax) {
  const int rows = 3, dim = 16, S = 150;
  std::mt19937 g(900);
  for (int N = 1; N <= 64; ++N) {
    auto sc = randn(size_t(rows) * S, 1000 + N, 2.0f);  // [rows, S] scores
    auto val = randn(size_t(S) * dim, 2000 + N);        // [S, dim] values
    // Random chunk boundaries: chunks may be empty (a CP rank with no KV yet).
    std::vector<int> cut = {0, S};
    std::uniform_int_distribution<int> d(0, S);
    for (int i = 0; i < N - 1; ++i) cut.push_back(d(g));
    std::sort(cut.begin(), cut.end());
    Partial pp;
    pp.out.assign(size_t(N) * rows * dim, 0.0f);
    pp.lse.assign(size_t(N) * rows, kNinf);
    int empty = 0;
    for (int i = 0; i < N; ++i) {
      const int a = cut[i], b = cut[i + 1];
      if (a == b) ++empty;
      for (int r = 0; r < rows; ++r) {
        if (a == b) continue;  // O = 0, lse = -inf
        double mx = -INFINITY;
        for (int t = a; t < b; ++t) mx = std::max(mx, double(sc[size_t(r) * S + t]));
        double sum = 0;
        std::vector<double> o(dim);
        for (int t = a; t < b; ++t) {
          const double e = std::exp(sc[size_t(r) * S + t] - mx);
          sum += e;
          for (int j = 0; j < dim; ++j) o[j] += e * val[size_t(t) * dim + j];
        }
        for (int j = 0; j < dim; ++j) pp.out[(size_t(i) * rows + r) * dim + j] = float(o[j] / sum);
        pp.lse[size_t(i) * rows + r] = float(mx + std::log(sum));
      }
    }
    std::vector<double> want(size_t(rows) * dim), want_lse(rows);
    for (int r = 0; r < rows; ++r) {
      double mx = -INFINITY;
      for (int t = 0; t < S; ++t) mx = std::max(mx, double(sc[size_t(r) * S + t]));
      double sum = 0;
      for (int t = 0; t < S; ++t) {
        const double e = std::exp(sc[size_t(r) * S + t] - mx);
        sum += e;
        for (int j = 0; j < dim; ++j) want[size_t(r) * dim + j] += e * val[size_t(t) * dim + j];
      }
      for (int j = 0; j < dim; ++j) want[size_t(r) * dim + j] /= sum;
      want_lse[r] = mx + std::log(sum);
    }
    std::vector<float> lse;
    auto out = combine(pp, N, rows, dim, &lse);
    EXPECT_LT(rel_l2(out, want), kTol) << "N " << N << " (" << empty << " empty)";
    for (int r = 0; r < rows; ++r)
      EXPECT_NEAR(lse[r], want_lse[r], 1e-5 * (1 + std::abs(want_lse[r]))) << "N " << N;
  }
}

TEST(OpsAttnCombine, Associative) {
  const int rows = 5, dim = 12;
  Partial abc;
  abc.out = randn(size_t(3) * rows * dim, 3000);
  abc.lse = randn(size_t(3) * rows, 3001, 3.0f);
  abc.lse[1 * rows + 2] = kNinf;  // b has no keys on row 2
  abc.lse[0 * rows + 4] = kNinf;  // a and b none on row 4
  abc.lse[1 * rows + 4] = kNinf;
  std::fill_n(abc.out.begin() + (1 * rows + 2) * dim, dim, 0.0f);
  std::fill_n(abc.out.begin() + (0 * rows + 4) * dim, dim, 0.0f);
  std::fill_n(abc.out.begin() + (1 * rows + 4) * dim, dim, 0.0f);
  std::vector<float> lse_all;
  auto all = combine(abc, 3, rows, dim, &lse_all);
  // combine(a, b) first (the first two parts), then with c.
  Partial ab{std::vector<float>(abc.out.begin(), abc.out.begin() + 2 * rows * dim),
             std::vector<float>(abc.lse.begin(), abc.lse.begin() + 2 * rows)};
  std::vector<float> lse_ab;
  auto o_ab = combine(ab, 2, rows, dim, &lse_ab);
  Partial ab_c;
  ab_c.out = o_ab;
  ab_c.out.insert(ab_c.out.end(), abc.out.begin() + 2 * rows * dim, abc.out.end());
  ab_c.lse = lse_ab;
  ab_c.lse.insert(ab_c.lse.end(), abc.lse.begin() + 2 * rows, abc.lse.end());
  std::vector<float> lse_two;
  auto two = combine(ab_c, 2, rows, dim, &lse_two);
  EXPECT_LT(rel_l2(two, std::vector<double>(all.begin(), all.end())), 1e-6);
  for (int r = 0; r < rows; ++r)
    EXPECT_NEAR(lse_two[r], lse_all[r], 1e-5 * (1 + std::abs(lse_all[r])));
  // Grouped the other way: a with combine(b, c).
  Partial bc{std::vector<float>(abc.out.begin() + rows * dim, abc.out.end()),
             std::vector<float>(abc.lse.begin() + rows, abc.lse.end())};
  std::vector<float> lse_bc;
  auto o_bc = combine(bc, 2, rows, dim, &lse_bc);
  Partial a_bc;
  a_bc.out.assign(abc.out.begin(), abc.out.begin() + rows * dim);
  a_bc.out.insert(a_bc.out.end(), o_bc.begin(), o_bc.end());
  a_bc.lse.assign(abc.lse.begin(), abc.lse.begin() + rows);
  a_bc.lse.insert(a_bc.lse.end(), lse_bc.begin(), lse_bc.end());
  auto two2 = combine(a_bc, 2, rows, dim);
  EXPECT_LT(rel_l2(two2, std::vector<double>(all.begin(), all.end())), 1e-6);
}

TEST(OpsAttnCombine, MinusInfPartsContributeNothingNeverNaN) {
  const int rows = 4, dim = 8, N = 5;
  Partial pp;
  pp.out = randn(size_t(N) * rows * dim, 4000);
  pp.lse = randn(size_t(N) * rows, 4001);
  // Rows 0..2: some parts have no keys; their (unused) outputs hold garbage, even NaN / inf.
  for (auto [i, r] : {std::pair{0, 0}, {3, 0}, {1, 1}, {2, 2}, {3, 2}, {4, 2}}) {
    pp.lse[size_t(i) * rows + r] = kNinf;
    for (int j = 0; j < dim; ++j) pp.out[(size_t(i) * rows + r) * dim + j] = (j % 2) ? kNaN : 1e30f;
  }
  // Row 3: every part empty.
  for (int i = 0; i < N; ++i) {
    pp.lse[size_t(i) * rows + 3] = kNinf;
    for (int j = 0; j < dim; ++j) pp.out[(size_t(i) * rows + 3) * dim + j] = 0.0f;
  }
  std::vector<float> lse;
  auto out = combine(pp, N, rows, dim, &lse);
  for (int r = 0; r < 3; ++r) {
    // Reference from the finite parts only.
    double mx = -INFINITY;
    for (int i = 0; i < N; ++i) mx = std::max(mx, double(pp.lse[size_t(i) * rows + r]));
    double sum = 0;
    for (int i = 0; i < N; ++i) sum += std::exp(pp.lse[size_t(i) * rows + r] - mx);
    std::vector<float> got(out.begin() + r * dim, out.begin() + (r + 1) * dim);
    std::vector<double> want(dim);
    for (int i = 0; i < N; ++i) {
      if (std::isinf(pp.lse[size_t(i) * rows + r])) continue;
      const double w = std::exp(pp.lse[size_t(i) * rows + r] - mx) / sum;
      for (int j = 0; j < dim; ++j) want[j] += w * pp.out[(size_t(i) * rows + r) * dim + j];
    }
    EXPECT_LT(rel_l2(got, want), kTol) << "row " << r;
    EXPECT_NEAR(lse[r], mx + std::log(sum), 1e-5 * (1 + std::abs(mx)));
  }
  for (int j = 0; j < dim; ++j) EXPECT_EQ(out[3 * dim + j], 0.0f) << "all-empty row";
  EXPECT_TRUE(std::isinf(lse[3]) && lse[3] < 0) << lse[3];

  // A single part with no keys, and zero parts at all.
  Partial one{std::vector<float>(dim, 0.0f), std::vector<float>{kNinf}};
  std::vector<float> l1;
  auto o1 = combine(one, 1, 1, dim, &l1);
  for (float v : o1) EXPECT_EQ(v, 0.0f);
  EXPECT_TRUE(std::isinf(l1[0]) && l1[0] < 0);
  Partial none;
  none.out.assign(1, 0.0f);
  none.lse.assign(1, 0.0f);
  auto o0 = combine(none, 0, 1, dim, &l1);
  for (float v : o0) EXPECT_EQ(v, 0.0f);
  EXPECT_TRUE(std::isinf(l1[0]) && l1[0] < 0);
}

TEST(OpsAttnCombine, LargeLseMagnitudesStayFinite) {
  const int dim = 4;
  for (float big : {80.0f, 500.0f}) {
    // Parts at +big, +big-0.5, -big (negligible) and a near-tie; row 1 all at -big.
    const std::vector<float> l = {big,  big - 0.5f, -big, big - 3.0f,  //
                                  -big, -big,       -big, -big + 1.0f};
    Partial pp;
    pp.lse.resize(8);
    pp.out = randn(8 * dim, 5000);
    // Layout [parts=4, rows=2]
    for (int i = 0; i < 4; ++i) {
      pp.lse[i * 2 + 0] = l[i];
      pp.lse[i * 2 + 1] = l[4 + i];
    }
    std::vector<float> lse;
    auto out = combine(pp, 4, 2, dim, &lse);
    for (int r = 0; r < 2; ++r) {
      double mx = -INFINITY;
      for (int i = 0; i < 4; ++i) mx = std::max(mx, double(pp.lse[i * 2 + r]));
      double sum = 0;
      for (int i = 0; i < 4; ++i) sum += std::exp(pp.lse[i * 2 + r] - mx);
      std::vector<double> want(dim);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < dim; ++j)
          want[j] += std::exp(pp.lse[i * 2 + r] - mx) / sum * pp.out[(i * 2 + r) * dim + j];
      std::vector<float> got(out.begin() + r * dim, out.begin() + (r + 1) * dim);
      // An fp32 lse of magnitude 500 carries an absolute rounding of ~3e-5 (ulp), which the
      // combined weights inherit; at 80 the ulp is ~8e-6.
      EXPECT_LT(rel_l2(got, want), big > 100 ? 1e-4 : kTol) << "big " << big << " row " << r;
      ASSERT_TRUE(std::isfinite(lse[r]));
      EXPECT_NEAR(lse[r], mx + std::log(sum), 1e-6 * std::abs(mx));
    }
  }
}

TEST(OpsSoftmaxState, MergeIsLogSumExpAndIgnoresMinusInf) {
  std::mt19937 g(6000);
  std::uniform_real_distribution<float> d(-90.0f, 90.0f);
  for (int n : {1, 2, 5, 64}) {
    SoftmaxState st;
    EXPECT_TRUE(std::isinf(st.lse) && st.lse < 0);
    std::vector<double> xs;
    for (int i = 0; i < n; ++i) {
      float x = d(g);
      xs.push_back(x);
      st.merge(x);
      st.merge(kNinf);  // a part with no keys changes nothing
    }
    const double mx = *std::max_element(xs.begin(), xs.end());
    double sum = 0;
    for (double x : xs) sum += std::exp(x - mx);
    const double want = mx + std::log(sum);
    EXPECT_NEAR(st.lse, want, 1e-5 * (1 + std::abs(want))) << n;
    // Weights of the parts inside the merged state sum to one.
    double wsum = 0;
    for (double x : xs) wsum += st.weight_of(static_cast<float>(x));
    EXPECT_NEAR(wsum, 1.0, 1e-5) << n;
  }
  SoftmaxState empty;
  empty.merge(kNinf);
  EXPECT_TRUE(std::isinf(empty.lse) && empty.lse < 0);
  EXPECT_EQ(empty.weight_of(3.0f), 0.0f);
  EXPECT_EQ(empty.weight_of(kNinf), 0.0f);
  SoftmaxState two;
  two.merge(0.0f);
  two.merge(0.0f);
  EXPECT_NEAR(two.lse, std::log(2.0), 1e-6);
  EXPECT_NEAR(two.weight_of(0.0f), 0.5, 1e-6);
  EXPECT_EQ(two.weight_of(kNinf), 0.0f);
}

}  // namespace
}  // namespace helix
