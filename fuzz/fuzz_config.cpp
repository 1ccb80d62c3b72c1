// libFuzzer target for config.json: config_parse must either return a config whose derived
// quantities are computable without overflow or NaN surprises, or throw helix::Error. Anything
// else escaping (a JSON library exception, std::bad_alloc from a size taken from the input) or a
// sanitizer report is a crash.
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* in, size_t size) {
  const std::string text(reinterpret_cast<const char*>(in), size);
  try {
    const helix::ModelConfig c = helix::config_parse(text, "fuzz/config.json");
    // The parse promised bounded, positive dimensions: everything derived from them must work.
    if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_hidden_layers <= 0) __builtin_trap();
    if (c.qk_rope_head_dim % 2 != 0 || c.qk_rope_head_dim > (1 << 24)) __builtin_trap();
    volatile double sink = c.softmax_scale() + c.rope_attention_factor();
    if (c.qk_rope_head_dim <= 4096) sink = sink + c.rope_inv_freq().size();
    (void)sink;
  } catch (const helix::Error&) {
    // rejected input: fine
  }
  return 0;
}
