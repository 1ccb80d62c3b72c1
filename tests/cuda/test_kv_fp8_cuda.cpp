// The FP8 latent KV cache on the GPU through the engine (--device cuda --kv-cache-dtype fp8):
// the pool holds row-bytes-proportionally more tokens at the same --gpu-memory-fraction; float32
// activations over the FP8 pool (the bf16/FP8 MLA kernel, q cast to bf16) against the CPU
// engine's FP8 pool; CUDA graphs against eager steps. Skips without a GPU.
#include <algorithm>
#include <cstdio>

#include <gtest/gtest.h>

#include "../fixture_util.h"
#include "engine/engine.h"
#include "model/config.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace helix {
namespace {

DeviceConfig dev(const char* device, const char* dtype, const char* kv) {
  DeviceConfig d;
  d.device = device;
  d.dtype = dtype;
  d.kv_cache_dtype = kv;
  return d;
}

// Same memory, more tokens: blocks scale with 2 (L + R) / kv_fp8_row_bytes(L, R).
TEST(CudaKvFp8, PoolHoldsMoreTokensInTheSameMemory) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  for (const std::string& dir :
       {std::string(HELIX_SOURCE_DIR) + "/models/tiny", test::fixture_dir("fp32_qnull")}) {
    const ModelConfig mc = config_load(dir);
    auto blocks = [&](const char* kv) {
      EngineConfig ec;
      ec.model_dir = dir;
      ec.dev = dev("cuda", "bfloat16", kv);
      ec.dev.gpu_memory_fraction = 0.05;
      Engine e(ec);
      return e.snapshot().kv_blocks;
    };
    const int b16 = blocks("bfloat16"), b8 = blocks("fp8");
    const double want = 2.0 * (mc.kv_lora_rank + mc.qk_rope_head_dim) /
                        kv_fp8_row_bytes(mc.kv_lora_rank, mc.qk_rope_head_dim);
    std::printf(
        "[cuda kv fp8] %s (L %d, R %d): --gpu-memory-fraction 0.05 holds %lld tokens in bf16, "
        "%lld in fp8 (%.3fx; row bytes %d vs %zu: %.3fx; DeepSeek-V3 512/64: %.3fx)\n",
        dir.c_str(), mc.kv_lora_rank, mc.qk_rope_head_dim, 64LL * b16, 64LL * b8, double(b8) / b16,
        2 * (mc.kv_lora_rank + mc.qk_rope_head_dim),
        kv_fp8_row_bytes(mc.kv_lora_rank, mc.qk_rope_head_dim), want,
        1152.0 / kv_fp8_row_bytes(512, 64));
    EXPECT_NEAR(double(b8) / b16, want, 0.05 * want) << dir;
  }
}

