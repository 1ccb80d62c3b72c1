// config.json parsing: both layouts (transformers 5.x rope_parameters, published top-level
// rope_theta + rope_scaling), defaults, YaRN frequencies / attention factor / softmax scale
// against the transformers formulas recomputed here in float64 (relative tolerance 1e-6: the
// engine rounds base**(2i/dim) through float32 as transformers does), and every error path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fixture_util.h"
#include "model/config.h"

namespace helix {
namespace {

using json = nlohmann::json;

// A small valid DeepSeek-V3 config in the transformers 5.x layout.
json base_config() {
  return json{{"model_type", "deepseek_v3"},
              {"vocab_size", 256},
              {"hidden_size", 48},
              {"intermediate_size", 64},
              {"moe_intermediate_size", 16},
              {"num_hidden_layers", 3},
              {"num_attention_heads", 4},
              {"q_lora_rank", nullptr},
              {"kv_lora_rank", 32},
              {"qk_nope_head_dim", 16},
              {"qk_rope_head_dim", 16},
              {"v_head_dim", 16},
              {"n_routed_experts", 16},
              {"n_shared_experts", 1},
              {"num_experts_per_tok", 4},
              {"n_group", 4},
              {"topk_group", 2},
              {"norm_topk_prob", true},
              {"routed_scaling_factor", 2.5},
              {"first_k_dense_replace", 1},
              {"max_position_embeddings", 512},
              {"rms_norm_eps", 1e-6},
              {"hidden_act", "silu"},
              {"rope_interleave", true},
              {"eos_token_id", 1},
              {"rope_parameters", {{"rope_theta", 10000.0}, {"rope_type", "default"}}}};
}

ModelConfig parse(const json& j) {
  return config_parse(j.dump(), "test/config.json");
}

// Expects helix::Error whose message contains every one of `needles`.
void expect_error(const std::string& text, std::initializer_list<std::string> needles,
                  const std::string& what) {
  try {
    config_parse(text, "test/config.json");
    ADD_FAILURE() << what << ": no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos)
          << what << ": message '" << msg << "' lacks '" << n << "'";
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": message is not one line";
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-helix::Error: " << e.what();
  }
}
void expect_error(const json& j, std::initializer_list<std::string> needles,
                  const std::string& what) {
  expect_error(j.dump(), needles, what);
}

// ---- transformers' YaRN, recomputed ---------------------------------------------------------

double get_mscale(double f, double m) {
  return f <= 1 ? 1.0 : 0.1 * m * std::log(f) + 1.0;
}

std::vector<double> default_inv_freq(int dim, double base) {
  std::vector<double> f(dim / 2);
  for (int i = 0; i < dim / 2; ++i) f[i] = 1.0 / std::pow(base, 2.0 * i / dim);
  return f;
}

std::vector<double> yarn_inv_freq(int dim, double base, double factor, double orig,
                                  double beta_fast, double beta_slow, bool truncate) {
  auto corr = [&](double r) {
    return dim * std::log(orig / (r * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = corr(beta_fast), high = corr(beta_slow);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;
  std::vector<double> f(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    const double pos = std::pow(base, 2.0 * i / dim);
    const double extrap = 1.0 / pos, interp = 1.0 / (factor * pos);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double ef = 1.0 - ramp;
    f[i] = interp * (1 - ef) + extrap * ef;
  }
  return f;
}

void expect_freqs(const std::vector<double>& got, const std::vector<double>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-6 * want[i]) << what << " i=" << i;
}

// ---- layouts and defaults -------------------------------------------------------------------

TEST(Config, V5LayoutAndDefaults) {
  ModelConfig c = parse(base_config());
  EXPECT_EQ(c.model_type, "deepseek_v3");
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.hidden_size, 48);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.q_lora_rank, 0);  // null: plain q_proj
  EXPECT_EQ(c.kv_lora_rank, 32);
  EXPECT_EQ(c.qk_head_dim(), 32);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(c.rope_attention_factor(), 1.0);
  expect_freqs(c.rope_inv_freq(), default_inv_freq(16, 10000.0), "default");
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{1});

  // Optional fields absent: transformers' DeepseekV3Config defaults (configuration_deepseek_v3.py),
  // not helix's own guesses: n_group 8, topk_group 4, 8 experts per token, 2.5 scaling, ...
  json j = base_config();
  for (const char* k :
       {"q_lora_rank", "moe_intermediate_size", "n_group", "topk_group", "norm_topk_prob",
        "routed_scaling_factor", "first_k_dense_replace", "rms_norm_eps", "hidden_act",
        "rope_interleave", "rope_parameters", "eos_token_id", "n_shared_experts",
        "num_experts_per_tok", "n_routed_experts"})
    j.erase(k);
  c = parse(j);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{1});
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  // Routing fields absent but experts given: the defaults must still fit the expert count, or
  // the error names them (16 experts over the default 8 groups of 2 is fine; 8 experts is not).
  j["n_routed_experts"] = 16;
  EXPECT_EQ(parse(j).topk_group, 4);
  j["n_routed_experts"] = 8;
  expect_error(j, {"at least 2 experts"}, "8 experts over the default 8 groups");

