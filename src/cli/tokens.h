#pragma once
// Parsing of `--tokens 1,2,3`, and the option groups that several commands share.
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/error.h"

namespace helix::cli {

inline std::vector<int> parse_tokens(const std::string& s) {
  std::vector<int> out;
  size_t pos = 0;
  if (s.find_first_not_of(" ,") == std::string::npos)
    fail("--tokens is empty: give ids like 1,2,3");
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    std::string tok = s.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    const auto b = tok.find_first_not_of(' '), e = tok.find_last_not_of(' ');
    if (b == std::string::npos) fail("--tokens '{}': empty entry", s);
    tok = tok.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used != tok.size() || v < 0 || v > 0x7fffffff)
      fail("--tokens: '{}' is not a token id (non-negative integer)", tok);
    out.push_back(static_cast<int>(v));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  return out;
}

// --tokens-file: one request per line, comma-separated ids (blank lines skipped).
inline std::vector<std::vector<int>> read_tokens_file(const std::string& path) {
  std::ifstream f(path);
  if (!f.good()) fail("cannot open --tokens-file '{}'", path);
  std::vector<std::vector<int>> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(parse_tokens(line));
  }
  if (out.empty()) fail("--tokens-file '{}' has no requests", path);
  return out;
}

// --device / --dtype / --kv-cache-dtype / --gpu-memory-fraction, shared by score and generate
// (and serve, through add_engine_options).
template <class App, class Dev>
void add_device_options(App* cmd, Dev& d) {
  d.device = "auto";
  cmd->add_option("--device", d.device, "auto (the GPU if there is one), cpu or cuda")
      ->capture_default_str();
  cmd->add_option("--dtype", d.dtype,
                  "float32 or bfloat16 (default: bfloat16 on cuda, float32 on cpu)");
  cmd->add_option("--kv-cache-dtype", d.kv_cache_dtype,
                  "latent KV cache: auto (the --dtype), float32, bfloat16 (cuda) or fp8 (e4m3 "
                  "latent + a scale per token, bf16 rope part: 1.76x the tokens of bfloat16 in "
                  "the same memory at DeepSeek-V3's shapes; prompts attend unquantised, decode "
                  "reads the cache)")
      ->capture_default_str();
  cmd->add_option("--gpu-memory-fraction", d.gpu_memory_fraction,
                  "CUDA: fraction of the GPU memory free after the weights for the KV pool (0: as "
                  "the requests need)")
      ->capture_default_str();
  cmd->add_flag("--no-cuda-graph{false}", d.cuda_graph,
                "CUDA: run decode steps eagerly instead of replaying captured graphs");
}

// The engine's layout, KV, rank-backend, HOP-B, EPLB and device options, shared by generate and
// serve. kv_blocks_help says what 0 means for the command.
template <class App, class EngineCfg>
void add_engine_options(App* cmd, EngineCfg& ec, const char* kv_blocks_help) {
  add_device_options(cmd, ec.dev);
  cmd->add_option("--tp", ec.tp, "Attention tensor-parallel size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cp", ec.cp, "Context-parallel (KV-parallel) size: Helix")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--ep", ec.ep,
                  "Expert-parallel size: 1 = routed experts tensor-parallel over the tp*cp ranks; "
                  "else a multiple of tp*cp (ep > tp*cp replicates attention ep/(tp*cp) times)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--tokens-per-block", ec.tokens_per_block, "KV cache block size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--kv-blocks", ec.kv_blocks, kv_blocks_help)
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--comm", ec.comm, "Rank backend: threads (one process) or mpi (mpirun)")
      ->capture_default_str()
      ->check(CLI::IsMember({"threads", "mpi"}));
  cmd->add_option("--prefill", ec.prefill,
                  "Prompt KV: context (rank 0 prefills, hands each block to its owner) or helix "
                  "(every rank prefills its heads in place)")
      ->capture_default_str()
      ->check(CLI::IsMember({"context", "helix"}));
  cmd->add_flag("--hopb", ec.hopb,
                "HOP-B: overlap the CP all-to-all of request i with the attention of request i+1");
  cmd->add_option("--eplb-placement", ec.eplb_placement,
                  "Serve with this fixed expert placement (placement.json; needs --ep)");
  cmd->add_option(
         "--eplb-slots", ec.eplb_slots,
         "Physical expert slots (needs --ep): redundant replicas; re-planned with --eplb-interval")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eplb-interval", ec.eplb_interval,
                  "Online EPLB: re-plan every K decode steps in the background (needs --ep)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eplb-layers-per-step", ec.eplb_layers_per_step,
                  "Online EPLB: MoE layers switched to a new placement per step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--check-weights", ec.check_weights,
                "Scan every weight for NaN/Inf at load (reads the whole checkpoint once)");
}

}  // namespace helix::cli
