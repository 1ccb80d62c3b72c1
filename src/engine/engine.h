#pragma once
// The decode engine: loads a checkpoint on every rank of a deployment, prefills the requests,
// then decodes them together (one token per request per step) until each has its tokens or
// hits an end-of-sequence id. Ranks run SPMD; rank 0 samples and broadcasts the ids.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "parallel/comm.h"

namespace helix {

struct EngineConfig {
  std::string model_dir;
  int tp = 1;
  int cp = 1;
  bool ep = false;            // routed experts expert-parallel over the tp*cp ranks
  int tokens_per_block = 64;
  int kv_blocks = 0;          // physical KV blocks per rank; 0 = enough for the requests
  std::string comm = "threads";  // "threads" or "mpi"
  bool keep_logits = false;   // keep the logits of every generated position
  bool progress = false;      // progress line on stderr
};

struct RankReport {
  int rank = 0, cp_rank = 0, tp_rank = 0;
  int kv_tokens = 0, kv_blocks = 0;     // summed over requests, at the end of decoding
  CommStats comm;                        // whole run
  CommStats decode_comm;                 // decode steps only
  std::vector<int> blocks_per_step;      // [steps, requests] local KV blocks after each step
};

struct GenerateResult {
  std::vector<std::vector<int>> outputs;         // [request] generated ids
  std::vector<std::vector<float>> logits;        // [request] [positions * vocab] when kept
  int vocab = 0;
  double load_ms = 0, prefill_ms = 0, decode_ms = 0;
  int decode_steps = 0, decode_tokens = 0;
  int max_block_spread = 0;  // max over steps and requests of (max - min) KV blocks over ranks
  std::vector<RankReport> ranks;
};

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling);

// Logits [n_tokens, vocab] of one full forward over the tokens (single rank).
std::vector<float> score(const std::string& model_dir, const std::vector<int>& tokens, int* vocab);

}  // namespace helix