  // eos_token_id: null means none; out of int range, negative or non-integer is an error.
  j = base_config();
  j["eos_token_id"] = nullptr;
  EXPECT_TRUE(parse(j).eos_token_ids.empty());
  j["eos_token_id"] = json::array({3, 5});
  EXPECT_EQ(parse(j).eos_token_ids, (std::vector<int>{3, 5}));
  for (json bad : {json(4294967297LL), json(-1), json(1.5), json("2"), json::array({1, "x"})}) {
    j["eos_token_id"] = bad;
    expect_error(j, {"eos_token_id"}, "eos " + bad.dump());
  }

  // Dense model: no experts at all.
  j = base_config();
  j["n_routed_experts"] = 0;
  c = parse(j);
  EXPECT_FALSE(c.is_moe_layer(2));
}

TEST(Config, QLoraNullVsSet) {
  json j = base_config();
  j["q_lora_rank"] = 24;
  EXPECT_EQ(parse(j).q_lora_rank, 24);
  j["q_lora_rank"] = nullptr;
  EXPECT_EQ(parse(j).q_lora_rank, 0);
  j.erase("q_lora_rank");  // absent: transformers' default, not "null"
  EXPECT_EQ(parse(j).q_lora_rank, 1536);
}

TEST(Config, RopeThetaFromEitherLayout) {
  json v5 = base_config();
  v5["rope_parameters"] = {{"rope_theta", 50000.0}, {"rope_type", "default"}};
  ModelConfig a = parse(v5);
  EXPECT_DOUBLE_EQ(a.rope.theta, 50000.0);
  expect_freqs(a.rope_inv_freq(), default_inv_freq(16, 50000.0), "v5 theta");

  json legacy = base_config();
  legacy.erase("rope_parameters");
  legacy["rope_theta"] = 50000.0;
  legacy["rope_scaling"] = nullptr;
  ModelConfig b = parse(legacy);
  EXPECT_EQ(b.rope.type, "default");
  EXPECT_DOUBLE_EQ(b.rope.theta, 50000.0);
  expect_freqs(b.rope_inv_freq(), default_inv_freq(16, 50000.0), "legacy theta");

  json interleave = base_config();
  interleave["rope_interleave"] = false;
  EXPECT_FALSE(parse(interleave).rope_interleave);
}

struct YarnCase {
  const char* name;
  int nope, rope;
  double theta, factor, orig;
  double beta_fast, beta_slow;
  double mscale, mscale_all_dim;  // 0 = absent
  bool truncate;
};

void check_yarn(const YarnCase& y, bool legacy_layout) {
  json scaling = {{"factor", y.factor},
                  {"original_max_position_embeddings", y.orig},
                  {"beta_fast", y.beta_fast},
                  {"beta_slow", y.beta_slow}};
  if (y.mscale) scaling["mscale"] = y.mscale;
  if (y.mscale_all_dim) scaling["mscale_all_dim"] = y.mscale_all_dim;
  if (!y.truncate) scaling["truncate"] = false;
  json j = base_config();
  j["qk_nope_head_dim"] = y.nope;
  j["qk_rope_head_dim"] = y.rope;
  j.erase("rope_parameters");
  if (legacy_layout) {
    j["rope_theta"] = y.theta;
    scaling["type"] = "yarn";
    j["rope_scaling"] = scaling;
  } else {
    scaling["rope_type"] = "yarn";
    scaling["rope_theta"] = y.theta;
    j["rope_parameters"] = scaling;
  }
  const std::string what = std::string(y.name) + (legacy_layout ? " (legacy)" : " (v5)");
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope.type, "yarn") << what;
  EXPECT_DOUBLE_EQ(c.rope.theta, y.theta) << what;
  EXPECT_DOUBLE_EQ(c.rope.factor, y.factor) << what;
  expect_freqs(
      c.rope_inv_freq(),
      yarn_inv_freq(y.rope, y.theta, y.factor, y.orig, y.beta_fast, y.beta_slow, y.truncate), what);
  const double af = (y.mscale && y.mscale_all_dim)
                        ? get_mscale(y.factor, y.mscale) / get_mscale(y.factor, y.mscale_all_dim)
                        : get_mscale(y.factor, 1.0);
  EXPECT_NEAR(c.rope_attention_factor(), af, 1e-12) << what;
  double scale = 1.0 / std::sqrt(double(y.nope + y.rope));
  if (y.mscale_all_dim) scale *= std::pow(get_mscale(y.factor, y.mscale_all_dim), 2);
  EXPECT_NEAR(c.softmax_scale(), scale, 1e-12 * scale) << what;
}

