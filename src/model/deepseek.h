#pragma once
// The DeepSeek-V3 layer graph on one rank of a Helix deployment (a single-rank run is the
// 1 x 1 case of the same code). Attention heads are sharded over the TP group, the latent KV
// over the CP group, and the FFN over all tp*cp ranks.
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/tensor.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "moe/eplb.h"
#include "ops/backend.h"
#include "parallel/comm.h"
#include "parallel/comm_worker.h"
#include "parallel/data_comm.h"
#include "parallel/mapping.h"

namespace helix {

struct AttnWeights {
  DTensor q_proj;                   // [Hl * qk_head_dim, hidden]         (q_lora_rank null)
  DTensor q_a, q_a_bias, q_a_norm;  // [q_lora, hidden], [q_lora], [q_lora]
  DTensor q_b;                      // [Hl * qk_head_dim, q_lora]
  DTensor kv_a;                     // [kv_lora + rope, hidden]
  DTensor kv_a_bias;                // [kv_lora + rope] (attention_bias)
  DTensor kv_a_norm;                // [kv_lora]
  DTensor w_uk;                     // [Hl, qk_nope, kv_lora]  key half of kv_b_proj
  DTensor w_uv;                     // [Hl, v_head, kv_lora]   value half of kv_b_proj
  DTensor o_proj;                   // [hidden, Ho * v_head]    columns of the heads this rank owns
  DTensor o_bias;                   // [hidden] (attention_bias; added by rank 0 only)
};

struct MlpWeights {
  DTensor gate_up;  // [2 * I_local, hidden]: gate rows then up rows
  DTensor down;     // [hidden, I_local]
  int inter = 0;    // I_local
};

struct LayerWeights {
  DTensor input_norm;  // [hidden]
  DTensor post_norm;   // [hidden]
  AttnWeights attn;
  bool moe = false;
  MlpWeights dense;                 // dense layers
  DTensor router;                   // [E, hidden]
  DTensor router_bias;              // [E] e_score_correction_bias
  std::vector<MlpWeights> experts;  // TP: all E experts (sharded); EP: this rank's slots (whole)
  int expert_begin = 0;             // EP: first slot of this rank
  DTensor gate_up_ptrs, down_ptrs;  // GPU: [E] device pointers to experts[e]'s weights
  DTensor gate_up_scale_ptrs, down_scale_ptrs;   // FP8: [E] device pointers to their scales
  std::vector<DTensor> gate_up_list, down_list;  // the same, as tensors
  MlpWeights shared;                             // shared experts, TP-sharded
};

// One sequence of a forward step: a whole prompt (start == 0) or one decode token.
struct SeqStep {
  int64_t id = 0;
  std::vector<int> tokens;
  int start = 0;  // global position of tokens[0]
};

// Where the layer graph runs and in which dtypes.
struct ModelOptions {
  std::shared_ptr<Ops> ops;         // null: the CPU reference (CpuOps)
  DType weight_dtype = DType::F32;  // F32 or BF16 (CUDA)
  DType kv_dtype = DType::F32;      // latent KV pool
  bool cuda_graphs = true;          // capture and replay decode steps (bf16 pool on CUDA)
  // GPU: the KV pool takes this fraction of the memory free after the weights (0: kv_blocks).
  double kv_memory_fraction = 0;
  // bfloat16 mode: the MoE router reads the fp32 normed hidden state (false: its bf16 rounding,
  // as before; kept for the accuracy experiment of tests/cuda/test_bf16_accuracy.cpp).
  bool router_f32_input = true;
  // Accuracy experiments (tests only): the final norm and lm_head in fp32 in bfloat16 mode;
  // weights rounded to bf16 values in float32 mode (the error bf16 weights alone cause); the
  // routed experts of every MoE layer copied to the host (recorded_routes()).
  bool lm_head_f32 = false;
  bool round_weights_bf16 = false;
  bool record_routes = false;
};

// Host metadata of one forward step, and its copy on the backend's device (uploaded once).
struct StepBatch {
  int T = 0;
  std::vector<int> tok, pos;
  std::vector<int64_t> slots;    // [T] this rank's KV row of each token (-1: another CP rank)
  std::vector<int> decode_rows;  // token rows of decode steps
  std::vector<int64_t> decode_ids;
  int max_blocks = 0;            // columns of block_table
  int max_len = 0;               // largest local length
  std::vector<int> block_table;  // [B, max_blocks] local physical blocks of each decode row
  std::vector<int> seq_lens;     // [B] local tokens
  DTensor tok_d, pos_d, slots_d, block_table_d, seq_lens_d;
};

// Per-step timings and counters that the CLI reports.
struct ModelStats {
  double attn_ms = 0, ffn_ms = 0, comm_ms = 0;
  std::vector<std::vector<int64_t>> expert_tokens;  // [layer][expert] pairs routed on this rank
  std::vector<std::vector<int64_t>> dispatch_sent;  // [layer][expert] EP rows sent by this rank
  std::vector<std::vector<int64_t>> dispatch_recv;  // [layer][expert] EP rows computed here
};

// One EPLB placement update of one MoE layer, as applied.
struct EplbUpdate {
  int layer = 0;
  int64_t step = 0;              // decode step at which the layer switched
  double before = 1, after = 1;  // max/mean rank load of the driving estimate, old vs new
  int slots_moved = 0;
  uint64_t bytes_moved = 0;  // expert weight bytes this rank loaded for the new placement
};

class DeepseekModel {
 public:
  DeepseekModel(const ModelConfig& cfg, const WeightStore& ws, const Mapping& map,
                Communicator& world, int tokens_per_block, int kv_blocks,
                const ModelOptions& opt = {});

