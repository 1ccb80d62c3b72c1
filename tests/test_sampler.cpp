// Sampling: greedy = first argmax; temperature sampling follows softmax(logits / T) (frequencies
// over many draws within 0.01 of the float64 probabilities); top-k keeps the k most probable;
// top-p keeps the smallest nucleus; a seed reproduces the same draws. The counter-based sampler
// of the GPU path (ops/sample.h, its CPU reference sample_row): Philox-4x32-10 known answers,
// the same kept tokens as the Sampler, softmax frequencies, one draw per (seed, stream, counter).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "fixture_util.h"
#include "model/deepseek.h"
#include "ops/sample.h"

namespace helix {
namespace {

TEST(Sampler, GreedyTakesFirstMaximum) {
  std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(argmax(x.data(), 4), 1);
  Sampler s(SamplingConfig{});
  EXPECT_EQ(s.sample(x.data(), 4), 1);
}

TEST(Sampler, TemperatureFollowsSoftmax) {
  std::vector<float> x = {1.0f, 0.0f, -0.5f, 2.0f, 0.3f};
  SamplingConfig c;
  c.temperature = 0.7f;
  c.seed = 42;
  Sampler s(c);
  const int n = 40000;
  std::vector<int> hits(x.size(), 0);
  for (int i = 0; i < n; ++i) hits[s.sample(x.data(), 5)]++;
  double z = 0;
  for (float v : x) z += std::exp(v / 0.7);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(double(hits[i]) / n, std::exp(x[i] / 0.7) / z, 0.01) << "token " << i;
}

TEST(Sampler, TopPKeepsTheNucleus) {
  // Probabilities (T=1): 0.208, 0.077, 0.046, 0.566, 0.103; top_p 0.5 keeps token 3 alone.
  std::vector<float> x = {1.0f, 0.0f, -0.5f, 2.0f, 0.3f};
  SamplingConfig c;
  c.temperature = 1.0f;
  c.top_p = 0.5f;
  Sampler s(c);
  for (int i = 0; i < 500; ++i) EXPECT_EQ(s.sample(x.data(), 5), 3);
  // top_p 0.85: tokens 3 and 0 hold 0.774 < 0.85, so token 4 joins (0.877).
  // Every nucleus token is drawn, in proportion to its renormalised probability (within 0.015
  // over 20000 draws, ~5 sigma); no token outside is ever drawn.
  c.top_p = 0.85f;
  Sampler s2(c);
  const int n = 20000;
  std::vector<int> hits(5, 0);
  for (int i = 0; i < n; ++i) hits[s2.sample(x.data(), 5)]++;
  EXPECT_EQ(hits[1], 0);
  EXPECT_EQ(hits[2], 0);
  double z = 0;
  for (int t : {3, 0, 4}) z += std::exp(x[t]);
  for (int t : {3, 0, 4}) {
    EXPECT_GT(hits[t], 0) << "nucleus token " << t << " never drawn";
    EXPECT_NEAR(double(hits[t]) / n, std::exp(x[t]) / z, 0.015) << "token " << t;
  }
}

TEST(Sampler, RejectsNonFiniteParameters) {
  for (float t : {NAN, INFINITY, -1.0f, 1e9f}) {
    SamplingConfig c;
    c.temperature = t;
    EXPECT_THROW(sampling_validate(c), Error) << t;
    EXPECT_THROW(Sampler{c}, Error) << t;
  }
  for (float p : {NAN, -0.1f, 1.5f}) {
    SamplingConfig c;
    c.top_p = p;
    EXPECT_THROW(sampling_validate(c), Error) << p;
  }
}

TEST(Sampler, SeedReproduces) {
  std::vector<float> x(50);
  for (int i = 0; i < 50; ++i) x[i] = std::sin(i * 0.7f);
  SamplingConfig c;
  c.temperature = 1.3f;
  c.top_p = 0.9f;
  c.seed = 7;
  Sampler a(c), b(c);
  c.seed = 8;
  Sampler d(c);
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    const int ta = a.sample(x.data(), 50);
    EXPECT_EQ(ta, b.sample(x.data(), 50));
    differ += ta != d.sample(x.data(), 50);
  }
  EXPECT_GT(differ, 0);
}

TEST(Sampler, TopKKeepsTheKMostProbable) {
  // Probabilities (T=1): 0.208, 0.077, 0.046, 0.566, 0.103; top_k 2 keeps tokens 3 and 0.
  std::vector<float> x = {1.0f, 0.0f, -0.5f, 2.0f, 0.3f};
  SamplingConfig c;
  c.temperature = 1.0f;
  c.top_k = 2;
  c.seed = 3;
  Sampler s(c);
  const int n = 20000;
  std::vector<int> hits(5, 0);
  for (int i = 0; i < n; ++i) hits[s.sample(x.data(), 5)]++;
  const double z = std::exp(2.0) + std::exp(1.0);
  EXPECT_EQ(hits[1] + hits[2] + hits[4], 0);
  EXPECT_NEAR(double(hits[3]) / n, std::exp(2.0) / z, 0.015);
  // top_k 3 then top_p 0.8 of what is left (0.566, 0.208, 0.103 renormalised: 0.647, 0.238,
  // 0.118): tokens 3 and 0 hold 0.885 >= 0.8, token 4 goes.
  c.top_k = 3;
  c.top_p = 0.8f;
  Sampler s2(c);
  for (int i = 0; i < 2000; ++i) {
    const int t = s2.sample(x.data(), 5);
    EXPECT_TRUE(t == 3 || t == 0) << t;
  }
  c.top_k = -1;
  EXPECT_THROW(sampling_validate(c), Error);
}

TEST(CounterSampler, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32-10.
  Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(a.x, 0x6627e8d5u);
  EXPECT_EQ(a.y, 0xe169c58du);
  EXPECT_EQ(a.z, 0xbc57ac4cu);
  EXPECT_EQ(a.w, 0x9b00dbd8u);
  Philox4 b = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(b.x, 0x408f276du);
  EXPECT_EQ(b.y, 0x41c83b0eu);
  EXPECT_EQ(b.z, 0xa20bc7c6u);
  EXPECT_EQ(b.w, 0x6d5451fdu);
  Philox4 c =
      philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c.x, 0xd16cfe09u);
  EXPECT_EQ(c.y, 0x94fdccebu);
  EXPECT_EQ(c.z, 0x5001e420u);
  EXPECT_EQ(c.w, 0x24126ea1u);
}