const YarnCase kYarn[] = {
    // name, nope, rope, theta, factor, orig, beta_fast, beta_slow, mscale, mscale_all_dim, trunc
    {"fixture legacy", 16, 16, 10000, 4, 128, 32, 1, 1.0, 1.0, true},
    {"fixture v5", 16, 16, 10000, 8, 128, 32, 1, 0.707, 1.0, true},
    {"DeepSeek-V3", 128, 64, 10000, 40, 4096, 32, 1, 1.0, 1.0, true},
    {"no mscale", 16, 16, 10000, 4, 128, 32, 1, 0, 0, true},
    {"mscale_all_dim only", 16, 32, 50000, 16, 1024, 16, 2, 0, 0.8, true},
    {"high clamped", 16, 16, 10000, 2, 1e9, 32, 1, 1.0, 1.0, true},
    {"no truncation", 128, 64, 10000, 40, 4096, 32, 1, 1.0, 1.0, false},
    {"factor <= 1", 16, 16, 10000, 1.0, 512, 32, 1, 1.0, 1.0, true},
};

TEST(Config, YarnMatchesTransformersFormulas) {
  for (const auto& y : kYarn) {
    check_yarn(y, true);
    check_yarn(y, false);
  }
}

TEST(Config, YarnFactorDefaultsToMaxPosOverOriginal) {
  json j = base_config();
  j["rope_parameters"] = {
      {"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"original_max_position_embeddings", 128}};
  ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope.factor, 512.0 / 128.0);
  expect_freqs(c.rope_inv_freq(), yarn_inv_freq(16, 10000, 4, 128, 32, 1, true), "derived factor");
  EXPECT_NEAR(c.rope_attention_factor(), get_mscale(4, 1), 1e-12);
}

// The two fixture configs on disk parse to the same YaRN numbers as the cases above.
TEST(Config, FixtureConfigsLoad) {
  ModelConfig legacy = config_load(test::fixture_dir("fp32_qlora_yarn_legacy"));
  EXPECT_EQ(legacy.rope.type, "yarn");
  EXPECT_EQ(legacy.q_lora_rank, 24);
  expect_freqs(legacy.rope_inv_freq(), yarn_inv_freq(16, 10000, 4, 128, 32, 1, true), "legacy");
  ModelConfig v5 = config_load(test::fixture_dir("fp32_qlora_yarn_v5"));
  EXPECT_EQ(v5.rope.type, "yarn");
  EXPECT_FALSE(v5.rope_interleave);
  EXPECT_NEAR(v5.rope_attention_factor(), get_mscale(8, 0.707) / get_mscale(8, 1.0), 1e-12);
  ModelConfig q = config_load(test::fixture_dir("fp32_qnull"));
  EXPECT_EQ(q.q_lora_rank, 0);
  EXPECT_EQ(q.rope.type, "default");
}

// ---- errors -----------------------------------------------------------------------------------

TEST(ConfigErrors, BadJsonAndNonObject) {
  expect_error(std::string("{\"model_type\": \"deepseek_v3\", "), {"test/config.json", "JSON"},
               "truncated JSON");
  expect_error(std::string(""), {"test/config.json"}, "empty text");
  expect_error(std::string("[1, 2, 3]"), {"test/config.json", "object"}, "array");
  expect_error(std::string("42"), {"test/config.json", "object"}, "number");
}

TEST(ConfigErrors, UnknownModelType) {
  json j = base_config();
  j["model_type"] = "llama";
  expect_error(j, {"model_type", "llama"}, "llama");
  j.erase("model_type");
  expect_error(j, {"model_type"}, "missing model_type");
  // A non-string model_type is a user error like any other, not a JSON library exception.
  j["model_type"] = 3;
  expect_error(j, {"model_type"}, "numeric model_type");
}

TEST(ConfigErrors, MissingRequiredFields) {
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                        "qk_rope_head_dim", "v_head_dim", "max_position_embeddings"}) {
    json j = base_config();
    j.erase(k);
    expect_error(j, {k, "test/config.json"}, std::string("missing ") + k);
    j[k] = nullptr;  // null counts as missing
    expect_error(j, {k}, std::string("null ") + k);
  }
}