  // Reserves the KV rows of a step's tokens (requests added with kv().add_request): the caller
  // does it before forward(). A pool that runs out fails before any request of the step grew,
  // so the caller can retry with fewer requests.
  void reserve_kv(const std::vector<SeqStep>& seqs);
  // Runs all layers over the sequences (their KV reserved). Returns logits [rows, vocab]:
  // every token when all_logits, else the last token of each sequence. Writes the tokens'
  // latents into the KV cache.
  Tensor forward(const std::vector<SeqStep>& seqs, bool all_logits);
  // The same step (the last token of each sequence) with the next ids sampled on the backend:
  // row i of `sampling` for sequence i (ops/sample.h). Only the ids come back to the host, and
  // the logits [seqs, vocab] too when `logits` is not null. Throws NonFiniteError for a row of
  // non-finite logits. Decode steps on a CUDA-graph backend sample inside the graph.
  std::vector<int> forward_sample(const std::vector<SeqStep>& seqs,
                                  const std::vector<SampleRow>& sampling, Tensor* logits);
  // record_routes: [layer] expert ids [tokens, top_k] of every step since the last clear.
  std::vector<std::vector<int>>& recorded_routes() { return routes_; }

  ~DeepseekModel();

  // ---- EPLB (expert parallel only) ----------------------------------------------------------
  // Installs one placement per MoE layer (in layer order) and loads the slots of this rank.
  void eplb_install(const std::vector<Placement>& per_moe_layer);
  // Starts the background worker: plans the next placements from `estimate` ([MoE layer][expert])
  // and loads the changed slots' weights into spare buffers. False if one is still pending.
  bool eplb_start_update(const LoadMatrix& estimate);
  bool eplb_pending() const { return pending_; }
  // Switches up to max_layers pending layers to their new placement (between steps). Waits for
  // the worker only if it has not finished; the wait is added to *waited_ms.
  int eplb_apply(int max_layers, double* waited_ms);
  const std::vector<int>& moe_layers() const { return moe_layers_; }
  const Placement& placement(int moe_index) const { return placement_[moe_index]; }
  const std::vector<EplbUpdate>& eplb_updates() const { return updates_; }
  void set_step(int64_t step) { step_ = step; }

  // HOP-B: in decode steps with several requests and cp > 1, run the CP all-to-all + combine of
  // request i on a worker thread while this thread computes the attention of request i+1.
  // Outputs are bitwise the same either way. Ignored (stays off) when cp == 1 or the backend
  // cannot run collectives from a second thread.
  void set_hopb(bool on);
  bool hopb() const { return hopb_worker_ != nullptr; }

