#include "server/api.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace helix::server {

using nlohmann::json;

std::string ApiError::type() const {
  switch (status) {
    case 401:
      return "authentication_error";
    case 413:
      return "request_too_large";
    case 429:
    case 503:
      return "server_overloaded";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string ApiError::body() const {
  json e = {{"message", what()}, {"type", type()}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  // Messages may quote raw request bytes: invalid UTF-8 becomes U+FFFD instead of throwing.
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg, int status = 400) {
  throw ApiError(status, msg, param, status == 422 ? "invalid_value" : "invalid_type");
}

const char* kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a float";
    default:
      return "an integer";
  }
}

double number(const json& o, const char* key, double lo, double hi) {
  const json& v = o.at(key);
  if (!v.is_number()) bad(key, fmt::format("'{}' must be a number, got {}", key, kind(v)));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x), 422);
  return x;
}

bool boolean(const json& o, const char* key) {
  const json& v = o.at(key);
  if (!v.is_boolean()) bad(key, fmt::format("'{}' must be a boolean, got {}", key, kind(v)));
  return v.get<bool>();
}

// An array of token ids: integers in [0, vocab).
std::vector<int> token_ids(const json& a, const ApiLimits& lim) {
  std::vector<int> ids;
  for (const json& t : a) {
    if (!t.is_number_integer())
      bad("prompt", fmt::format("token ids must be integers, got {}", kind(t)));
    const int64_t x = t.get<int64_t>();
    if (x < 0 || x >= lim.vocab)
      bad("prompt", fmt::format("token id {} is out of range [0, {})", x, lim.vocab), 422);
    ids.push_back(static_cast<int>(x));
  }
  return ids;
}

void parse_prompt(const json& p, CompletionRequest& r, const ApiLimits& lim) {
  if (p.is_string()) {
    r.prompt_text = p.get<std::string>();
    return;
  }
  if (!p.is_array())
    bad("prompt", fmt::format("'prompt' must be a string or an array, got {}", kind(p)));
  if (p.empty()) bad("prompt", "'prompt' is empty", 422);
  if (p[0].is_number()) {
    r.prompt_ids = token_ids(p, lim);
    return;
  }
  // A batch of prompts: helix serves one choice per request.
  if (p.size() != 1)
    bad("prompt", "only one prompt per request is supported (send several requests)", 422);
  if (p[0].is_string()) {
    r.prompt_text = p[0].get<std::string>();
  } else if (p[0].is_array()) {
    if (p[0].empty()) bad("prompt", "'prompt' is empty", 422);
    r.prompt_ids = token_ids(p[0], lim);
  } else {
    bad("prompt",
        fmt::format("'prompt' entries must be strings or token arrays, got {}", kind(p[0])));
  }
}

void parse_messages(const json& m, CompletionRequest& r) {
  if (!m.is_array()) bad("messages", fmt::format("'messages' must be an array, got {}", kind(m)));
  if (m.empty()) bad("messages", "'messages' is empty", 422);
  for (const json& msg : m) {
    if (!msg.is_object())
      bad("messages", fmt::format("each message must be an object, got {}", kind(msg)));
    if (!msg.contains("role") || !msg["role"].is_string())
      bad("messages", "each message needs a string 'role'");
    const std::string role = msg["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer")
      bad("messages", fmt::format("unknown role '{}' (system, user, assistant)", role), 422);
    std::string content;
    if (!msg.contains("content") || msg["content"].is_null()) {
      content = "";
    } else if (msg["content"].is_string()) {
      content = msg["content"].get<std::string>();
    } else if (msg["content"].is_array()) {
      // Content parts: text only.
      for (const json& part : msg["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          bad("messages", "content parts must be {\"type\": \"text\", \"text\": \"...\"}");
        content += part["text"].get<std::string>();
      }
    } else {
      bad("messages",
          fmt::format("message content must be a string, got {}", kind(msg["content"])));
    }
    r.messages.emplace_back(role == "developer" ? "system" : role, content);
  }
}

}  // namespace

