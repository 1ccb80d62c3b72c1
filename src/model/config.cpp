#include "model/config.h"

#include <sys/stat.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/checked.h"
#include "core/error.h"
#include "core/file_io.h"

namespace helix {

namespace {

using json = nlohmann::json;

double get_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

struct Reader {
  const json& j;
  const std::string& origin;

  bool present(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  int integer(const char* key, bool required, int def = 0) const {
    if (!present(key)) {
      if (required) fail("{}: missing required field '{}'", origin, key);
      return def;
    }
    const json& v = j.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1LL << 31) - 1)
      fail("{}: field '{}' must be a non-negative integer, got {}", origin, key, v.dump());
    return v.get<int>();
  }
  double number(const char* key, double def) const {
    if (!present(key)) return def;
    const json& v = j.at(key);
    if (!v.is_number()) fail("{}: field '{}' must be a number, got {}", origin, key, v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!present(key)) return def;
    const json& v = j.at(key);
    if (!v.is_boolean())
      fail("{}: field '{}' must be true or false, got {}", origin, key, v.dump());
    return v.get<bool>();
  }
};

RopeConfig parse_rope(const json& root, const std::string& origin, int max_pos) {
  RopeConfig r;
  // transformers 5.x: rope_parameters holds everything; published: rope_theta + rope_scaling.
  json params = json::object();
  if (root.contains("rope_parameters") && !root["rope_parameters"].is_null()) {
    params = root["rope_parameters"];
  } else if (root.contains("rope_scaling") && !root["rope_scaling"].is_null()) {
    params = root["rope_scaling"];
  }
  if (!params.is_object()) fail("{}: rope_parameters/rope_scaling must be an object", origin);
  Reader p{params, origin};
  Reader top{root, origin};
  r.theta = p.number("rope_theta", top.number("rope_theta", 10000.0));
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (!params.contains(key) || params[key].is_null()) continue;
    if (!params[key].is_string())
      fail("{}: field '{}' must be a string, got {}", origin, key, params[key].dump());
    type = params[key].get<std::string>();
    break;
  }
  if (type != "default" && type != "yarn")
    fail("{}: rope type '{}' is not supported (default, yarn)", origin, type);
  r.type = type;
  if (type == "yarn") {
    r.original_max_position_embeddings =
        p.number("original_max_position_embeddings",
                 top.number("original_max_position_embeddings", max_pos));
    double factor = p.number("factor", -1.0);
    if (factor < 0) factor = max_pos / r.original_max_position_embeddings;
    r.factor = factor;
    r.beta_fast = p.number("beta_fast", 32.0);
    r.beta_slow = p.number("beta_slow", 1.0);
    if (r.beta_fast == 0) r.beta_fast = 32.0;  // transformers treats a falsy value as the default
    if (r.beta_slow == 0) r.beta_slow = 1.0;
    r.mscale = p.number("mscale", 0.0);
    r.mscale_all_dim = p.number("mscale_all_dim", 0.0);
    r.attention_factor = p.number("attention_factor", -1.0);
    r.truncate = p.boolean("truncate", true);
    if (r.factor <= 0) fail("{}: rope factor must be positive", origin);
  }
  if (r.theta <= 0) fail("{}: rope_theta must be positive", origin);
  return r;
}

// eos_token_id: an id or a list of ids, each an integer in [0, 2^31); null means none.
// Anything else is an error rather than a silently dropped or truncated stop token.
std::vector<int> parse_eos(const json& j, const std::string& origin, std::vector<int> def) {
  if (!j.contains("eos_token_id")) return def;
  const json& v = j["eos_token_id"];
  std::vector<int> ids;
  if (v.is_null()) return ids;
  auto one = [&](const json& e) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > (1LL << 31) - 1)
      fail("{}: eos_token_id must be a non-negative 32-bit integer or a list of them, got {}",
           origin, printable(e.dump()));
    ids.push_back(e.get<int>());
  };
  if (v.is_array()) {
    for (const auto& e : v) one(e);
  } else {
    one(v);
  }
  return ids;
}

}  // namespace

