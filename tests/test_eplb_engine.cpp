// EPLB inside the engine: expert-parallel decoding with fixed and online placements gives the
// single-rank ids and logits, the skewed fixture gets better balanced from the first update on,
// and no (token, expert) pair is dropped or duplicated by dispatch/combine.
#include <filesystem>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/engine.h"
#include "fixture_util.h"
#include "model/config.h"
#include "moe/eplb.h"

namespace helix {
namespace {

struct EpCase {
  int tp, cp, ep, slots, interval;
};

std::string ep_name(const ::testing::TestParamInfo<EpCase>& i) {
  return "ep" + std::to_string(i.param.ep) + "_tp" + std::to_string(i.param.tp) + "_cp" +
         std::to_string(i.param.cp) + "_slots" + std::to_string(i.param.slots) + "_every" +
         std::to_string(i.param.interval);
}

class EplbEngine : public ::testing::TestWithParam<EpCase> {};

TEST_P(EplbEngine, SameIdsAndLogitsAsSingleRank) {
  const EpCase c = GetParam();
  for (const std::string name : {"fp32_skewed", "fp32_qnull"}) {
    const auto ref = test::fixture_ref(name);
    SamplingConfig sc;
    sc.max_new_tokens = 40;
    EngineConfig single;
    single.model_dir = test::fixture_dir(name);
    single.keep_logits = true;
    single.tokens_per_block = 16;
    EngineConfig ep = single;
    ep.tp = c.tp;
    ep.cp = c.cp;
    ep.ep = c.ep;
    ep.eplb_slots = c.slots;
    ep.eplb_interval = c.interval;
    ep.eplb_layers_per_step = 1;
    for (size_t i = 2; i < ref.prompts.size(); ++i) {
      GenerateResult a = generate(single, {ref.prompts[i]}, sc);
      GenerateResult b = generate(ep, {ref.prompts[i]}, sc);
      EXPECT_EQ(b.outputs[0], ref.greedy[i]) << name << " prompt " << i;
      EXPECT_EQ(b.outputs[0], a.outputs[0]) << name << " prompt " << i;
      EXPECT_LT(test::rel_l2(b.logits[0], a.logits[0]), 1e-5) << name << " prompt " << i;
      // Conservation: the rows the EP owners computed for each expert (counted on the
      // receiving side, from the slot each row arrived in) equal the pairs the sources routed
      // to it, and their total is K pairs per decoded token (the engine's own count; prefill
      // runs on rank 0's context model, outside these counters). A dropped, duplicated or
      // misdirected row fails one of these.
      const int K = config_load(single.model_dir).num_experts_per_tok;
      ASSERT_EQ(b.dispatch_recv.size(), b.expert_load.size());
      for (size_t l = 0; l < b.dispatch_recv.size(); ++l) {
        EXPECT_EQ(b.dispatch_recv[l], b.expert_load[l]) << "layer " << l;
        double sent = 0, recv = 0;
        for (double v : b.dispatch_sent[l]) sent += v;
        for (double v : b.dispatch_recv[l]) recv += v;
        EXPECT_EQ(sent, recv) << "layer " << l << ": rows sent vs computed";
        EXPECT_EQ(recv, double(K) * b.decode_tokens) << "layer " << l;
      }
      if (c.interval > 0 && b.decode_steps > c.interval + 2) {
        int updates = 0;
        for (const auto& l : b.eplb) updates += l.updates;
        EXPECT_GT(updates, 0) << "online EPLB never switched a layer";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, EplbEngine,
                         ::testing::Values(EpCase{1, 2, 2, 0, 0}, EpCase{1, 4, 4, 0, 0},
                                           EpCase{1, 2, 2, 18, 1}, EpCase{2, 2, 4, 20, 1},
                                           EpCase{1, 4, 4, 20, 8}, EpCase{1, 2, 2, 16, 8},
                                           // ep wider than tp*cp: replicated attention grids
                                           EpCase{1, 1, 2, 0, 0}, EpCase{1, 1, 4, 20, 1},
                                           // static placement with redundant replicas
                                           EpCase{1, 4, 4, 24, 0}, EpCase{1, 2, 4, 0, 8}),
                         ep_name);

TEST(EplbEngine, SkewedRouterBalancesFromFirstUpdate) {
  EngineConfig ec;
  ec.model_dir = test::fixture_dir("fp32_skewed");
  ec.cp = 4;
  ec.ep = 4;
  ec.eplb_slots = 24;
  ec.eplb_interval = 4;
  SamplingConfig sc;
  sc.max_new_tokens = 40;
  sc.ignore_eos = true;
  const auto ref = test::fixture_ref("fp32_skewed");
  // Four requests decoded together: 4 tokens per step spread over the 4 EP ranks.
  GenerateResult r = generate(ec, ref.prompts, sc);
  ASSERT_FALSE(r.eplb.empty());
  for (const auto& l : r.eplb) {
    ASSERT_GT(l.updates, 0) << "layer " << l.layer;
    // The first update already improves on the flat initial placement, and every later one
    // keeps max/mean at or below where it started.
    EXPECT_LT(l.after[0], l.before[0]) << "layer " << l.layer;
    for (size_t u = 0; u < l.after.size(); ++u)
      EXPECT_LE(l.after[u], l.before[u] + 1e-9) << "layer " << l.layer << " update " << u;
    EXPECT_GT(l.bytes_moved, 0u);
  }
  // The final placements balance the observed load better than the static (identity) one.
  EngineConfig fixed = ec;
  fixed.eplb_slots = 0;
  fixed.eplb_interval = 0;
  GenerateResult s = generate(fixed, ref.prompts, sc);
  ASSERT_EQ(s.final_balance.size(), r.final_balance.size());
  double dyn = 0, sta = 0;
  for (size_t l = 0; l < r.final_balance.size(); ++l) {
    dyn += r.final_balance[l];
    sta += s.final_balance[l];
  }
  EXPECT_LT(dyn, sta);
  EXPECT_EQ(r.outputs, s.outputs);
  // Every pair dispatched once: K pairs per decoded token per MoE layer (the prompts ran on the
  // context model, whose routing is not the decode ranks' load).
  for (const auto& layer : r.expert_load) {
    double pairs = 0;
    for (double v : layer) pairs += v;
    EXPECT_EQ(pairs, double(r.decode_tokens) * 4);  // num_experts_per_tok = 4
  }
}

TEST(EplbEngine, RecordThenServeWithPlannedPlacement) {
  namespace fs = std::filesystem;
  const auto ref = test::fixture_ref("fp32_skewed");
  const fs::path dir = fs::temp_directory_path() / "helix_eplb_record";
  fs::create_directories(dir);
  EngineConfig ec;
  ec.model_dir = test::fixture_dir("fp32_skewed");
  ec.cp = 2;
  ec.ep = 2;
  ec.eplb_record = (dir / "load.json").string();
  SamplingConfig sc;
  sc.max_new_tokens = 20;
  GenerateResult rec = generate(ec, {ref.prompts[3]}, sc);
  LoadMatrix load = load_read(ec.eplb_record);
  ASSERT_EQ(load.size(), rec.expert_load.size());
  EXPECT_EQ(load, rec.expert_load);
  PlacementSet ps = eplb_plan(load, 20, 2);
  placement_write((dir / "placement.json").string(), ps);
  EngineConfig serve = ec;
  serve.eplb_record.clear();
  serve.eplb_placement = (dir / "placement.json").string();
  GenerateResult out = generate(serve, {ref.prompts[3]}, sc);
  EXPECT_EQ(out.outputs, rec.outputs);
  for (size_t l = 0; l < out.final_balance.size(); ++l)
    EXPECT_LE(out.final_balance[l], rec.final_balance[l] + 1e-9) << "layer " << l;
  // A placement for the wrong number of ranks is rejected with a clear error.
  placement_write((dir / "bad.json").string(), eplb_plan(load, 20, 4));
  serve.eplb_placement = (dir / "bad.json").string();
  EXPECT_THROW(generate(serve, {ref.prompts[3]}, sc), Error);
}

}  // namespace
}  // namespace helix
