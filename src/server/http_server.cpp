#include "server/http_server.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <random>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "server/api.h"
#include "server/codec.h"
#include "server/metrics.h"

namespace helix::server {

using nlohmann::json;

namespace {

std::atomic<bool> g_signalled{false};
void on_signal(int) {
  g_signalled = true;
}

// Text that is not valid UTF-8 (a message quoting raw request bytes) is dumped with U+FFFD.
// Cuts `s` at most at `n` bytes without splitting a UTF-8 character.
size_t utf8_floor(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

class Service {
 public:
  Service(const ServeConfig& sc, const EngineConfig& ec) : sc_(sc), ec_(ec) {
    model_name_ = sc.model_name.empty()
                      ? std::filesystem::path(ec.model_dir).lexically_normal().filename().string()
                      : sc.model_name;
    if (model_name_.empty() || model_name_ == ".")
      model_name_ = std::filesystem::absolute(ec.model_dir).filename().string();
    created_ = std::time(nullptr);
  }

  void load(std::unique_ptr<Engine> loaded) {
    codec_ = codec_load(ec_.model_dir);
    engine_ = loaded ? std::move(loaded) : std::make_unique<Engine>(ec_);
    lim_.model_name = model_name_;
    lim_.vocab = engine_->vocab();
    lim_.max_context = engine_->max_context();
    ready_ = true;
  }
  void unload() {
    ready_ = false;
    if (engine_) engine_->shutdown();
  }

  void routes(httplib::Server& svr) {
    svr.Post("/v1/completions",
             [this](const httplib::Request& q, httplib::Response& r) { completion(q, r, false); });
    svr.Post("/v1/chat/completions",
             [this](const httplib::Request& q, httplib::Response& r) { completion(q, r, true); });
    svr.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) {
      if (!authorized(q, r)) return;
      json m = {{"id", model_name_},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "helix"},
                {"max_model_len", lim_.max_context}};
      r.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(
                        -1, ' ', false, json::error_handler_t::replace),
                    "application/json");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
      const bool failed = ready_ && engine_->snapshot().failed;
      r.status = ready_ && !failed ? 200 : 503;
      r.set_content(json{{"status", failed   ? "failed"
                                    : ready_ ? "ok"
                                             : "loading"}}
                        .dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
      EngineSnapshot snap;
      if (ready_) snap = engine_->snapshot();
      r.set_content(metrics_.render(ready_ ? &snap : nullptr), "text/plain; version=0.0.4");
    });
    // Errors httplib produces itself (413 body too large, 404 path, 400 bad HTTP) get an
    // OpenAI error object too.
    svr.set_error_handler([this](const httplib::Request& q, httplib::Response& r) {
      if (!r.body.empty()) return;
      std::string msg = fmt::format("HTTP {}", r.status);
      if (r.status == 413) {
        msg = fmt::format("the request body is larger than {} bytes", sc_.max_body);
        metrics_.request(q.path == "/v1/chat/completions" ? "chat" : "completions", "bad_request");
      } else if (r.status == 404) {
        msg = fmt::format("no route {} {}", q.method, q.path);
      }
      r.set_content(ApiError(r.status, msg).body(), "application/json");
    });
  }

