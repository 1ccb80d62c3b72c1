// `helix serve`: only built when cpp-httplib is found (HELIX_HAVE_HTTPLIB); otherwise the command
// exists and says how to get it.
#include <cstdio>

#include "cli/commands.h"
#include "cli/tokens.h"
#include "core/error.h"
#include "engine/engine.h"
#ifdef HELIX_HAVE_HTTPLIB
#include "server/http_server.h"
#endif

namespace helix::cli {

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models, "
      "/health, /metrics) with continuous batching");
  struct Opts {
    EngineConfig ec;
#ifdef HELIX_HAVE_HTTPLIB
    server::ServeConfig sc;
#endif
    std::string host = "127.0.0.1", api_key, name;
    int port = 8000, threads = 128;
    size_t max_body = 1 << 20;
  };
  auto o = std::make_shared<Opts>();
  o->ec.max_running = 64;
  o->ec.max_waiting = 256;
  o->ec.prefill = "helix";
  cmd->add_option("--model", o->ec.model_dir, "Checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0 = any free port, printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY'");
  cmd->add_option("--served-model-name", o->name, "Model id of the API (default: directory name)");
  cmd->add_option("--max-body", o->max_body, "Largest request body in bytes (413 above)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--http-threads", o->threads, "Connections served at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-running", o->ec.max_running, "Requests decoded together (batch bound)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-waiting", o->ec.max_waiting,
                  "Waiting queue bound; a full queue answers 503 + Retry-After")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_engine_options(cmd, o->ec,
                     "KV blocks per rank (0 = max-running requests of the full context)");
  cmd->callback([o]() {
#ifdef HELIX_HAVE_HTTPLIB
    o->sc.host = o->host;
    o->sc.port = o->port;
    o->sc.api_key = o->api_key;
    o->sc.model_name = o->name;
    o->sc.max_body = o->max_body;
    o->sc.http_threads = o->threads;
    server::serve(o->sc, o->ec);
#else
    fail(
        "this helix was built without cpp-httplib: install libcpp-httplib-dev "
        "(scripts/deps.sh) and rebuild to get `helix serve`");
#endif
  });
}

}  // namespace helix::cli
