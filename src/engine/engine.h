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
  int ep = 1;  // expert-parallel size: 1 = experts TP over tp*cp; else a multiple of tp*cp
               // (ep > tp*cp replicates the attention grid ep/(tp*cp) times)
  int tokens_per_block = 64;
  int kv_blocks = 0;             // physical KV blocks per rank; 0 = enough for the requests
  std::string comm = "threads";  // "threads" or "mpi"
  // Prompt KV: "context" = a context model on rank 0 prefills and hands each KV block to its
  // owner (disaggregated serving); "helix" = the decode ranks prefill in place, heads split.
  std::string prefill = "context";
  bool keep_logits = false;    // keep the logits of every generated position
  bool check_weights = false;  // scan every weight for NaN/Inf at load (--check-weights)
  bool progress = false;       // progress line on stderr
  // HOP-B: overlap the CP all-to-all of request i with the attention of request i+1 (decode
  // steps with several requests, cp > 1). Same outputs, bit for bit.
  bool hopb = false;
  // EPLB (needs ep): a fixed placement file, or online updates every eplb_interval steps over
  // eplb_slots slots; eplb_record writes the observed loads.
  std::string eplb_placement;
  std::string eplb_record;
  int eplb_slots = 0;
  int eplb_interval = 0;
  int eplb_layers_per_step = 2;  // layers switched per step once an update is ready
  double eplb_alpha = 0.8;       // decay of the load estimate per update window
};

struct EplbLayerReport {
  int layer = 0;
  int updates = 0;
  uint64_t bytes_moved = 0;           // summed over ranks
  std::vector<double> before, after;  // max/mean rank load at each update, old vs new placement
};

struct RankReport {
  int rank = 0, cp_rank = 0, tp_rank = 0;
  int kv_tokens = 0, kv_blocks = 0;  // summed over requests, at the end of decoding
  CommStats comm;                    // whole run
  CommStats decode_comm;             // decode steps only
  std::vector<int> blocks_per_step;  // [steps, requests] local KV blocks after each step
  // Time in attention and FFN (each including its communication) and in communication alone.
  double attn_ms = 0, ffn_ms = 0, comm_ms = 0;
};

struct GenerateResult {
  std::vector<std::vector<int>> outputs;   // [request] generated ids
  std::vector<std::vector<float>> logits;  // [request] [positions * vocab] when kept
  int vocab = 0;
  double load_ms = 0, prefill_ms = 0, decode_ms = 0;
  int decode_steps = 0, decode_tokens = 0;
  bool hopb = false;         // HOP-B ran (requested, cp > 1, and the backend allows it)
  int max_block_spread = 0;  // max over steps and requests of (max - min) KV blocks over ranks
  std::vector<RankReport> ranks;
  std::vector<double> step_ms;  // wall time of every decode step (rank 0)
  // EPLB
  std::vector<EplbLayerReport> eplb;  // [MoE layer]
  int eplb_late = 0;                  // steps that waited for the worker
  double eplb_wait_ms = 0;
  std::vector<std::vector<double>> expert_load;    // [MoE layer][expert] routed pairs, all ranks
  std::vector<std::vector<double>> dispatch_sent;  // [MoE layer][expert] EP rows sent, all ranks
  std::vector<std::vector<double>> dispatch_recv;  // [MoE layer][expert] EP rows computed
  std::vector<double> final_balance;  // [MoE layer] max/mean of the load on the final placement
};

GenerateResult generate(const EngineConfig& cfg, const std::vector<std::vector<int>>& prompts,
                        const SamplingConfig& sampling);

// Logits [n_tokens, vocab] of one full forward over the tokens (single rank).
std::vector<float> score(const std::string& model_dir, const std::vector<int>& tokens, int* vocab);

}  // namespace helix
