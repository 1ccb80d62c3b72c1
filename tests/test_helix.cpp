// Helix parallelism on CPU threads: every tp x cp (x ep) layout gives the single-rank greedy ids
// and decode logits (1e-5 relative L2, fp32), the KV blocks stay balanced over CP ranks, and
// ranks without KV (prompts shorter than a block) do not break the combine.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "fixture_util.h"
#include "parallel/comm_worker.h"

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

namespace helix {
namespace {

// HOP-B only reorders work (exchange of request i during the attention of request i+1): ids and
// logits must be bitwise those of the unpipelined run, and the bytes moved the same.
TEST(HelixHopb, BitwiseSameAsWithout) {
  for (const std::string name : {"fp32_qnull", "fp32_qlora_yarn_v5"}) {
    const auto ref = test::fixture_ref(name);
    SamplingConfig sc;
    sc.max_new_tokens = 40;
    for (auto [tp, cp] :
         std::vector<std::pair<int, int>>{{1, 2}, {1, 3}, {1, 4}, {2, 2}, {2, 3}, {2, 4}}) {
      EngineConfig off;
      off.model_dir = test::fixture_dir(name);
      off.keep_logits = true;
      off.tokens_per_block = 7;  // short prompts leave some CP ranks without KV at first
      off.tp = tp;
      off.cp = cp;
      off.prefill = "helix";
      EngineConfig on = off;
      on.hopb = true;
      GenerateResult a = generate(off, ref.prompts, sc);
      const CommWorker::Counters c0 = CommWorker::counters();
      GenerateResult b = generate(on, ref.prompts, sc);
      const CommWorker::Counters c1 = CommWorker::counters();
      EXPECT_FALSE(a.hopb);
      EXPECT_TRUE(b.hopb);
      const std::string where = name + " tp " + std::to_string(tp) + " cp " + std::to_string(cp);
      ASSERT_EQ(a.outputs.size(), b.outputs.size()) << where;
      for (size_t i = 0; i < a.outputs.size(); ++i) {
        EXPECT_EQ(b.outputs[i], a.outputs[i]) << where << " prompt " << i;
        EXPECT_EQ(b.outputs[i], ref.greedy[i]) << where << " prompt " << i;
        ASSERT_EQ(b.logits[i].size(), a.logits[i].size()) << where << " prompt " << i;
        EXPECT_EQ(
            std::memcmp(b.logits[i].data(), a.logits[i].data(), a.logits[i].size() * sizeof(float)),
            0)
            << where << " prompt " << i << ": logits differ";
      }
      // Same bytes; one exchange per request instead of one per batch shows the pipeline ran.
      const auto& ca = a.ranks[0].decode_comm;
      const auto& cb = b.ranks[0].decode_comm;
      EXPECT_EQ(cb.bytes_sent, ca.bytes_sent) << where;
      EXPECT_EQ(cb.bytes_received, ca.bytes_received) << where;
      EXPECT_GT(cb.calls.at("all_to_all_v"), ca.calls.at("all_to_all_v")) << where;
      // The pipeline ran: exchanges ran on the worker, and request i+1's attention was issued
      // while request i's exchange was still unwaited (program order, so not timing-dependent;
      // that the worker really runs beside its submitter is WorkerOverlapsTheSubmitter's job).
      // Whether a task also started while the rank computed depends on thread timing (on a
      // 16-core host with the tiny fixtures it may never): printed, not asserted.
      EXPECT_GT(c1.tasks, c0.tasks) << where;
      EXPECT_GT(c1.pipelined_submits, c0.pipelined_submits) << where;
      std::printf("%s: %llu of %llu exchanges started while the rank computed\n", where.c_str(),
                  static_cast<unsigned long long>(c1.started_while_caller_busy -
                                                  c0.started_while_caller_busy),
                  static_cast<unsigned long long>(c1.tasks - c0.tasks));
    }
  }
}

// The worker runs a task concurrently with its submitter: the task waits for a flag that the
// submitter sets only after submit() returned, so a worker that ran tasks inline could never
// finish it; the submitter gives up after 10 s.
TEST(HelixHopb, WorkerOverlapsTheSubmitter) {
  CommWorker w;
  std::atomic<bool> go{false}, done{false};
  const auto c0 = CommWorker::counters();
  w.submit([&] {
    while (!go.load()) std::this_thread::yield();
    done = true;
  });
  go = true;  // the submitter's "own work", after submit returned
  const auto t0 = std::chrono::steady_clock::now();
  while (!done.load() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
    std::this_thread::yield();
  EXPECT_TRUE(done.load()) << "the task did not run concurrently";
  w.wait();
  const auto c1 = CommWorker::counters();
  EXPECT_EQ(c1.tasks - c0.tasks, 1u);
  EXPECT_EQ(c1.started_while_caller_busy - c0.started_while_caller_busy, 1u);
}

TEST(HelixHopb, WorkerRunsInOrderAndSkipsAfterError) {
  CommWorker w;
  std::vector<int> seen;
  for (int i = 0; i < 5; ++i) w.submit([&seen, i] { seen.push_back(i); });
  w.wait();
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4}));
  seen.clear();
  w.submit([&seen] { seen.push_back(0); });
  w.submit([] { throw std::runtime_error("boom"); });
  w.submit([&seen] { seen.push_back(2); });
  EXPECT_THROW(w.wait(), std::runtime_error);
  EXPECT_EQ(seen, (std::vector<int>{0}));
  w.submit([&seen] { seen.push_back(3); });  // reusable after an error
  w.wait();
  EXPECT_EQ(seen, (std::vector<int>{0, 3}));
}

}  // namespace
}  // namespace helix
