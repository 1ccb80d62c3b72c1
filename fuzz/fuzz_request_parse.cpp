// libFuzzer target: arbitrary bytes as a /v1/completions or /v1/chat/completions body. The parser
// must either return a request whose fields respect the limits or throw ApiError with a 4xx
// status and a JSON error body; anything else (a crash, another exception) is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "server/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  helix::server::ApiLimits lim;
  lim.model_name = "tiny";
  lim.vocab = 256;
  lim.max_context = 512;
  try {
    helix::server::CompletionRequest r = helix::server::parse_completion(body, chat, lim);
    for (int t : r.prompt_ids)
      if (t < 0 || t >= lim.vocab) std::abort();
    if (r.max_tokens && (*r.max_tokens < 0 || *r.max_tokens > lim.max_context)) std::abort();
    if (!(r.temperature >= 0 && r.temperature <= 2 && r.top_p > 0 && r.top_p <= 1)) std::abort();
    if (chat == r.messages.empty()) std::abort();
    // Lengths: either a count that fits or a 422.
    try {
      const int n = helix::server::check_lengths(r, static_cast<int>(r.prompt_ids.size()), lim);
      if (n < 0 || n + static_cast<int>(r.prompt_ids.size()) > lim.max_context) std::abort();
    } catch (const helix::server::ApiError& e) {
      if (e.status != 422) std::abort();
    }
  } catch (const helix::server::ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
    if (!nlohmann::json::parse(e.body()).contains("error")) std::abort();
  }
  return 0;
}