// float32 activations with the FP8 pool on the GPU against the CPU engine with the FP8 pool: the
// prompt's logits are the float32 path's (1e-4, the fixtures' bar); the first decode step adds
// the FP8 kernel's bf16 arithmetic (q, P and the dequantised tile in bf16) over the same FP8
// rows. On the trained tiny_kjv that moves the logits by <= 1.7e-3 (H200) and the ids stay. The
// random fixtures' MoE top-k choices can flip under that rounding (a flip moves a token's whole
// output, as test_model_cuda.cpp says of bf16): of the 36 prompts, 34 moved by <= 2.6e-2, two
// random ones by 0.32 and 0.94 (H200, bench/RESULTS.md). Bound: 1e-2 and the same ids on
// tiny_kjv; 3e-2 on at least 30 of the 36 prompts.
TEST(CudaKvFp8, Float32ActivationsMatchTheCpuFp8Engine) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  int within = 0, total = 0;
  for (const std::string& name : test::all_fixtures()) {
    const auto ref = test::fixture_ref(name);
    SamplingConfig sc;
    sc.max_new_tokens = 4;
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
      EngineConfig ec;
      ec.model_dir = test::fixture_dir(name);
      ec.keep_logits = true;
      ec.dev = dev("cpu", "", "fp8");
      const GenerateResult cpu = generate(ec, {ref.prompts[i]}, sc);
      ec.dev = dev("cuda", "float32", "fp8");
      const GenerateResult gpu = generate(ec, {ref.prompts[i]}, sc);
      const int V = cpu.vocab;
      const std::vector<float> c0(cpu.logits[0].begin(), cpu.logits[0].begin() + V),
          g0(gpu.logits[0].begin(), gpu.logits[0].begin() + V);
      const double e0 = test::rel_l2(g0, c0);
      EXPECT_LT(e0, 1e-4) << name << " prompt " << i;
      ASSERT_EQ(gpu.outputs[0][0], cpu.outputs[0][0]) << name << " prompt " << i;
      const std::vector<float> c1(cpu.logits[0].begin() + V, cpu.logits[0].begin() + 2 * V),
          g1(gpu.logits[0].begin() + V, gpu.logits[0].begin() + 2 * V);
      const double e1 = test::rel_l2(g1, c1);
      ++total;
      within += e1 <= 3e-2;
      std::printf(
          "[cuda kv fp8] %-26s prompt %zu: float32+fp8 vs CPU fp8: prefill %.2e, "
          "decode step 1 %.2e, ids %s\n",
          name.c_str(), i, e0, e1, gpu.outputs == cpu.outputs ? "same" : "differ");
      if (name == "tiny_kjv") {
        EXPECT_LE(e1, 1e-2) << name << " prompt " << i;
        EXPECT_EQ(gpu.outputs, cpu.outputs) << name << " prompt " << i;
      }
    }
  }
  std::printf("[cuda kv fp8] float32+fp8 vs CPU fp8: %d of %d prompts within 3e-2 at step 1\n",
              within, total);
  EXPECT_GE(within, total - 6);
}

// Decode steps replayed as CUDA graphs read the FP8 pool as the eager steps do (the same kernels;
// a graph plans for its padded block table): logits within 1e-3.
TEST(CudaKvFp8, GraphsMatchEagerSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  for (const std::string name : {"fp32_qnull", "tiny_kjv"}) {
    const auto ref = test::fixture_ref(name);
    SamplingConfig sc;
    sc.max_new_tokens = 12;
    EngineConfig ec;
    ec.model_dir = test::fixture_dir(name);
    ec.keep_logits = true;
    ec.dev = dev("cuda", "bfloat16", "fp8");
    const GenerateResult graphs = generate(ec, ref.prompts, sc);
    ec.dev.cuda_graph = false;
    const GenerateResult eager = generate(ec, ref.prompts, sc);
    // Logits of the positions reached on the same ids (all of them when the ids agree).
    const int V = graphs.vocab;
    double worst = 0;
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      for (size_t k = 0; k < graphs.outputs[i].size(); ++k) {
        const std::vector<float> a(graphs.logits[i].begin() + k * V,
                                   graphs.logits[i].begin() + (k + 1) * V),
            b(eager.logits[i].begin() + k * V, eager.logits[i].begin() + (k + 1) * V);
        worst = std::max(worst, test::rel_l2(a, b));
        if (graphs.outputs[i][k] != eager.outputs[i][k]) break;
      }
    std::printf("[cuda kv fp8] %s: graphs vs eager: logits rel L2 max %.2e, ids %s\n", name.c_str(),
                worst, graphs.outputs == eager.outputs ? "same" : "differ");
    EXPECT_LE(worst, 1e-3) << name;
    ec.dev.kv_cache_dtype = "bfloat16";
    const GenerateResult bf16 = generate(ec, ref.prompts, sc);
    int same = 0, total = 0;
    for (size_t i = 0; i < ref.prompts.size(); ++i)
      for (size_t k = 0; k < bf16.outputs[i].size(); ++k, ++total)
        same += k < graphs.outputs[i].size() && graphs.outputs[i][k] == bf16.outputs[i][k];
    std::printf("[cuda kv fp8] %s: bf16 activations, fp8 vs bf16 KV: %d of %d ids equal\n",
                name.c_str(), same, total);
  }
}

}  // namespace
}  // namespace helix
