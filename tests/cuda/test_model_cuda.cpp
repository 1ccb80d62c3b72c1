// The whole model on the GPU (CudaOps) against the HF transformers fixtures: in float32 mode the
// CPU bars (logits rel L2 <= 1e-4 fp32 / 2e-3 bf16 checkpoints, greedy ids identical over 40
// tokens, alone and decoded as one batch); in bfloat16 mode logits near the CPU's fp32 logits.
// Skips without a GPU.
//
// The bf16 bound: these tiny random fixtures are very sensitive to rounding; transformers' own
// bf16 run lands 0.014-0.22 rel L2 from its fp32 run on the same prompts (bench/hf_bf16_drift.py
// on the H200, bench/RESULTS.md), so the 2e-2 is out of reach for any bf16 engine here.
// The test bounds helix at 0.3 (a wrong rope, norm or attention gives ~1) and at 2.5e-2 for
// the one-token prompt, where no attention mixing amplifies the rounding.
#include <gtest/gtest.h>

#include "../fixture_util.h"
#include "engine/engine.h"
#include "ops/backend.h"

namespace helix {
namespace {

class CudaHfFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  }
};

DeviceConfig cuda(const char* dtype) {
  DeviceConfig d;
  d.device = "cuda";
  d.dtype = dtype;
  return d;
}

TEST_P(CudaHfFixture, Float32ScoreMatchesTransformers) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    int vocab = 0;
    std::vector<float> logits =
        score(test::fixture_dir(name), ref.prompts[i], &vocab, cuda("float32"));
    NpyArray want = npy_read(test::fixture_dir(name) + "/" + ref.score[i]);
    const double err = test::rel_l2(logits, want.data);
    EXPECT_LT(err, test::score_tolerance(ref.dtype)) << name << " prompt " << i;
    std::printf("[cuda float32] %s prompt %zu rel_l2 %.3g\n", name.c_str(), i, err);
  }
}

TEST_P(CudaHfFixture, Bfloat16ScoreNearFloat32) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    int vocab = 0;
    std::vector<float> cpu = score(test::fixture_dir(name), ref.prompts[i], &vocab);
    std::vector<float> bf =
        score(test::fixture_dir(name), ref.prompts[i], &vocab, cuda("bfloat16"));
    const double err = test::rel_l2(bf, cpu);
    EXPECT_LT(err, ref.prompts[i].size() == 1 ? 2.5e-2 : 0.3) << name << " prompt " << i;
    std::printf("[cuda bfloat16] %s prompt %zu rel_l2 vs fp32 %.3g\n", name.c_str(), i, err);
  }
}

TEST_P(CudaHfFixture, Float32GreedyMatchesTransformers) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  SamplingConfig sc;
  sc.max_new_tokens = 40;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    EngineConfig ec;
    ec.model_dir = test::fixture_dir(name);
    ec.dev = cuda("float32");
    ec.keep_logits = true;
    GenerateResult r = generate(ec, {ref.prompts[i]}, sc);
    EXPECT_EQ(r.outputs[0], ref.greedy[i]) << name << " prompt " << i;
    NpyArray want = npy_read(test::fixture_dir(name) + "/" + ref.gen_logits[i]);
    const double err = test::rel_l2(r.logits[0], want.data);
    EXPECT_LT(err, test::score_tolerance(ref.dtype)) << name;
    std::printf("[cuda float32] %s generate %zu decode-logit rel_l2 %.3g\n", name.c_str(), i, err);
  }
  // All prompts decoded together: batched decode steps give the same ids.
  EngineConfig ec;
  ec.model_dir = test::fixture_dir(name);
  ec.dev = cuda("float32");
  GenerateResult r = generate(ec, ref.prompts, sc);
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    EXPECT_EQ(r.outputs[i], ref.greedy[i]) << name << " batched, prompt " << i;
}

// Decode steps replayed from CUDA graphs give the logits of the same steps run eagerly.
TEST_P(CudaHfFixture, Bfloat16GraphReplayMatchesEager) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  SamplingConfig sc;
  sc.max_new_tokens = 24;
  sc.ignore_eos = true;
  std::vector<GenerateResult> r;
  for (bool graph : {true, false}) {
    EngineConfig ec;
    ec.model_dir = test::fixture_dir(name);
    ec.dev = cuda("bfloat16");
    ec.dev.cuda_graph = graph;
    ec.keep_logits = true;
    r.push_back(generate(ec, {ref.prompts[1]}, sc));
  }
  EXPECT_EQ(r[0].outputs[0], r[1].outputs[0]) << name;
  const double err = test::rel_l2(r[0].logits[0], r[1].logits[0]);
  EXPECT_LT(err, 1e-5) << name;
  std::printf("[cuda bfloat16] %s graph vs eager decode-logit rel_l2 %.3g\n", name.c_str(), err);
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, CudaHfFixture, ::testing::ValuesIn(test::all_fixtures()));

}  // namespace
}  // namespace helix