ModelConfig config_parse(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", origin, e.what());
  }
  if (!j.is_object()) fail("{}: config must be a JSON object", origin);
  Reader r{j, origin};
  ModelConfig c;
  if (j.contains("model_type") && !j["model_type"].is_string())
    fail("{}: field 'model_type' must be a string, got {}", origin, j["model_type"].dump());
  c.model_type = j.value("model_type", std::string());
  if (c.model_type != "deepseek_v3")
    fail("{}: unsupported model_type '{}' (helix runs deepseek_v3)", origin, c.model_type);
  c.vocab_size = r.integer("vocab_size", true);
  c.hidden_size = r.integer("hidden_size", true);
  c.intermediate_size = r.integer("intermediate_size", true);
  c.moe_intermediate_size = r.integer("moe_intermediate_size", false, 2048);
  c.num_hidden_layers = r.integer("num_hidden_layers", true);
  c.num_attention_heads = r.integer("num_attention_heads", true);
  // Absent: 1536 (transformers); explicit null: plain q_proj.
  c.q_lora_rank = j.contains("q_lora_rank") ? r.integer("q_lora_rank", false, 0) : 1536;
  c.kv_lora_rank = r.integer("kv_lora_rank", true);
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim", true);
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim", true);
  c.v_head_dim = r.integer("v_head_dim", true);
  c.n_routed_experts = r.integer("n_routed_experts", false, 256);
  c.n_shared_experts = r.integer("n_shared_experts", false, 1);
  c.num_experts_per_tok = r.integer("num_experts_per_tok", false, 8);
  // Routing and expert fields absent from config.json take transformers' DeepseekV3Config
  // defaults, as the reference implementation would.
  c.n_group = r.integer("n_group", false, 8);
  c.topk_group = r.integer("topk_group", false, 4);
  c.norm_topk_prob = r.boolean("norm_topk_prob", true);
  c.routed_scaling_factor = r.number("routed_scaling_factor", 2.5);
  c.first_k_dense_replace = r.integer("first_k_dense_replace", false, 3);
  c.max_position_embeddings = r.integer("max_position_embeddings", true);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.rope_interleave = r.boolean("rope_interleave", true);
  c.attention_bias = r.boolean("attention_bias", false);
  if (j.contains("hidden_act") && !j["hidden_act"].is_null()) {
    if (!j["hidden_act"].is_string())
      fail("{}: field 'hidden_act' must be a string, got {}", origin, j["hidden_act"].dump());
    c.hidden_act = j["hidden_act"];
  }
  if (c.hidden_act != "silu")
    fail("{}: hidden_act '{}' is not supported (silu)", origin, c.hidden_act);
  c.rope = parse_rope(j, origin, c.max_position_embeddings);
  c.eos_token_ids = parse_eos(j, origin, {1});

  auto positive = [&](int v, const char* name) {
    if (v <= 0) fail("{}: field '{}' must be positive", origin, name);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.kv_lora_rank, "kv_lora_rank");
  positive(c.qk_rope_head_dim, "qk_rope_head_dim");
  positive(c.v_head_dim, "v_head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.qk_rope_head_dim % 2) fail("{}: qk_rope_head_dim must be even", origin);
  // Cheap bounds before anything is sized from these: no single dimension past 2^24, no layer
  // or expert count past 2^16, and every weight's element count representable.
  for (auto [v, name] : {std::pair{c.vocab_size, "vocab_size"},
                         {c.hidden_size, "hidden_size"},
                         {c.intermediate_size, "intermediate_size"},
                         {c.moe_intermediate_size, "moe_intermediate_size"},
                         {c.num_attention_heads, "num_attention_heads"},
                         {c.q_lora_rank, "q_lora_rank"},
                         {c.kv_lora_rank, "kv_lora_rank"},
                         {c.qk_nope_head_dim, "qk_nope_head_dim"},
                         {c.qk_rope_head_dim, "qk_rope_head_dim"},
                         {c.v_head_dim, "v_head_dim"}})
    if (v > (1 << 24)) fail("{}: field '{}' = {} is larger than 2^24", origin, name, v);
  for (auto [v, name] : {std::pair{c.num_hidden_layers, "num_hidden_layers"},
                         {c.n_routed_experts, "n_routed_experts"},
                         {c.n_shared_experts, "n_shared_experts"},
                         {c.num_experts_per_tok, "num_experts_per_tok"}})
    if (v > (1 << 16)) fail("{}: field '{}' = {} is larger than 2^16", origin, name, v);
  const std::string what = origin + ": model size";
  checked_product({c.vocab_size, c.hidden_size, 4}, what);
  checked_product(
      {c.num_attention_heads, c.qk_head_dim(), std::max(c.q_lora_rank, c.hidden_size), 4}, what);
  checked_product({c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank, 4},
                  what);
  checked_product(
      {c.n_routed_experts + c.n_shared_experts, c.moe_intermediate_size, c.hidden_size, 12}, what);
  checked_product({c.num_hidden_layers, std::max(c.n_routed_experts, 1), 8, 4}, what);
  if (!std::isfinite(c.rms_norm_eps) || c.rms_norm_eps < 0)
    fail("{}: rms_norm_eps must be finite and >= 0", origin);
  if (!std::isfinite(c.routed_scaling_factor))
    fail("{}: routed_scaling_factor must be finite", origin);
  if (c.n_routed_experts > 0) {
    positive(c.num_experts_per_tok, "num_experts_per_tok");
    positive(c.moe_intermediate_size, "moe_intermediate_size");
    if (c.n_group <= 0 || c.n_routed_experts % c.n_group)
      fail("{}: n_routed_experts ({}) must be divisible by n_group ({})", origin,
           c.n_routed_experts, c.n_group);
    if (c.topk_group <= 0 || c.topk_group > c.n_group)
      fail("{}: topk_group ({}) must be in [1, n_group ({})]", origin, c.topk_group, c.n_group);
    if (c.n_routed_experts / c.n_group < 2)
      fail("{}: each expert group needs at least 2 experts (group score = sum of its best two)",
           origin);
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group))
      fail("{}: num_experts_per_tok ({}) exceeds the experts of topk_group groups", origin,
           c.num_experts_per_tok);
  }
  return c;
}