 private:
  bool authorized(const httplib::Request& q, httplib::Response& r) {
    if (sc_.api_key.empty() || q.get_header_value("Authorization") == "Bearer " + sc_.api_key)
      return true;
    r.status = 401;
    r.set_content(ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", {},
                           "invalid_api_key")
                      .body(),
                  "application/json");
    return false;
  }

  void reject(httplib::Response& r, const ApiError& e, const char* ep, const char* outcome) {
    r.status = e.status;
    if (e.status == 503) r.set_header("Retry-After", std::to_string(sc_.retry_after_s));
    r.set_content(e.body(), "application/json");
    metrics_.request(ep, outcome);
  }

  void completion(const httplib::Request& q, httplib::Response& r, bool chat) {
    const char* ep = chat ? "chat" : "completions";
    if (!authorized(q, r)) return metrics_.request(ep, "unauthorized");
    if (!ready_) return reject(r, ApiError(503, "the model is loading"), ep, "error");
    std::shared_ptr<Request> req;
    auto call = std::make_shared<Call>();
    try {
      call->in = parse_completion(q.body, chat, lim_);
      call->prompt = chat                   ? codec_->encode_chat(call->in.messages)
                     : call->in.prompt_text ? codec_->encode(*call->in.prompt_text)
                                            : call->in.prompt_ids;
      for (int t : call->prompt)
        if (t < 0 || t >= lim_.vocab)
          throw ApiError(422, fmt::format("the tokenizer produced id {} outside the model's "
                                          "vocabulary of {}",
                                          t, lim_.vocab));
      RequestSpec spec;
      spec.prompt = call->prompt;
      spec.max_new_tokens = check_lengths(call->in, static_cast<int>(call->prompt.size()), lim_);
      spec.ignore_eos = call->in.ignore_eos;
      if (call->in.temperature > 0) {
        SamplingConfig s;
        s.temperature = call->in.temperature;
        s.top_p = call->in.top_p;
        s.top_k = call->in.top_k;
        s.seed = call->in.seed ? *call->in.seed : std::random_device{}();
        spec.sampler = std::make_shared<Sampler>(s);
      }
      req = engine_->submit(std::move(spec));
    } catch (const ApiError& e) {
      return reject(r, e, ep, "bad_request");
    } catch (const QueueFull& e) {
      return reject(r, ApiError(503, e.what(), {}, "queue_full"), ep, "queue_full");
    } catch (const Error& e) {
      return reject(r, ApiError(422, e.what(), {}, "invalid_value"), ep, "bad_request");
    }
    call->req = req;
    call->chat = chat;
    call->id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", req->id());
    call->text = codec_->stream();
    for (const auto& s : call->in.stop) call->hold = std::max(call->hold, s.size() - 1);
    r.set_header("Cache-Control", "no-cache");
    r.set_chunked_content_provider(
        call->in.stream ? "text/event-stream" : "application/json",
        [this, call](size_t, httplib::DataSink& sink) { return produce(*call, sink); },
        [this, call](bool ok) {
          // The connection ended before the answer did (client gone): stop generating.
          if (!call->answered) {
            engine_->cancel(call->req->id());
            metrics_.request(call->chat ? "chat" : "completions", "cancelled");
          }
        });
  }

  // One HTTP request in flight.
  struct Call {
    CompletionRequest in;
    std::vector<int> prompt;
    std::shared_ptr<Request> req;
    bool chat = false;
    std::string id;
    std::unique_ptr<TextStream> text;
    std::string out;       // text so far (cut at a stop string)
    size_t sent = 0;       // bytes of `out` already streamed
    size_t hold = 0;       // bytes held back: a stop string may still be forming
    size_t have = 0;       // engine tokens read
    std::vector<int> ids;  // tokens returned (up to a stop)
    bool stopped = false;
    bool answered = false;
    bool role_sent = false;
  };

  json chunk(Call& c, const std::string& delta, const std::vector<int>& ids,
             const char* finish) const {
    json choice = {{"index", 0},
                   {"logprobs", nullptr},
                   {"token_ids", ids},
                   {"finish_reason", finish ? json(finish) : json(nullptr)}};
    if (c.chat) {
      json d = json::object();
      if (!c.role_sent) d["role"] = "assistant";
      c.role_sent = true;
      if (!delta.empty() || !finish) d["content"] = delta;
      choice["delta"] = d;
    } else {
      choice["text"] = delta;
    }
    return {{"id", c.id},
            {"object", c.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_name_},
            {"choices", json::array({choice})}};
  }

  json usage(const Call& c) const {
    const int p = static_cast<int>(c.prompt.size()), n = static_cast<int>(c.ids.size());
    return {{"prompt_tokens", p}, {"completion_tokens", n}, {"total_tokens", p + n}};
  }

  // Adds engine tokens to the text; true once a stop string ended the completion.
  void absorb(Call& c, const std::vector<int>& toks) {
    for (int t : toks) {
      c.have++;
      if (c.stopped) continue;
      c.ids.push_back(t);
      const size_t from = c.out.size();
      c.out += c.text->push(t);
      for (const auto& s : c.in.stop) {
        const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
        const size_t at = c.out.find(s, start);
        if (at != std::string::npos) {
          c.out.resize(at);
          c.stopped = true;
        }
      }
    }
  }

  bool produce(Call& c, httplib::DataSink& sink) {
    const char* ep = c.chat ? "chat" : "completions";
    std::vector<int> toks;
    size_t streamed_ids = 0;
    auto send = [&](const json& j) {
      const std::string s =
          "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
      return sink.write(s.data(), s.size());
    };
    while (true) {
      if (!sink.is_writable()) return false;  // the releaser cancels
      const bool more = c.req->wait_tokens(c.have, &toks, std::chrono::milliseconds(100));
      absorb(c, toks);
      if (c.stopped) engine_->cancel(c.req->id());
      const bool end = c.stopped || !more;
      if (end && !c.stopped) c.out += c.text->flush();
      if (c.in.stream) {
        const size_t upto =
            end ? c.out.size()
                : utf8_floor(c.out, c.out.size() > c.hold ? c.out.size() - c.hold : 0);
        if (upto > c.sent || c.ids.size() > streamed_ids) {
          std::vector<int> ids(c.ids.begin() + streamed_ids, c.ids.end());
          if (!send(chunk(c, c.out.substr(c.sent, upto - c.sent), ids, nullptr))) return false;
          c.sent = upto;
          streamed_ids = c.ids.size();
        }
      }
      if (end) break;
    }
    const FinishReason why = c.req->reason();
    if (why == FinishReason::Error) {
      const std::string msg = ApiError(500, "the engine failed: " + c.req->error()).body();
      if (c.in.stream) {
        const std::string s = "data: " + msg + "\n\n";
        sink.write(s.data(), s.size());
      } else {
        sink.write(msg.data(), msg.size());
      }
      c.answered = true;
      metrics_.request(ep, "error");
      sink.done();
      return true;
    }
    const char* finish = c.stopped || why == FinishReason::Eos ? "stop"
                         : why == FinishReason::Length         ? "length"
                                                               : "abort";
    if (c.in.stream) {
      if (!send(chunk(c, "", {}, finish))) return false;
      if (c.in.include_usage) {
        json u = chunk(c, "", {}, finish);
        u["choices"] = json::array();
        u["usage"] = usage(c);
        if (!send(u)) return false;
      }
      static const std::string done = "data: [DONE]\n\n";
      if (!sink.write(done.data(), done.size())) return false;
    } else {
      json choice = {
          {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}, {"token_ids", c.ids}};
      if (c.chat)
        choice["message"] = {{"role", "assistant"}, {"content", c.out}};
      else
        choice["text"] = c.out;
      const std::string body = json{
          {"id", c.id},
          {"object", c.chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_name_},
          {"choices", json::array({choice})},
          {"usage", usage(c)}}.dump(-1, ' ', false, json::error_handler_t::replace);
      if (!sink.write(body.data(), body.size())) return false;
    }
    c.answered = true;
    sink.done();
    metrics_.request(ep, "ok");
    metrics_.tokens(static_cast<int>(c.prompt.size()), static_cast<int>(c.ids.size()));
    const auto t0 = c.req->submitted(), t1 = c.req->first_token_at(), t2 = c.req->last_token_at();
    const double ttft = std::chrono::duration<double>(t1 - t0).count();
    const size_t n = c.req->tokens().size();
    metrics_.latency(ttft, n > 1 ? std::chrono::duration<double>(t2 - t1).count() / (n - 1) : 0,
                     n > 1);
    return true;
  }

  ServeConfig sc_;
  EngineConfig ec_;
  std::string model_name_;
  int64_t created_ = 0;
  std::atomic<bool> ready_{false};
  std::unique_ptr<Engine> engine_;
  std::shared_ptr<TextCodec> codec_;
  ApiLimits lim_;
  Metrics metrics_;
};

}  // namespace

