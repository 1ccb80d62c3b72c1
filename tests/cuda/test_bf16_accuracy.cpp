// Where the bfloat16 mode's error against the fp32 logits comes from, on the HF fixtures: the
// model run with variants of its precision (ModelOptions' experiment switches), each compared with
// the float32 mode (which matches transformers within 3e-6). Per fixture and prompt: rel L2 of
// the prompt's logits (every position) and of 16 teacher-forced decode steps (the fixture's
// greedy ids fed back: the latent KV pool and the MLA decode kernel), each also over the rows
// before the first routing flip (causal attention: no flip reaches them), and the routing flips
// (tokens x MoE layers whose top-k expert set differs from fp32). Skips without a GPU.
//
//   before     bf16 weights/activations, router reading the bf16-rounded hidden state (as before)
//   bf16       the shipped mode: the router reads the fp32 normed hidden state
//   +kv32      bf16 + fp32 latent KV pool (decode only; eager MLA fp32 kernel)
//   +head32    bf16 + final norm and lm_head in fp32
//   w-bf16     fp32 arithmetic with every weight rounded to bf16 (what bf16 weights alone cost)
#include <algorithm>
#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "../fixture_util.h"
#include "engine/scheduler.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "ops/backend.h"
#include "parallel/comm.h"

namespace helix {
namespace {

struct Variant {
  const char* name;
  DType act, kv;
  bool router_f32, lm_head_f32, round_w;
};

const Variant kRef{"fp32", DType::F32, DType::F32, true, false, false};
const Variant kVariants[] = {
    {"before", DType::BF16, DType::BF16, false, false, false},
    {"bf16", DType::BF16, DType::BF16, true, false, false},
    {"+kv32", DType::BF16, DType::F32, true, false, false},
    {"+head32", DType::BF16, DType::BF16, true, true, false},
    {"w-bf16", DType::F32, DType::F32, true, false, true},
};

struct VariantRun {
  std::vector<float> prefill;            // [n, vocab]
  std::vector<float> decode;             // [steps, vocab]
  std::vector<std::vector<int>> routes;  // [layer] [tokens * top_k]
};

constexpr int kDecodeSteps = 16;

VariantRun run_variant(const std::string& dir, const std::vector<int>& prompt,
                       const std::vector<int>& greedy, const Variant& v,
                       std::map<DType, std::shared_ptr<Ops>>& ops) {
  const ModelConfig mc = config_load(dir);
  const WeightStore ws(dir);
  auto comm = make_single_comm();
  if (!ops[v.act]) ops[v.act] = make_cuda_ops(0, v.act);
  ModelOptions o;
  o.ops = ops[v.act];
  o.weight_dtype = v.act;
  o.kv_dtype = v.kv;
  o.cuda_graphs = false;  // record_routes copies ids to the host inside the step
  o.router_f32_input = v.router_f32;
  o.lm_head_f32 = v.lm_head_f32;
  o.round_weights_bf16 = v.round_w;
  o.record_routes = true;
  const int n = static_cast<int>(prompt.size());
  DeepseekModel m(mc, ws, Mapping(1, 0, 1, 1, false), *comm, 64,
                  kv_blocks_on_rank(n + kDecodeSteps, 64, 1, 0), o);
  m.kv().add_request(0);
  VariantRun r;
  std::vector<SeqStep> step = {SeqStep{0, prompt, 0}};
  m.reserve_kv(step);
  r.prefill = m.forward(step, true).data;
  const int V = mc.vocab_size;
  r.decode.assign(r.prefill.end() - V, r.prefill.end());
  for (int k = 1; k < kDecodeSteps && k < static_cast<int>(greedy.size()); ++k) {
    step = {SeqStep{0, {greedy[k - 1]}, n + k - 1}};
    m.reserve_kv(step);
    const Tensor l = m.forward(step, false);
    r.decode.insert(r.decode.end(), l.data.begin(), l.data.end());
  }
  r.routes = m.recorded_routes();
  return r;
}

double rel_rows(const std::vector<float>& a, const std::vector<float>& b, int V,
                const std::vector<bool>& use) {
  double num = 0, den = 0;
  for (size_t r = 0; r < use.size(); ++r) {
    if (!use[r]) continue;
    for (int i = 0; i < V; ++i) {
      const double d = double(a[r * V + i]) - b[r * V + i];
      num += d * d;
      den += double(b[r * V + i]) * b[r * V + i];
    }
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

TEST(Bf16Accuracy, Variants) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  std::map<DType, std::shared_ptr<Ops>> ops;
  std::map<std::string, double> worst, worst_clean;
  std::map<std::string, int> under, no_flip;
  int cases = 0;
  std::printf("[bf16-acc] %-26s %4s %-8s %9s %9s %3s %9s %9s %3s %7s\n", "fixture", "len",
              "variant", "prefill", "pre-flip", "n", "decode", "pre-flip", "n", "flips");
  for (const std::string& name : test::all_fixtures()) {
    const std::string dir = test::fixture_dir(name);
    const ModelConfig mc = config_load(dir);
    const int V = mc.vocab_size, K = mc.num_experts_per_tok;
    const auto fx = test::fixture_ref(name);
    for (size_t p = 0; p < fx.prompts.size(); ++p) {
      const std::vector<int>& prompt = fx.prompts[p];
      const int n = static_cast<int>(prompt.size());
      const VariantRun ref = run_variant(dir, prompt, fx.greedy[p], kRef, ops);
      ++cases;
      for (const Variant& v : kVariants) {
        const VariantRun got = run_variant(dir, prompt, fx.greedy[p], v, ops);
        // Routing flips, per token (prompt tokens then decode steps) and MoE layer; the first
        // flipped token: causal attention keeps every row before it free of any flip.
        const int tokens = n + kDecodeSteps - 1;
        int flips = 0, decisions = 0, first = tokens;
        for (size_t l = 0; l < ref.routes.size(); ++l) {
          const auto& a = ref.routes[l];
          const auto& b = got.routes[l];
          if (a.empty()) continue;
          const int t_all = static_cast<int>(std::min(a.size(), b.size())) / K;
          for (int t = 0; t < t_all && t < tokens; ++t) {
            std::vector<int> sa(a.begin() + t * K, a.begin() + (t + 1) * K);
            std::vector<int> sb(b.begin() + t * K, b.begin() + (t + 1) * K);
            std::sort(sa.begin(), sa.end());
            std::sort(sb.begin(), sb.end());
            ++decisions;
            if (sa != sb) {
              ++flips;
              first = std::min(first, t);
            }
          }
        }
        // Prompt rows before the first flip; decode row k (its last input is token n - 1 + k)
        // is clean while no token up to n - 1 + k flipped.
        std::vector<bool> pre(n), dec(got.decode.size() / V);
        for (int t = 0; t < n; ++t) pre[t] = t < first;
        for (size_t k = 0; k < dec.size(); ++k) dec[k] = n - 1 + static_cast<int>(k) < first;
        const int n_pre = static_cast<int>(std::count(pre.begin(), pre.end(), true));
        const int n_dec = static_cast<int>(std::count(dec.begin(), dec.end(), true));
        const double e_pre = test::rel_l2(got.prefill, ref.prefill);
        const double e_dec = test::rel_l2(got.decode, ref.decode);
        const double c_pre = rel_rows(got.prefill, ref.prefill, V, pre);
        const double c_dec = rel_rows(got.decode, ref.decode, V, dec);
        std::printf("[bf16-acc] %-26s %4d %-8s %9.4f %9.4f %3d %9.4f %9.4f %3d %3d/%-3d\n",
                    name.c_str(), n, v.name, e_pre, c_pre, n_pre, e_dec, c_dec, n_dec, flips,
                    decisions);
        const std::string vn = v.name;
        worst[vn] = std::max(worst[vn], std::max(e_pre, e_dec));
        worst_clean[vn] = std::max(worst_clean[vn], std::max(c_pre, c_dec));
        under[vn] += e_pre <= 2e-2 && e_dec <= 2e-2;
        no_flip[vn] += flips == 0;
        if (vn == "bf16") {
          // The shipped mode: rows no routing flip reaches measured 0.003-0.046 (0.09 on one
          // prompt of fp32_qlora_yarn_v5) on the H200; the flips move whole rows. A wrong rope,
          // norm or attention is ~1 everywhere.
          EXPECT_LT(c_pre, 0.1) << name << " prompt " << p;
          EXPECT_LT(c_dec, 0.1) << name << " prompt " << p;
          EXPECT_LT(e_pre, 0.6) << name << " prompt " << p;
          EXPECT_LT(e_dec, 0.6) << name << " prompt " << p;
        }
      }
    }
  }
  for (const Variant& v : kVariants)
    std::printf(
        "[bf16-acc] summary %-8s worst rel L2 %.4f (rows before any flip %.4f); %d of %d "
        "prompts within 2e-2 (prefill and decode), %d without a routing flip\n",
        v.name, worst[v.name], worst_clean[v.name], under[v.name], cases, no_flip[v.name]);
}

}  // namespace
}  // namespace helix