TEST(CounterSampler, GreedyAndNonFinite) {
  std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f};
  SampleRow r;
  EXPECT_EQ(sample_row(x.data(), 4, r), 1);
  r.temperature = 0.7f;
  r.top_p = 0.0f;  // a nucleus of the top token (both tied ones kept)
  for (uint64_t t = 0; t < 50; ++t) {
    r.counter = t;
    const int got = sample_row(x.data(), 4, r);
    EXPECT_TRUE(got == 1 || got == 3) << got;
  }
  x[2] = NAN;
  EXPECT_EQ(sample_row(x.data(), 4, r), -1);
  x[2] = -INFINITY;
  EXPECT_EQ(sample_row(x.data(), 4, SampleRow{}), -1);
}

// The kept tokens of the counter sampler are the Sampler's (distinct probabilities), and draws
// over counters follow the renormalised probabilities; a draw depends on (seed, stream, counter)
// only.
TEST(CounterSampler, FollowsTheSamplerDistribution) {
  std::vector<float> x(40);
  for (int i = 0; i < 40; ++i) x[i] = std::sin(i * 1.7f) * 2.0f;
  struct Case {
    float t, p;
    int k;
  };
  for (const Case cs :
       {Case{1.0f, 1.0f, 0}, Case{0.8f, 0.9f, 0}, Case{1.2f, 1.0f, 5}, Case{0.9f, 0.7f, 10}}) {
    // The Sampler's support: tokens it ever draws over many draws, and their frequencies.
    SamplingConfig c;
    c.temperature = cs.t;
    c.top_p = cs.p;
    c.top_k = cs.k;
    Sampler ref(c);
    const int n = 40000;
    std::vector<int> want(40, 0), got(40, 0);
    for (int i = 0; i < n; ++i) want[ref.sample(x.data(), 40)]++;
    SampleRow r;
    r.temperature = cs.t;
    r.top_p = cs.p;
    r.top_k = cs.k;
    r.seed = 11;
    r.stream = 2;
    for (int i = 0; i < n; ++i) {
      r.counter = static_cast<uint64_t>(i);
      got[sample_row(x.data(), 40, r)]++;
    }
    for (int i = 0; i < 40; ++i) {
      EXPECT_EQ(want[i] > 0, got[i] > 0) << "token " << i << " T " << cs.t << " k " << cs.k;
      EXPECT_NEAR(double(got[i]) / n, double(want[i]) / n, 0.015) << "token " << i;
    }
  }
  SampleRow r;
  r.temperature = 1.0f;
  r.seed = 5;
  int differ_stream = 0, differ_seed = 0;
  for (uint64_t t = 0; t < 100; ++t) {
    r.counter = t;
    const int a = sample_row(x.data(), 40, r);
    EXPECT_EQ(a, sample_row(x.data(), 40, r));
    SampleRow o = r;
    o.stream = 1;
    differ_stream += a != sample_row(x.data(), 40, o);
    o = r;
    o.seed = 6;
    differ_seed += a != sample_row(x.data(), 40, o);
  }
  EXPECT_GT(differ_stream, 50);
  EXPECT_GT(differ_seed, 50);
}

// DeepseekModel::forward_sample on the CPU backend: the ids are sample_row of the step's logits
// (greedy rows their argmax), for a prompt step and a decode step of two sequences.
TEST(CounterSampler, ModelForwardSample) {
  const std::string dir = test::fixture_dir("fp32_qnull");
  const ModelConfig mc = config_load(dir);
  const WeightStore ws(dir);
  auto comm = make_single_comm();
  DeepseekModel m(mc, ws, Mapping(1, 0, 1, 1, false), *comm, 64, 4);
  const std::vector<std::vector<int>> prompts = {{5, 17, 30}, {200, 3}};
  std::vector<SampleRow> rows(1);
  rows[0].temperature = 0.9f;
  rows[0].top_k = 20;
  rows[0].seed = 4;
  std::vector<int> last;
  for (int r = 0; r < 2; ++r) {
    m.kv().add_request(r);
    const std::vector<SeqStep> step = {SeqStep{r, prompts[r], 0}};
    m.reserve_kv(step);
    Tensor logits;
    const std::vector<int> ids = m.forward_sample(step, rows, &logits);
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_EQ(ids[0], sample_row(logits.ptr(), mc.vocab_size, rows[0]));
    last.push_back(ids[0]);
  }
  std::vector<SeqStep> step;
  for (int r = 0; r < 2; ++r)
    step.push_back(SeqStep{r, {last[r]}, static_cast<int>(prompts[r].size())});
  m.reserve_kv(step);
  rows.assign(2, SampleRow{});  // greedy
  Tensor logits;
  const std::vector<int> ids = m.forward_sample(step, rows, &logits);
  ASSERT_EQ(ids.size(), 2u);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(ids[r], argmax(logits.ptr() + r * mc.vocab_size, mc.vocab_size)) << r;
}

}  // namespace
}  // namespace helix
