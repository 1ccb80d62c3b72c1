#include <algorithm>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/tokens.h"
#include "core/file_io.h"
#include "core/npy.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

namespace helix::cli {

namespace {

nlohmann::json stats_json(const CommStats& s) {
  nlohmann::json j;
  j["bytes_sent"] = s.bytes_sent;
  j["bytes_received"] = s.bytes_received;
  j["calls"] = s.calls;
  return j;
}

uint64_t total(const std::map<std::string, uint64_t>& m) {
  uint64_t t = 0;
  for (const auto& [k, v] : m) t += v;
  return t;
}

void write_stats(const std::string& path, const EngineConfig& ec, const GenerateResult& r) {
  nlohmann::json j;
  j["tp"] = ec.tp;
  j["cp"] = ec.cp;
  j["ep"] = ec.ep;
  j["tokens_per_block"] = ec.tokens_per_block;
  j["hopb"] = r.hopb;  // in effect, not just requested
  j["decode_steps"] = r.decode_steps;
  j["decode_tokens"] = r.decode_tokens;
  j["prefill_ms"] = r.prefill_ms;
  j["decode_ms"] = r.decode_ms;
  j["max_kv_block_spread"] = r.max_block_spread;
  if (!r.step_ms.empty()) {
    std::vector<double> t = r.step_ms;
    std::sort(t.begin(), t.end());
    auto pct = [&](double q) {
      return t[std::min(t.size() - 1, static_cast<size_t>(q * t.size()))];
    };
    j["decode_step_ms"] = {{"p50", pct(0.50)}, {"p99", pct(0.99)}, {"max", t.back()}};
  }
  if (!r.eplb.empty()) {
    nlohmann::json layers = nlohmann::json::array();
    for (size_t i = 0; i < r.eplb.size(); ++i) {
      const auto& e = r.eplb[i];
      double sent = 0, recv = 0;
      for (double v : r.dispatch_sent[i]) sent += v;
      for (double v : r.dispatch_recv[i]) recv += v;
      layers.push_back(
          {{"layer", e.layer},
           {"updates_applied", e.updates},
           {"balance_before", e.before},
           {"balance_after", e.after},
           {"weight_bytes_moved", e.bytes_moved},
           {"final_max_over_mean", i < r.final_balance.size() ? r.final_balance[i] : 1.0},
           {"routed_pairs", r.expert_load[i]},
           {"dispatch_sent", sent},
           {"dispatch_received", recv}});
    }
    j["eplb"] = {{"layers", layers}, {"late_steps", r.eplb_late}, {"wait_ms", r.eplb_wait_ms}};
  }
  j["ranks"] = nlohmann::json::array();
  for (const auto& rk : r.ranks) {
    nlohmann::json x;
    x["rank"] = rk.rank;
    x["cp_rank"] = rk.cp_rank;
    x["tp_rank"] = rk.tp_rank;
    x["kv_tokens"] = rk.kv_tokens;
    x["kv_blocks"] = rk.kv_blocks;
    x["bytes_sent"] = rk.comm.bytes_sent;
    x["bytes_received"] = rk.comm.bytes_received;
    x["calls"] = rk.comm.calls;
    x["decode"] = stats_json(rk.decode_comm);
    x["decode_bytes_sent_per_step"] =
        r.decode_steps ? double(total(rk.decode_comm.bytes_sent)) / r.decode_steps : 0.0;
    x["kv_blocks_per_step"] = rk.blocks_per_step;
    x["time_ms"] = {{"attention", rk.attn_ms}, {"ffn", rk.ffn_ms}, {"communication", rk.comm_ms}};
    j["ranks"].push_back(x);
  }
  file_write(path, j.dump(2) + "\n");
}

void print_table(const GenerateResult& r) {
  std::fprintf(stderr, "%5s %4s %4s %10s %10s %14s %14s\n", "rank", "cp", "tp", "kv_tokens",
               "kv_blocks", "bytes_sent", "bytes_recv");
  for (const auto& rk : r.ranks)
    std::fprintf(stderr, "%5d %4d %4d %10d %10d %14llu %14llu\n", rk.rank, rk.cp_rank, rk.tp_rank,
                 rk.kv_tokens, rk.kv_blocks, (unsigned long long)total(rk.comm.bytes_sent),
                 (unsigned long long)total(rk.comm.bytes_received));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "generate",
      "Prefill then decode token by token; prints the generated ids (last line), or with --prompt "
      "the generated text");
  struct Opts {
    std::string model;
    std::vector<std::string> tokens, text_prompts;
    std::string tokens_file;
    bool chat = false;
    EngineConfig ec;
    SamplingConfig sc;
    std::string stats_json, logits_out;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json + safetensors)")
      ->required();
  auto* tokens_opt = cmd->add_option("--tokens", o->tokens,
                                     "Comma-separated prompt ids; repeat the flag for several "
                                     "requests decoded together");
  auto* prompt_opt =
      cmd->add_option("--prompt", o->text_prompts,
                      "Prompt text (tokenized with the model's tokenizer.json, bos added as its "
                      "config says); prints the generated text. Repeatable");
  tokens_opt->excludes(prompt_opt);
  cmd->add_option("--tokens-file", o->tokens_file,
                  "File of prompts, one request per line (comma-separated ids); adds to --tokens");
  cmd->add_flag("--chat", o->chat,
                "With --prompt: send it as one user turn in the model's chat format and print "
                "the reply");
  cmd->add_option("--max-new-tokens", o->sc.max_new_tokens, "Tokens to generate per request")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  // Float ranges are checked by sampling_validate (finite, readable bounds in the message).
  cmd->add_option("--temperature", o->sc.temperature, "0 = greedy; finite, in [0, 1000]")
      ->capture_default_str();
  cmd->add_option("--top-p", o->sc.top_p, "Nucleus sampling mass, in [0, 1]")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sc.top_k,
                  "Sample among the k most probable tokens only (0: no limit), before --top-p")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o->sc.seed,
                  "Sampling seed (on a GPU, token t of request r is the draw (seed, r, t))")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->sc.ignore_eos, "Do not stop at end-of-sequence ids");
  add_engine_options(cmd, o->ec, "KV blocks per rank (0 = as needed)");
  cmd->add_option("--stats-json", o->stats_json, "Write per-rank KV and communication stats");
  cmd->add_option("--eplb-record", o->ec.eplb_record,
                  "Write the routed load per MoE layer and expert (load.json for eplb plan)");
  cmd->add_option("--logits-out", o->logits_out,
                  "Write the logits of every generated position, float32 [n_new, vocab] (.npy; "
                  "one request)");
  cmd->add_flag("--quiet", o->quiet, "No timing summary on stderr");
  cmd->callback([o]() {
    sampling_validate(o->sc);
    std::vector<std::vector<int>> prompts;
    for (const auto& t : o->tokens) prompts.push_back(parse_tokens(t));
    if (!o->tokens_file.empty())
      for (auto& p : read_tokens_file(o->tokens_file)) prompts.push_back(std::move(p));
    std::optional<Tokenizer> tok;
    if (!o->text_prompts.empty()) {
      tok = Tokenizer::load(o->model);
      for (const auto& p : o->text_prompts) {
        if (o->chat)
          prompts.push_back(tok->encode(tok->render_chat({{"user", p, {}}}, true), false));
        else
          prompts.push_back(tok->encode(p, true));
        if (prompts.back().empty()) fail("--prompt '{}' has no tokens", p);
      }
    } else if (o->chat) {
      fail("--chat needs --prompt");
    }
    if (prompts.empty())
      fail("give the prompt with --tokens (ids), --tokens-file or --prompt (text)");
    o->ec.model_dir = o->model;
    o->ec.keep_logits = !o->logits_out.empty();
    o->ec.progress = true;
    if (o->ec.keep_logits && prompts.size() != 1)
      fail("--logits-out takes exactly one request (one --tokens)");
    GenerateResult r = generate(o->ec, prompts, o->sc);
    if (r.ranks.empty()) return;  // an MPI rank other than 0: rank 0 reports
    if (!o->logits_out.empty())
      npy_write_f32(o->logits_out, r.logits[0].data(),
                    {static_cast<int64_t>(r.logits[0].size() / r.vocab), r.vocab});
    if (!o->stats_json.empty()) write_stats(o->stats_json, o->ec, r);
    if (!o->quiet) {
      std::fprintf(stderr,
                   "load %.1f ms | prefill %.2f ms | decode %d steps, %d tokens, %.2f ms, "
                   "%.1f tokens/s\n",
                   r.load_ms, r.prefill_ms, r.decode_steps, r.decode_tokens, r.decode_ms,
                   r.decode_ms > 0 ? r.decode_tokens * 1000.0 / r.decode_ms : 0.0);
      if (r.ranks.size() > 1 || !o->stats_json.empty()) print_table(r);
    }
    if (tok) {  // text: one reply per prompt, each ending in a newline; specials left out
      for (const auto& out : r.outputs) {
        const std::string text = tok->decode(out, true);
        std::printf("%s\n", text.c_str());
      }
      return;
    }
    for (const auto& out : r.outputs) {
      std::string line;
      for (size_t i = 0; i < out.size(); ++i) line += (i ? "," : "") + std::to_string(out[i]);
      std::printf("%s\n", line.c_str());
    }
  });
}

}  // namespace helix::cli