TEST(ConfigErrors, WrongFieldTypes) {
  const std::pair<const char*, json> cases[] = {
      {"vocab_size", "256"},       {"hidden_size", 48.5},
      {"num_attention_heads", -4}, {"kv_lora_rank", true},
      {"q_lora_rank", "24"},       {"n_group", json::array({4})},
      {"rms_norm_eps", "1e-6"},    {"routed_scaling_factor", "2.5"},
      {"norm_topk_prob", 1},       {"rope_interleave", "yes"},
      {"tie_word_embeddings", 0},  {"max_position_embeddings", 1e12},
  };
  for (const auto& [key, val] : cases) {
    json j = base_config();
    j[key] = val;
    expect_error(j, {key}, std::string(key) + " = " + val.dump());
  }
  // String fields given as something else are errors too, not silently the default.
  {
    json k = base_config();
    k["hidden_act"] = 5;
    expect_error(k, {"hidden_act"}, "hidden_act = 5");
    k = base_config();
    k["rope_parameters"] = {{"rope_type", 5}, {"rope_theta", 10000.0}};
    expect_error(k, {"rope_type"}, "rope_type = 5");
  }
  // rope parameters of the wrong type
  json j = base_config();
  j["rope_parameters"] = "yarn";
  expect_error(j, {"rope"}, "rope_parameters string");
  j = base_config();
  j["rope_parameters"] = {{"rope_type", "yarn"},
                          {"rope_theta", 10000.0},
                          {"factor", "four"},
                          {"original_max_position_embeddings", 128}};
  expect_error(j, {"factor"}, "yarn factor string");
  j = base_config();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", "10000"}};
  expect_error(j, {"rope_theta"}, "rope_theta string");
  // Zero where a positive value is needed.
  for (const char* k : {"vocab_size", "hidden_size", "num_attention_heads", "kv_lora_rank"}) {
    j = base_config();
    j[k] = 0;
    expect_error(j, {k}, std::string(k) + " = 0");
  }
  j = base_config();
  j["qk_rope_head_dim"] = 15;
  expect_error(j, {"qk_rope_head_dim"}, "odd rope dim");
}

TEST(ConfigErrors, ExpertGrouping) {
  json j = base_config();
  j["n_group"] = 3;  // 16 % 3 != 0
  expect_error(j, {"n_routed_experts", "n_group"}, "16 experts over 3 groups");
  j = base_config();
  j["topk_group"] = 5;  // > n_group 4
  expect_error(j, {"topk_group"}, "topk_group > n_group");
  j = base_config();
  j["topk_group"] = 0;
  expect_error(j, {"topk_group"}, "topk_group 0");
  j = base_config();
  j["n_group"] = 0;
  expect_error(j, {"n_group"}, "n_group 0");
  j = base_config();
  j["num_experts_per_tok"] = 9;  // 2 groups x 4 experts = 8 selectable
  expect_error(j, {"num_experts_per_tok"}, "top_k over the kept groups");
}

TEST(ConfigErrors, UnsupportedRopeTypeAndActivation) {
  json j = base_config();
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  expect_error(j, {"rope", "linear"}, "rope linear (v5)");
  j = base_config();
  j.erase("rope_parameters");
  j["rope_theta"] = 10000.0;
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  expect_error(j, {"rope", "dynamic"}, "rope dynamic (legacy)");
  j = base_config();
  j["hidden_act"] = "gelu";
  expect_error(j, {"hidden_act", "gelu"}, "gelu");
}

// ---- config_load and generation_config.json ---------------------------------------------------

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/helix_cfg_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
  }
};

TEST(ConfigLoad, EosFromGenerationConfig) {
  TempDir d;
  json j = base_config();
  j["eos_token_id"] = 1;
  d.write("config.json", j.dump());
  EXPECT_EQ(config_load(d.path).eos_token_ids, std::vector<int>{1});  // config.json only

  d.write("generation_config.json", R"({"bos_token_id": 0, "eos_token_id": [5, 7]})");
  EXPECT_EQ(config_load(d.path).eos_token_ids, (std::vector<int>{5, 7}));

  d.write("generation_config.json", R"({"eos_token_id": 9})");
  EXPECT_EQ(config_load(d.path).eos_token_ids, std::vector<int>{9});

  // generation_config.json without eos keeps config.json's.
  d.write("generation_config.json", R"({"bos_token_id": 0})");
  EXPECT_EQ(config_load(d.path).eos_token_ids, std::vector<int>{1});

  // The fixture's generation_config.json says eos 1.
  EXPECT_EQ(config_load(test::fixture_dir("fp32_qnull")).eos_token_ids, std::vector<int>{1});
}

TEST(ConfigLoad, ErrorsNameTheFile) {
  TempDir d;
  try {
    config_load(d.path);  // no config.json
    ADD_FAILURE() << "no error for a missing config.json";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  json j = base_config();
  j["hidden_act"] = "relu";
  d.write("config.json", j.dump());
  try {
    config_load(d.path);
    ADD_FAILURE() << "no error for hidden_act relu";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find((d.path / "config.json").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("hidden_act"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace helix