ModelConfig config_load(const std::string& dir) {
  const std::string path = dir + "/config.json";
  ModelConfig c = config_parse(file_read_text(path, size_t(16) << 20), printable(path));
  // generate() takes its stop tokens from generation_config.json when there is one; a file
  // that is there but unreadable or malformed is an error, not silently ignored.
  const std::string gpath = dir + "/generation_config.json";
  struct stat st {};
  if (::lstat(gpath.c_str(), &st) == 0) {
    const std::string gname = printable(gpath);
    const std::string text = file_read_text(gpath, size_t(16) << 20);
    json gj;
    try {
      gj = json::parse(text);
    } catch (const json::exception& e) {
      fail("{}: invalid JSON: {}", gname, printable(e.what()));
    }
    if (!gj.is_object()) fail("{}: must be a JSON object", gname);
    c.eos_token_ids = parse_eos(gj, gname, c.eos_token_ids);
  }
  return c;
}

double ModelConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope.type != "default" && rope.mscale_all_dim != 0.0) {
    double m = get_mscale(rope.factor, rope.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

double ModelConfig::rope_attention_factor() const {
  if (rope.type != "yarn") return 1.0;
  if (rope.attention_factor >= 0) return rope.attention_factor;
  if (rope.mscale != 0.0 && rope.mscale_all_dim != 0.0)
    return get_mscale(rope.factor, rope.mscale) / get_mscale(rope.factor, rope.mscale_all_dim);
  return get_mscale(rope.factor, 1.0);
}

std::vector<double> ModelConfig::rope_inv_freq() const {
  const int dim = qk_rope_head_dim;
  const double base = rope.theta;
  std::vector<double> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    // transformers computes base ** (2i/dim) in float32; round the same way.
    float pos_freq = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / dim);
    inv[i] = 1.0f / pos_freq;
  }
  if (rope.type != "yarn") return inv;
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(rope.original_max_position_embeddings / (rotations * 2 * M_PI))) /
           (2 * std::log(base));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int i = 0; i < dim / 2; ++i) {
    float pos_freq = 1.0f / static_cast<float>(inv[i]);
    float extrap = 1.0f / pos_freq;
    float interp = 1.0f / (static_cast<float>(rope.factor) * pos_freq);
    float ramp = static_cast<float>((i - low) / (high - low));
    ramp = std::min(1.0f, std::max(0.0f, ramp));
    float extrap_factor = 1.0f - ramp;
    inv[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
  }
  return inv;
}

}  // namespace helix
