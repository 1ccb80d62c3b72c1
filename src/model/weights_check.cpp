#include "model/weights_check.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/file_io.h"

namespace helix {

namespace {

void expect_shape(const WeightStore& ws, const std::string& name, std::vector<int64_t> want,
                  const char* fields) {
  const StView& v = ws.view(name);  // throws naming a missing tensor
  if (v.shape != want)
    fail("config.json does not match the weights: tensor '{}' has shape {}, but {} give {}",
         printable(name), shape_str(v.shape), fields, shape_str(want));
}

}  // namespace

void weights_check_config(const ModelConfig& c, const WeightStore& ws) {
  expect_shape(ws, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size},
               "vocab_size, hidden_size");
  const std::string a0 = "model.layers.0.self_attn.";
  expect_shape(ws, a0 + "kv_a_proj_with_mqa.weight",
               {int64_t{c.kv_lora_rank} + c.qk_rope_head_dim, c.hidden_size},
               "kv_lora_rank + qk_rope_head_dim, hidden_size");
  expect_shape(
      ws, a0 + "o_proj.weight",
      {c.hidden_size, checked_mul(c.num_attention_heads, c.v_head_dim, "heads x v_head_dim")},
      "hidden_size, num_attention_heads x v_head_dim");
  expect_shape(ws, fmt::format("model.layers.{}.input_layernorm.weight", c.num_hidden_layers - 1),
               {c.hidden_size}, "num_hidden_layers, hidden_size");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    expect_shape(ws, fmt::format("model.layers.{}.mlp.gate.weight", l),
                 {c.n_routed_experts, c.hidden_size}, "n_routed_experts, hidden_size");
    break;
  }
}

void weights_check_finite(const WeightStore& ws) {
  constexpr int64_t kChunk = int64_t(1) << 22;  // elements converted at a time
  for (const std::string& name : ws.names()) {
    const StView& v = ws.view(name);
    if (v.dtype != StDType::F32 && v.dtype != StDType::F16 && v.dtype != StDType::BF16 &&
        v.dtype != StDType::F8_E4M3)
      continue;
    auto scan = [&](const Tensor& t) {
      const int64_t i = first_non_finite(t.ptr(), t.numel());
      if (i >= 0)
        fail("--check-weights: tensor '{}' ({}, shape {}) holds {}", printable(name),
             st_dtype_name(v.dtype), shape_str(v.shape), std::isnan(t.data[i]) ? "NaN" : "Inf");
    };
    if (v.shape.size() < 2) {
      scan(ws.load(name));
      continue;
    }
    int64_t row = 1;
    for (size_t d = 1; d < v.shape.size(); ++d) row = checked_mul(row, v.shape[d], name);
    const int64_t step = std::max<int64_t>(1, kChunk / std::max<int64_t>(row, 1));
    for (int64_t r = 0; r < v.shape[0]; r += step)
      scan(ws.load_rows(name, r, std::min(v.shape[0], r + step)));
  }
}

}  // namespace helix
