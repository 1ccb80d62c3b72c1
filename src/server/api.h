#pragma once
// The OpenAI request bodies helix serves (/v1/completions, /v1/chat/completions): parsing and
// validation into a plain struct, and OpenAI-style error objects. No HTTP and no engine here, so
// that the parser can be fuzzed on its own (fuzz/fuzz_request_parse.cpp).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace helix::server {

// An error the client caused: HTTP status plus the OpenAI error object fields.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string code = {})
      : std::runtime_error(message),
        status(status),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string param, code;
  std::string type() const;  // invalid_request_error, authentication_error, ...
  std::string body() const;  // {"error": {"message", "type", "param", "code"}}
};

struct ApiLimits {
  std::string model_name;  // the one model served
  int vocab = 0;           // token ids must be in [0, vocab)
  int max_context = 0;     // prompt + max_tokens must fit
  int max_stop = 4;        // at most this many stop strings
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  // Completions: the prompt as text or as token ids (exactly one is set).
  std::optional<std::string> prompt_text;
  std::vector<int> prompt_ids;
  // Chat: role/content pairs, validated.
  std::vector<std::pair<std::string, std::string>> messages;
  std::optional<int> max_tokens;  // absent: as many as the context allows (chat) or 16
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;  // 0: no limit (-1 in the request means the same, as vLLM takes it)
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // helix extension (vLLM's name)
};

// Parses a request body. Throws ApiError (400 malformed JSON / wrong types / missing fields,
// 422 values out of range). Token-level checks that need the prompt's length run in
// check_lengths() once the prompt is tokenized.
CompletionRequest parse_completion(const std::string& body, bool chat, const ApiLimits& lim);

// Resolves max_tokens against the context: returns the tokens to generate for a prompt of
// prompt_len tokens or throws ApiError 422 when they do not fit.
int check_lengths(const CompletionRequest& r, int prompt_len, const ApiLimits& lim);

}  // namespace helix::server
