#pragma once
// `helix serve`: the OpenAI-compatible HTTP front of the engine (cpp-httplib). Endpoints:
// POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models, GET /health,
// GET /metrics. One engine request per HTTP request; a client that goes away cancels it.
#include <atomic>
#include <cstddef>
#include <string>

#include "engine/engine.h"

namespace helix::server {

struct ServeConfig {
  std::string host = "127.0.0.1";
  int port = 8000;            // 0: any free port (printed on stdout)
  std::string api_key;        // empty: no authentication
  size_t max_body = 1 << 20;  // bytes; larger bodies get 413
  std::string model_name;     // empty: the model directory's name
  int http_threads = 128;     // concurrent connections served (streams hold one each)
  int retry_after_s = 1;      // Retry-After of a 503 when the queue is full
};

// Binds, prints "helix serve: listening on http://HOST:PORT" on stdout, loads the engine (/health
// answers 503 meanwhile), then serves until SIGINT/SIGTERM. MPI ranks other than 0 only run
// their engine. Throws helix::Error when it cannot bind or load.
void serve(const ServeConfig& sc, const EngineConfig& ec);

}  // namespace helix::server
