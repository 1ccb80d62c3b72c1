// Decode throughput of the whole model on one device: B requests whose KV already holds C
// tokens each (rows reserved without a prefill: decode reads the same bytes whatever the
// values), then timed decode steps of one token per request. Prints one JSON line per point.
//   bench_model_decode --model DIR --device cuda --dtype bfloat16 --batches 1,8 --contexts 1024
#include <algorithm>
#include <cstdio>
#include <sstream>

#include <CLI/CLI.hpp>

#include "core/clock.h"
#include "core/finite.h"
#include "model/config.h"
#include "model/deepseek.h"
#include "model/safetensors.h"
#include "ops/backend.h"
#include "ops/sample.h"
#include "parallel/comm.h"

using namespace helix;

namespace {
std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(std::stoi(x));
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Whole-model decode throughput (reserved KV context, timed steps)");
  std::string model, device = "cuda", dtype = "bfloat16", batches = "1,8,64",
                     contexts = "1024,8192,32768", kv_cache_dtype = "auto";
  int steps = 16, warmup = 3, tpb = 64;
  bool no_graph = false, compare_graph = false;
  app.add_option("--model", model)->required();
  app.add_option("--device", device);
  app.add_option("--dtype", dtype);
  app.add_option("--kv-cache-dtype", kv_cache_dtype,
                 "latent KV pool on cuda: auto (the --dtype) or fp8")
      ->check(CLI::IsMember({"auto", "fp8"}));
  app.add_option("--batches", batches);
  app.add_option("--contexts", contexts);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_flag("--no-cuda-graph", no_graph);
  app.add_flag("--compare-graph", compare_graph, "batch 1: also time every point without graphs");
  bool host_logits = false, sample = false;
  app.add_flag("--sample", sample,
               "time forward_sample (greedy ids sampled on the device, only ids copied back: the "
               "engine's decode step) instead of forward (all logits copied back)");
  app.add_flag("--host-logits", host_logits,
               "also time the host side of a step's logits per batch (a host tensor, the copy "
               "back, the finiteness check: what forward() does after the device work)");
  CLI11_PARSE(app, argc, argv);
  try {
    const ModelConfig mc = config_load(model);
    const WeightStore ws(model);
    auto comm = make_single_comm();
    ModelOptions opt;
    if (device == "cuda") {
      const DType act = dtype == "float32" ? DType::F32 : DType::BF16;
      opt.ops = make_cuda_ops(0, act);
      opt.weight_dtype = opt.kv_dtype = act;
      if (kv_cache_dtype == "fp8") opt.kv_dtype = DType::F8E4M3;
      opt.cuda_graphs = !no_graph;
    }
    const std::vector<int> bs = parse_list(batches), cs = parse_list(contexts);
    int max_blocks = 0;
    for (int b : bs)
      for (int c : cs) max_blocks = std::max(max_blocks, b * ((c + warmup + steps) / tpb + 2));
    auto t0 = Clock::now();
    DeepseekModel m(mc, ws, Mapping(1, 0, 1, 1, false), *comm, tpb, max_blocks, opt);
    std::fprintf(stderr, "loaded in %.1f s, KV pool %.2f GB\n", ms_since(t0) / 1000,
                 m.kv().bytes() / 1e9);
    for (int c : cs)
      for (int b : bs) {
        std::vector<int> len(b, c);
        for (int r = 0; r < b; ++r) {
          m.kv().add_request(r);
          m.reserve_kv({SeqStep{r, std::vector<int>(c, 0), 0}});
        }
        for (int pass = 0; pass < (compare_graph && b == 1 ? 2 : 1); ++pass) {
          const bool graph = !no_graph && pass == 0;
          m.set_cuda_graphs(graph);
          std::vector<double> ms;
          for (int s = 0; s < warmup + steps; ++s) {
            std::vector<SeqStep> batch;
            for (int r = 0; r < b; ++r) batch.push_back(SeqStep{r, {(r * 7 + s) % 1000}, len[r]});
            auto ts = Clock::now();
            m.reserve_kv(batch);
            if (sample)
              m.forward_sample(batch, std::vector<SampleRow>(batch.size()), nullptr);
            else
              m.forward(batch, false);
            if (s >= warmup) ms.push_back(ms_since(ts));
            for (int r = 0; r < b; ++r) len[r]++;
          }
          std::sort(ms.begin(), ms.end());
          const double step_ms = ms[ms.size() / 2];  // median
          std::printf(
              "{\"engine\": \"helix\", \"device\": \"%s\", \"dtype\": \"%s\", \"kv_cache\": "
              "\"%s\", "
              "\"batch\": %d, "
              "\"context\": %d, \"cuda_graph\": %s, \"sampled_on_device\": %s, \"step_ms\": %.3f, "
              "\"tokens_per_s\": %.1f}\n",
              device.c_str(), dtype.c_str(), kv_cache_dtype == "fp8" ? "fp8" : dtype.c_str(), b, c,
              graph ? "true" : "false", sample ? "true" : "false", step_ms, b * 1000.0 / step_ms);
          std::fflush(stdout);
        }
        for (int r = 0; r < b; ++r) m.kv().free_request(r);
      }
    if (host_logits && device == "cuda") {
      // The tail of DeepseekModel::forward_graph on its own: [B, vocab] fp32 logits into a fresh
      // host tensor, then require_finite; the difference to step_ms is the device step.
      auto ops = make_cuda_ops(0, DType::BF16);
      for (int b : bs) {
        DTensor d = ops->alloc({b, mc.vocab_size}, DType::F32);
        std::vector<double> ms;
        for (int i = 0; i < 3 + steps; ++i) {
          ops->sync();
          auto ts = Clock::now();
          Tensor logits({b, mc.vocab_size});
          ops->to_host(d.view(), logits.ptr());
          require_finite(logits.ptr(), logits.numel(), -1, "logits");
          if (i >= 3) ms.push_back(ms_since(ts));
        }
        std::sort(ms.begin(), ms.end());
        std::printf("{\"engine\": \"helix\", \"batch\": %d, \"host_logits_ms\": %.3f}\n", b,
                    ms[ms.size() / 2]);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
