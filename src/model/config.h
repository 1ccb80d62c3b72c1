#pragma once
// ModelConfig: every config.json field of DeepSeek-V3 that changes the math. Reads both layouts:
// published checkpoints (top-level rope_theta + rope_scaling) and transformers 5.x
// (rope_parameters holding rope_theta).
#include <string>
#include <vector>

namespace helix {

struct RopeConfig {
  std::string type = "default";  // "default" or "yarn"
  double theta = 10000.0;
  // yarn only
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;             // 0 = absent
  double mscale_all_dim = 0.0;     // 0 = absent
  double attention_factor = -1.0;  // < 0 = derived
  bool truncate = true;
};

struct ModelConfig {
  std::string model_type;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;      // dense MLP
  int moe_intermediate_size = 0;  // each routed / shared expert
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int q_lora_rank = 0;  // 0 = null: plain q_proj
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int first_k_dense_replace = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool rope_interleave = true;
  bool attention_bias = false;
  std::string hidden_act = "silu";
  RopeConfig rope;
  std::vector<int>
      eos_token_ids;  // generation stops at any of these (generation_config.json first)

  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace;
  }
  // Softmax scale: 1/sqrt(qk_head_dim), times mscale(factor, mscale_all_dim)^2 for scaled rope.
  double softmax_scale() const;
  // Rotary inverse frequencies [qk_rope_head_dim / 2] and the cos/sin multiplier.
  std::vector<double> rope_inv_freq() const;
  double rope_attention_factor() const;
};

// Parses dir/config.json; throws helix::Error naming the file and the field.
ModelConfig config_load(const std::string& dir);
ModelConfig config_parse(const std::string& json_text, const std::string& origin);

}  // namespace helix