  // CUDA graphs for decode steps (on by default where the backend supports them).
  void set_cuda_graphs(bool on) { opt_.cuda_graphs = on; }
  KvCache& kv() { return *kv_; }
  Ops& ops() { return *ops_; }
  const ModelConfig& config() const { return cfg_; }
  const Mapping& mapping() const { return map_; }
  Communicator& world() { return world_; }
  Communicator& cp_comm() { return *cp_comm_; }
  ModelStats& stats() { return stats_; }
  int local_heads() const { return hl_; }
  std::pair<int, int> owned_heads() const { return {ho_begin_, ho_end_}; }  // within local heads

 private:
  void load_weights(const WeightStore& ws);
  // A weight to the backend in the weight dtype; shows load progress when stderr is a terminal.
  DTensor up(Tensor&& t) const;
  // Counts loaded bytes; progress (MB, MB/s) on stderr when it is a terminal, rank 0.
  void note_loaded(uint64_t bytes) const;
  DTensor act(std::vector<int64_t> shape) const { return ops_->alloc(shape, ops_->act_dtype()); }
  // model/step.cpp. Host metadata of a step, and (upload) its device copy.
  StepBatch make_step(const std::vector<SeqStep>& seqs, bool upload);
  // All layers over a step; logits of the given token rows into logits_d [rows, vocab] (fp32).
  // Nothing in it allocates host-visible memory or synchronises: it can be graph-captured.
  void run_step(const std::vector<SeqStep>& seqs, const StepBatch& st, const std::vector<int>& rows,
                const DTensor& logits_d);
  // forward / forward_sample: logits of every token or the last of each sequence; sampled ids
  // when sampling is not null (*ids), host logits when logits is not null.
  void step(const std::vector<SeqStep>& seqs, bool all_logits,
            const std::vector<SampleRow>* sampling, Tensor* logits, std::vector<int>* ids);
  void forward_graph(const std::vector<SeqStep>& seqs, const std::vector<SampleRow>* sampling,
                     Tensor* logits, std::vector<int>* ids);
  // Device logits [n, vocab] (and sampled ids [n]) to the host, with the non-finite checks.
  void fetch(const DTensor& logits_d, const DTensor& ids_d, int n, Tensor* logits,
             std::vector<int>* ids);
  // y[m, n] (ldy) = x[m, k] (ldx) . w^T (+ y when accumulate); ld 0: dense.
  void linear(const TensorView& x, int64_t ldx, const DTensor& w, const TensorView& y, int64_t ldy,
              int m, int n, int k, bool accumulate = false);
  // model/attention.cpp
  void attention(int layer, const std::vector<SeqStep>& seqs, const StepBatch& st, const DTensor& h,
                 const DTensor& out);
  // model/ffn.cpp
  // h32: the same rows in fp32 before their bf16 rounding (bfloat16 mode; null otherwise).
  void ffn(int layer, const DTensor& h, const DTensor& h32, const DTensor& out);
  void moe_tp(int layer, const DTensor& h, const std::vector<int>& ids, const std::vector<float>& w,
              const DTensor& out);
  void moe_ep(int layer, const DTensor& h, const DTensor& out);
  // GPU: routing, expert permute, grouped GEMMs and unpermute all on the device.
  void moe_device(int layer, const DTensor& h, const DTensor& h32, const DTensor& out);
  // Router + DeepSeek routing for `rows` tokens: ids/w [rows, top_k]; counts expert_tokens.
  void route(int layer, const TensorView& x, int rows, std::vector<int>& ids,
             std::vector<float>& w);
  void mlp_apply(const MlpWeights& m, const TensorView& x, int rows, const TensorView& out,
                 bool accumulate);
  MlpWeights load_expert(const WeightStore& ws, int layer, int expert, bool whole) const;
  // FP8 checkpoints in bf16 mode on one GPU: the weight stays FP8 E4M3 in GPU memory with its
  // 128x128 block scales (applied inside the GEMM); names stacked by rows (gate then up).
  bool keep_fp8(const WeightStore& ws, const std::string& name) const;
  DTensor fp8_weight(const WeightStore& ws, const std::vector<std::string>& names) const;
  DTensor fp8_checked(const WeightStore& ws, const std::string& name,
                      std::vector<int64_t> shape) const;
  // bf16 checkpoints in bf16 mode on one GPU: the stored bytes go to the GPU as they are (the
  // fp32 round trip on the host loaded the 28 GB slice at 0.3 GB/s); bitwise the same weights.
  // (name, expected shape) pairs stacked by rows; false when any is not a 2-D bf16 tensor.
  using NamedShape = std::pair<std::string, std::vector<int64_t>>;
  bool keep_bf16(const WeightStore& ws, const std::vector<NamedShape>& parts) const;
  DTensor bf16_weight(const WeightStore& ws, const std::vector<NamedShape>& parts) const;
  // Runs experts[e] over the rows rows_of[e] (input row i at in(i)); row i's output goes to
  // row i of y.
  void experts_apply(const std::vector<MlpWeights>& experts,
                     const std::vector<std::vector<int>>& rows_of,
                     const std::function<TensorView(int)>& in, const DTensor& y);

