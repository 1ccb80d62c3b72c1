// Helix parallelism on CPU threads: every tp x cp (x ep) layout gives the single-rank greedy ids
// and decode logits (1e-5 relative L2, fp32), the KV blocks stay balanced over CP ranks, and
// ranks without KV (prompts shorter than a block) do not break the combine.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "fixture_util.h"

namespace helix {
namespace {

struct Layout {
  int tp, cp;
  bool ep;
  int tpb;
};

std::string layout_name(const ::testing::TestParamInfo<Layout>& i) {
  return "tp" + std::to_string(i.param.tp) + "_cp" + std::to_string(i.param.cp) +
         (i.param.ep ? "_ep" : "") + "_tpb" + std::to_string(i.param.tpb);
}

class HelixLayout : public ::testing::TestWithParam<Layout> {};

TEST_P(HelixLayout, MatchesSingleRankAndTransformers) {
  const Layout lay = GetParam();
  for (const std::string name : {"fp32_qnull", "fp32_qlora_yarn_v5"}) {
    const auto ref = test::fixture_ref(name);
    // Prompts of 1 and 5 tokens are shorter than one block: some CP ranks hold no KV at first.
    std::vector<std::vector<int>> prompts = ref.prompts;
    SamplingConfig sc;
    sc.max_new_tokens = 40;
    EngineConfig single;
    single.model_dir = test::fixture_dir(name);
    single.keep_logits = true;
    single.tokens_per_block = lay.tpb;
    EngineConfig par = single;
    par.tp = lay.tp;
    par.cp = lay.cp;
    par.ep = lay.ep ? lay.tp * lay.cp : 1;
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerateResult a = generate(single, {prompts[i]}, sc);
      GenerateResult b = generate(par, {prompts[i]}, sc);
      EXPECT_EQ(b.outputs[0], ref.greedy[i]) << name << " prompt " << i;
      EXPECT_EQ(b.outputs[0], a.outputs[0]) << name << " prompt " << i;
      EXPECT_LT(test::rel_l2(b.logits[0], a.logits[0]), 1e-5) << name << " prompt " << i;
      EXPECT_LE(b.max_block_spread, 1) << name;
    }
    // All four prompts decoded together in one batch: same ids as alone, whether the prompt KV
    // comes from the context model (blocks handed to owners) or from in-place Helix prefill.
    for (const char* prefill : {"context", "helix"}) {
      EngineConfig pb = par;
      pb.prefill = prefill;
      GenerateResult batch = generate(pb, prompts, sc);
      for (size_t i = 0; i < prompts.size(); ++i)
        EXPECT_EQ(batch.outputs[i], ref.greedy[i]) << name << " " << prefill << " prompt " << i;
      EXPECT_LE(batch.max_block_spread, 1) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, HelixLayout,
                         ::testing::Values(Layout{1, 2, false, 7}, Layout{1, 2, false, 16},
                                           Layout{1, 3, false, 7}, Layout{1, 3, false, 16},
                                           Layout{1, 4, false, 7}, Layout{1, 4, false, 16},
                                           Layout{2, 1, false, 16}, Layout{2, 2, false, 7},
                                           Layout{2, 2, false, 16}, Layout{2, 3, false, 7},
                                           Layout{2, 4, false, 16}, Layout{1, 2, true, 16},
                                           Layout{1, 4, true, 7}, Layout{2, 2, true, 16}),
                         layout_name);

// A copy of a fixture with a longer max_position_embeddings (default rope ignores it).
std::string long_context_copy(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path dst = fs::temp_directory_path() / ("helix_long_" + name);
  fs::remove_all(dst);
  fs::copy(test::fixture_dir(name), dst);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dst / "config.json"));
  cfg["max_position_embeddings"] = 4096;
  std::ofstream(dst / "config.json") << cfg.dump();
  return dst.string();
}

TEST(HelixKv, RoundRobinBalanceIsl400Cp4) {
  EngineConfig ec;
  ec.model_dir = long_context_copy("fp32_qnull");
  ec.cp = 4;
  ec.tokens_per_block = 100;
  SamplingConfig sc;
  sc.max_new_tokens = 401;  // the first token comes from prefill, then 400 decode steps
  sc.ignore_eos = true;
  std::vector<int> prompt(400);
  for (int i = 0; i < 400; ++i) prompt[i] = 2 + (i * 37) % 250;
  GenerateResult r = generate(ec, {prompt}, sc);
  ASSERT_EQ(r.decode_steps, 400);
  ASSERT_EQ(r.ranks.size(), 4u);
  for (const auto& rk : r.ranks) {
    EXPECT_EQ(rk.kv_tokens, 200) << "rank " << rk.rank;
    EXPECT_EQ(rk.kv_blocks, 2) << "rank " << rk.rank;
  }
  EXPECT_LE(r.max_block_spread, 1);
}

TEST(HelixKv, DecodeTrafficIndependentOfContext) {
  // Bytes per decode step per rank must not grow with the context (only with batch and heads).
  std::string dir = long_context_copy("fp32_qnull");
  std::vector<double> per_step;
  for (int isl : {64, 512}) {
    EngineConfig ec;
    ec.model_dir = dir;
    ec.cp = 2;
    ec.tokens_per_block = 16;
    SamplingConfig sc;
    sc.max_new_tokens = 9;
    sc.ignore_eos = true;
    std::vector<int> prompt(isl, 7);
    GenerateResult r = generate(ec, {prompt}, sc);
    uint64_t sent = 0;
    for (const auto& [k, v] : r.ranks[0].decode_comm.bytes_sent) sent += v;
    per_step.push_back(double(sent) / r.decode_steps);
  }
  EXPECT_GT(per_step[0], 0);
  EXPECT_EQ(per_step[0], per_step[1]);
}

}  // namespace
}  // namespace helix

namespace helix {
namespace {

// 8 heads and 32 experts: wider TP (4, 8), uneven head splits over cp 3, and EP 8.
TEST(HelixWide, TpUpTo8AndEp8MatchTransformers) {
  const auto ref = test::fixture_ref("fp32_wide");
  SamplingConfig sc;
  sc.max_new_tokens = 40;
  for (auto [tp, cp, ep] : std::vector<std::tuple<int, int, int>>{
           {4, 2, 1}, {8, 1, 1}, {2, 3, 1}, {4, 2, 8}, {1, 1, 8}}) {
    EngineConfig ec;
    ec.model_dir = test::fixture_dir("fp32_wide");
    ec.tp = tp;
    ec.cp = cp;
    ec.ep = ep;
    ec.tokens_per_block = 7;
    GenerateResult r = generate(ec, ref.prompts, sc);
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      EXPECT_EQ(r.outputs[i], ref.greedy[i])
          << "tp " << tp << " cp " << cp << " ep " << ep << " prompt " << i;
    EXPECT_LE(r.max_block_spread, 1);
  }
}

}  // namespace
}  // namespace helix