void serve(const ServeConfig& sc, const EngineConfig& ec) {
  // MPI: every process loads its rank first (no 503-while-loading window); rank 0 serves HTTP,
  // the others follow its steps until it shuts down.
  std::unique_ptr<Engine> mpi_engine;
  if (ec.comm == "mpi") {
    mpi_engine = std::make_unique<Engine>(ec);
    if (!mpi_engine->is_driver()) {
      mpi_engine->shutdown();
      return;
    }
  }
  std::signal(SIGPIPE, SIG_IGN);
  Service svc(sc, ec);
  httplib::Server svr;
  const int threads = sc.http_threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(sc.max_body);
  svr.set_tcp_nodelay(true);  // SSE chunks are small: Nagle + delayed ACK would hold them ~40 ms
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);
  svc.routes(svr);
  int port = sc.port;
  if (port == 0) {
    port = svr.bind_to_any_port(sc.host);
    HELIX_CHECK(port > 0, "cannot bind {} to a free port", sc.host);
  } else {
    HELIX_CHECK(svr.bind_to_port(sc.host, port), "cannot bind {}:{} (in use?)", sc.host, port);
  }
  std::printf("helix serve: listening on http://%s:%d\n", sc.host.c_str(), port);
  std::fflush(stdout);
  std::atomic<bool> http_done{false};
  std::thread http([&] {
    svr.listen_after_bind();
    http_done = true;
  });
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::exception_ptr err;
  try {
    svc.load(std::move(mpi_engine));
    std::fprintf(stderr, "helix serve: ready\n");
  } catch (...) {
    err = std::current_exception();
  }
  while (!err && !g_signalled) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // stop() does nothing before the listener runs (an engine that fails at once got here first and
  // the listener then accepted forever): wait for it to run, or to have ended, then stop it.
  while (!svr.is_running() && !http_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  svr.stop();
  http.join();
  if (err) std::rethrow_exception(err);
  svc.unload();
}

}  // namespace helix::server