  ModelConfig cfg_;
  Mapping map_;
  Communicator& world_;
  std::unique_ptr<Communicator> cp_comm_;    // same dp and tp rank: the KV shards
  std::unique_ptr<Communicator> attn_comm_;  // same dp rank: the tp x cp attention grid
  // Data plane of the activation all-reduces and the EP combine (DESIGN.md: typed, ordered on
  // the backend's stream; here over the host communicators).
  std::unique_ptr<DataComm> attn_data_, world_data_;
  int hl_ = 0;                     // heads of this rank's TP group
  int ho_begin_ = 0, ho_end_ = 0;  // heads this rank owns after the CP all-to-all (local idx)
  ModelOptions opt_;
  std::shared_ptr<Ops> ops_;
  // Decode graphs by (batch, block-table width), with their fixed index buffers.
  struct DecodeGraph {
    DTensor tok, pos, slots, block_table, seq_lens, logits, params, ids;
    bool warm = false;
    std::shared_ptr<void> exec;
  };
  std::map<std::pair<int, int>, DecodeGraph> graphs_;
  // Load progress (constructor only; load_expert also runs on the EPLB worker, silently).
  bool loading_ = false;
  mutable uint64_t loaded_bytes_ = 0;
  mutable Clock::time_point load_t0_;
  DTensor embed;    // [vocab, hidden]
  DTensor norm;     // [hidden]
  DTensor lm_head;  // [vocab, hidden] (may alias embed)
  RopeTable rope_;
  std::vector<LayerWeights> layers_;
  float scale_ = 1.0f;
  std::unique_ptr<KvCache> kv_;
  ModelStats stats_;
  std::vector<std::vector<int>> routes_;  // record_routes

  const WeightStore& ws_;
  std::vector<int> moe_layers_;       // layer index of each MoE layer
  std::vector<int> moe_index_;        // [layer] -> MoE index or -1
  std::vector<Placement> placement_;  // [MoE layer] current placement
  std::vector<EplbRouter> routers_;   // [MoE layer]
  int64_t step_ = 0;
  // The update in flight: written by the worker, read after it is done.
  bool pending_ = false;
  size_t next_applied_ = 0;  // MoE layers already switched
  std::thread worker_;
  std::atomic<bool> worker_done_{false};
  std::exception_ptr worker_error_;
  std::vector<Placement> next_placement_;
  std::vector<std::vector<MlpWeights>> next_slots_;
  std::vector<EplbUpdate> next_updates_;
  std::vector<EplbUpdate> updates_;
  // HOP-B: runs helix_combine on cp_comm_ during the decode attention; created by set_hopb.
  // Between submitting the first exchange and wait(), only the worker touches any communicator.
  std::unique_ptr<CommWorker> hopb_worker_;
};

}  // namespace helix