CompletionRequest parse_completion(const std::string& body, bool chat, const ApiLimits& lim) {
  json o;
  try {
    o = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, fmt::format("the body is not valid JSON: {}", e.what()), {},
                   "invalid_json");
  }
  if (!o.is_object()) bad("", fmt::format("the body must be a JSON object, got {}", kind(o)));
  CompletionRequest r;
  r.chat = chat;
  if (o.contains("model") && !o["model"].is_null()) {
    if (!o["model"].is_string())
      bad("model", fmt::format("'model' must be a string, got {}", kind(o["model"])));
    r.model = o["model"].get<std::string>();
    if (r.model != lim.model_name)
      throw ApiError(400,
                     fmt::format("the model '{}' does not exist; this server serves '{}'", r.model,
                                 lim.model_name),
                     "model", "model_not_found");
  }
  if (chat) {
    if (!o.contains("messages")) bad("messages", "missing field 'messages'");
    parse_messages(o["messages"], r);
  } else {
    if (!o.contains("prompt")) bad("prompt", "missing field 'prompt'");
    parse_prompt(o["prompt"], r, lim);
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!o.contains(key) || o[key].is_null()) continue;
    const json& v = o[key];
    if (!v.is_number_integer())
      bad(key, fmt::format("'{}' must be an integer, got {}", key, kind(v)));
    const int64_t x = v.get<int64_t>();
    if (x < 0 || x > lim.max_context)
      bad(key,
          fmt::format("'{}' must be in [0, {}] (the context length), got {}", key, lim.max_context,
                      x),
          422);
    r.max_tokens = static_cast<int>(x);
  }
  if (o.contains("temperature") && !o["temperature"].is_null())
    r.temperature = static_cast<float>(number(o, "temperature", 0.0, 2.0));
  if (o.contains("top_p") && !o["top_p"].is_null()) {
    r.top_p = static_cast<float>(number(o, "top_p", 0.0, 1.0));
    if (r.top_p <= 0.0f) bad("top_p", "'top_p' must be > 0", 422);
  }
  if (o.contains("top_k") && !o["top_k"].is_null()) {
    const json& v = o["top_k"];
    if (!v.is_number_integer())
      bad("top_k", fmt::format("'top_k' must be an integer, got {}", kind(v)));
    const int64_t k = v.get<int64_t>();
    if (k < -1)
      bad("top_k", fmt::format("'top_k' must be >= -1 (-1 or 0: no limit), got {}", k), 422);
    // More than the vocabulary keeps every token: the same as no limit.
    r.top_k = k <= 0 ? 0 : static_cast<int>(std::min<int64_t>(k, std::numeric_limits<int>::max()));
  }
  if (o.contains("seed") && !o["seed"].is_null()) {
    if (!o["seed"].is_number_integer())
      bad("seed", fmt::format("'seed' must be an integer, got {}", kind(o["seed"])));
    r.seed = o["seed"].is_number_unsigned() ? o["seed"].get<uint64_t>()
                                            : static_cast<uint64_t>(o["seed"].get<int64_t>());
  }
  if (o.contains("stop") && !o["stop"].is_null()) {
    const json& s = o["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const json& x : s) {
        if (!x.is_string()) bad("stop", "'stop' entries must be strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", fmt::format("'stop' must be a string or an array of strings, got {}", kind(s)));
    }
    if (static_cast<int>(r.stop.size()) > lim.max_stop)
      bad("stop", fmt::format("at most {} stop strings", lim.max_stop), 422);
    for (const auto& x : r.stop)
      if (x.empty()) bad("stop", "stop strings must not be empty", 422);
  }
  if (o.contains("stream") && !o["stream"].is_null()) r.stream = boolean(o, "stream");
  if (o.contains("stream_options") && !o["stream_options"].is_null()) {
    const json& so = o["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (so.contains("include_usage") && !so["include_usage"].is_null())
      r.include_usage = boolean(so, "include_usage");
  }
  if (o.contains("n") && !o["n"].is_null()) {
    if (!o["n"].is_number_integer()) bad("n", "'n' must be an integer");
    if (o["n"].get<int64_t>() != 1) bad("n", "only n = 1 is supported", 422);
  }
  if (o.contains("ignore_eos") && !o["ignore_eos"].is_null())
    r.ignore_eos = boolean(o, "ignore_eos");
  return r;
}

int check_lengths(const CompletionRequest& r, int prompt_len, const ApiLimits& lim) {
  if (prompt_len < 1) throw ApiError(422, "the prompt is empty", "prompt", "invalid_value");
  if (prompt_len >= lim.max_context)
    throw ApiError(422,
                   fmt::format("the prompt has {} tokens but the context holds {} (prompt and "
                               "completion)",
                               prompt_len, lim.max_context),
                   r.chat ? "messages" : "prompt", "context_length_exceeded");
  const int room = lim.max_context - prompt_len;
  if (!r.max_tokens) return r.chat ? room : std::min(room, 16);
  if (*r.max_tokens > room)
    throw ApiError(422,
                   fmt::format("the context holds {} tokens: {} in the prompt leave room for {} "
                               "but max_tokens is {}",
                               lim.max_context, prompt_len, room, *r.max_tokens),
                   "max_tokens", "context_length_exceeded");
  return *r.max_tokens;
}

}  // namespace helix::server
