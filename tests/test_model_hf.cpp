// The single-rank engine against HF transformers' DeepseekV3ForCausalLM (fixtures made by
// tools/make_fixtures.py): full-forward logits within 1e-4 (fp32) / 2e-3 (bf16) relative L2,
// greedy continuations identical, and decode-step logits against generate's.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "fixture_util.h"

namespace helix {
namespace {

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, ScoreMatchesTransformers) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    int vocab = 0;
    std::vector<float> logits = score(test::fixture_dir(name), ref.prompts[i], &vocab);
    NpyArray want = npy_read(test::fixture_dir(name) + "/" + ref.score[i]);
    ASSERT_EQ(want.shape[0], static_cast<int64_t>(ref.prompts[i].size()));
    ASSERT_EQ(want.shape[1], vocab);
    const double err = test::rel_l2(logits, want.data);
    EXPECT_LT(err, test::score_tolerance(ref.dtype)) << name << " prompt " << i;
    RecordProperty("rel_l2_" + std::to_string(i), std::to_string(err));
    std::printf("%s prompt %zu rel_l2 %.3g\n", name.c_str(), i, err);
  }
}

TEST_P(HfFixture, GreedyMatchesTransformersGenerate) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    EngineConfig ec;
    ec.model_dir = test::fixture_dir(name);
    ec.keep_logits = true;
    SamplingConfig sc;
    sc.max_new_tokens = 40;
    GenerateResult r = generate(ec, {ref.prompts[i]}, sc);
    EXPECT_EQ(r.outputs[0], ref.greedy[i]) << name << " prompt " << i;
    // Decode-step logits (prefill's last position, then each cached step) against generate's.
    NpyArray want = npy_read(test::fixture_dir(name) + "/" + ref.gen_logits[i]);
    ASSERT_EQ(r.logits[0].size(), want.data.size());
    EXPECT_LT(test::rel_l2(r.logits[0], want.data), test::score_tolerance(ref.dtype)) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, HfFixture, ::testing::ValuesIn(test::all_fixtures()));

}  // namespace
}  // namespace helix
