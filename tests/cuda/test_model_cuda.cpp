// The whole model on the GPU (CudaOps) against the HF transformers fixtures: in float32 mode the
// CPU bars (logits rel L2 <= 1e-4 fp32 / 2e-3 bf16 checkpoints, greedy ids identical over 40
// tokens, alone and decoded as one batch); in bfloat16 mode logits near the CPU's fp32 logits.
// Skips without a GPU.
//
// The bf16 bound: these tiny random fixtures flip MoE top-k choices under bf16 rounding (a flip
// moves a token's whole output); transformers' own bf16 run lands 0.005-0.29 rel L2 from its
// fp32 run on the same prompts (bench/hf_bf16_drift.py on the H200, bench/RESULTS.md), and
// test_bf16_accuracy.cpp shows where helix's error comes from. The test bounds helix at 0.3 (a
// wrong rope, norm or attention gives ~1) and at 2.5e-2 for the one-token prompt.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "../fixture_util.h"
#include "core/error.h"
#include "engine/engine.h"
#include "model/config.h"
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

// Sampling on the device (only the ids come back) picks the greedy ids of the host path (all
// logits to the host, argmax there) in both modes, every prompt decoded in one batch; in
// bfloat16 the decode steps replay CUDA graphs with the sampler inside.
TEST_P(CudaHfFixture, DeviceGreedyMatchesHostGreedy) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  SamplingConfig sc;
  sc.max_new_tokens = 40;
  sc.ignore_eos = true;
  for (const char* dt : {"float32", "bfloat16"}) {
    std::vector<GenerateResult> r;
    for (bool on_device : {true, false}) {
      EngineConfig ec;
      ec.model_dir = test::fixture_dir(name);
      ec.dev = cuda(dt);
      ec.dev.sample_on_device = on_device;
      r.push_back(generate(ec, ref.prompts, sc));
    }
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      EXPECT_EQ(r[0].outputs[i], r[1].outputs[i]) << name << " " << dt << " prompt " << i;
  }
}

// Seeded sampling on the device: the same seed gives the same tokens, another seed others, and
// two requests with the same prompt draw from their own streams (ops/sample.h).
TEST_P(CudaHfFixture, DeviceSamplingIsSeeded) {
  const std::string name = GetParam();
  const auto ref = test::fixture_ref(name);
  SamplingConfig sc;
  sc.max_new_tokens = 24;
  sc.ignore_eos = true;
  sc.temperature = 0.9f;
  sc.top_p = 0.95f;
  sc.top_k = 50;
  sc.seed = 1234;
  EngineConfig ec;
  ec.model_dir = test::fixture_dir(name);
  ec.dev = cuda("bfloat16");
  const GenerateResult a = generate(ec, ref.prompts, sc), b = generate(ec, ref.prompts, sc);
  EXPECT_EQ(a.outputs, b.outputs) << name;
  sc.seed = 1235;
  const GenerateResult c = generate(ec, ref.prompts, sc);
  EXPECT_NE(a.outputs, c.outputs) << name;
  const GenerateResult d = generate(ec, {ref.prompts[2], ref.prompts[2]}, sc);
  EXPECT_NE(d.outputs[0], d.outputs[1]) << name;
  // Greedy with temperature 0 through the same path: the host's greedy ids.
  sc.temperature = 0.0f;
  const GenerateResult g = generate(ec, ref.prompts, sc);
  ec.dev.sample_on_device = false;
  EXPECT_EQ(g.outputs, generate(ec, ref.prompts, sc).outputs) << name;
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, CudaHfFixture, ::testing::ValuesIn(test::all_fixtures()));

// --gpu-memory-fraction sizes the KV pool from the GPU memory free after the weights, the
// engine admits by that pool, and a request that cannot fit is one clear error.
TEST(CudaEngine, GpuMemoryFractionSizesTheKvPool) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  const std::string dir = test::fixture_dir("fp32_qnull");
  const ModelConfig mc = config_load(dir);
  const double block_bytes =
      double(mc.num_hidden_layers) * 64 * (mc.kv_lora_rank + mc.qk_rope_head_dim) * 2;  // bf16
  size_t free0 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
  auto pool = [&](double f) {
    EngineConfig ec;
    ec.model_dir = dir;
    ec.dev = cuda("bfloat16");
    ec.dev.gpu_memory_fraction = f;
    Engine e(ec);
    return e.snapshot().kv_blocks;
  };
  const int b1 = pool(0.01), b2 = pool(0.02);
  std::printf(
      "[cuda] --gpu-memory-fraction 0.01: %d blocks, 0.02: %d blocks (%.0f bytes each, "
      "%.1f GiB free)\n",
      b1, b2, block_bytes, free0 / 1073741824.0);
  EXPECT_LE(b1, total * 0.01 / block_bytes);
  EXPECT_GE(b1, free0 * 0.01 / block_bytes * 0.9);
  EXPECT_NEAR(double(b2) / b1, 2.0, 0.1);

  const auto ref = test::fixture_ref("fp32_qnull");
  SamplingConfig sc;
  sc.max_new_tokens = 16;
  EngineConfig ec;
  ec.model_dir = dir;
  ec.dev = cuda("bfloat16");
  const GenerateResult plain = generate(ec, ref.prompts, sc);
  const GenerateResult alone = generate(ec, {ref.prompts[0]}, sc);
  ec.dev.gpu_memory_fraction = 0.01;
  EXPECT_EQ(generate(ec, ref.prompts, sc).outputs, plain.outputs);

  // A pool of 3 blocks (64 tokens each): a 300-token prompt needs 5.
  ec.dev.gpu_memory_fraction = 3.5 * block_bytes / free0;
  const std::vector<int> long_prompt(300, 7);
  try {
    generate(ec, {long_prompt}, sc);
    ADD_FAILURE() << "a request larger than the pool was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    std::printf("[cuda] too large for the pool: %s\n", what.c_str());
    EXPECT_NE(what.find("KV cache out of memory"), std::string::npos) << what;
    EXPECT_NE(what.find("--gpu-memory-fraction"), std::string::npos) << what;
  }
  // Short requests still run in that pool.
  EXPECT_EQ(generate(ec, {ref.prompts[0]}, sc).outputs[0], alone.outputs[0]);
  // Too small for one block: an error at load.
  ec.dev.gpu_memory_fraction = 1e-12;
  try {
    Engine e(ec);
    ADD_FAILURE() << "a pool of no block was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu-memory-fraction"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace helix
