// The OpenAI request parser of `helix serve` (no HTTP): accepted shapes, and the status of every
// kind of bad input (400 malformed / wrong type / missing, 422 out of range); Prometheus text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/api.h"
#include "server/metrics.h"

namespace helix::server {
namespace {

ApiLimits limits() {
  ApiLimits l;
  l.model_name = "tiny";
  l.vocab = 100;
  l.max_context = 64;
  return l;
}

int status_of(const std::string& body, bool chat = false) {
  try {
    parse_completion(body, chat, limits());
  } catch (const ApiError& e) {
    // Always an OpenAI error object.
    const auto j = nlohmann::json::parse(e.body());
    EXPECT_TRUE(j["error"]["message"].is_string()) << body;
    EXPECT_TRUE(j["error"]["type"].is_string()) << body;
    return e.status;
  }
  return 200;
}

TEST(ServerApi, AcceptsThePromptShapesOfTheApi) {
  auto r = parse_completion(R"({"model":"tiny","prompt":[1,2,3],"max_tokens":5,"temperature":0,
                               "top_p":0.5,"top_k":40,"seed":9,"stop":"\n","stream":true,
                               "stream_options":{"include_usage":true}})",
                            false, limits());
  EXPECT_EQ(r.prompt_ids, (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(r.prompt_text);
  EXPECT_EQ(*r.max_tokens, 5);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.top_p, 0.5f);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_EQ(parse_completion(R"({"prompt":[1],"top_k":-1})", false, limits()).top_k, 0);
  EXPECT_EQ(parse_completion(R"({"prompt":[1]})", false, limits()).top_k, 0);
  EXPECT_EQ(*r.seed, 9u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n"}));
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(*parse_completion(R"({"prompt":"hi"})", false, limits()).prompt_text, "hi");
  EXPECT_EQ(*parse_completion(R"({"prompt":["hi"]})", false, limits()).prompt_text, "hi");
  EXPECT_EQ(parse_completion(R"({"prompt":[[4,5]]})", false, limits()).prompt_ids,
            (std::vector<int>{4, 5}));
  auto c = parse_completion(R"({"messages":[{"role":"system","content":"s"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_completion_tokens":3})",
                            true, limits());
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[1], (std::pair<std::string, std::string>{"user", "ab"}));
  EXPECT_EQ(*c.max_tokens, 3);
}

TEST(ServerApi, BadInputGetsTheRightStatus) {
  EXPECT_EQ(status_of("{\"prompt\": [1,"), 400);               // malformed JSON
  EXPECT_EQ(status_of(""), 400);                               // empty body
  EXPECT_EQ(status_of("{\"model\":\"tiny\",\xa8\xa8}"), 400);  // raw bytes quoted in the message
  EXPECT_EQ(status_of("[1,2]"), 400);                          // not an object
  EXPECT_EQ(status_of("{}"), 400);                             // missing prompt
  EXPECT_EQ(status_of("{}", true), 400);                       // missing messages
  EXPECT_EQ(status_of(R"({"prompt":5})"), 400);                // wrong type
  EXPECT_EQ(status_of(R"({"prompt":[1.5]})"), 400);            // ids must be integers
  EXPECT_EQ(status_of(R"({"prompt":[1],"max_tokens":"3"})"), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"stream":1})"), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"temperature":"hot"})"), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"stop":[1]})"), 400);
  EXPECT_EQ(status_of(R"({"model":"gpt","prompt":[1]})"), 400);  // unknown model
  EXPECT_EQ(status_of(R"({"model":7,"prompt":[1]})"), 400);
  EXPECT_EQ(status_of(R"({"messages":"hi"})", true), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"content":"hi"}]})", true), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"max_tokens":-1})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[1],"max_tokens":1000000000000})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[100]})"), 422);  // id out of the vocabulary
  EXPECT_EQ(status_of(R"({"prompt":[-1]})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[]})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":["a","b"]})"), 422);  // batches: one prompt per request
  EXPECT_EQ(status_of(R"({"prompt":[1],"temperature":2.5})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[1],"top_p":0})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[1],"top_k":-2})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[1],"top_k":2.5})"), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"top_k":"5"})"), 400);
  EXPECT_EQ(status_of(R"({"prompt":[1],"n":2})"), 422);
  EXPECT_EQ(status_of(R"({"prompt":[1],"stop":["a","b","c","d","e"]})"), 422);
  EXPECT_EQ(status_of(R"({"messages":[{"role":"god","content":"x"}]})", true), 422);
  EXPECT_EQ(status_of(R"({"messages":[]})", true), 422);
}

TEST(ServerApi, LengthsAgainstTheContext) {
  const ApiLimits l = limits();
  auto r = parse_completion(R"({"prompt":[1]})", false, l);
  EXPECT_EQ(check_lengths(r, 10, l), 16);  // completions default: 16
  EXPECT_EQ(check_lengths(r, 60, l), 4);   // ... or what the context leaves
  auto c = parse_completion(R"({"messages":[{"role":"user","content":"x"}]})", true, l);
  EXPECT_EQ(check_lengths(c, 10, l), 54);  // chat default: the rest of the context
  auto m = parse_completion(R"({"prompt":[1],"max_tokens":30})", false, l);
  EXPECT_EQ(check_lengths(m, 34, l), 30);
  EXPECT_THROW(check_lengths(m, 35, l), ApiError);  // 35 + 30 > 64
  EXPECT_THROW(check_lengths(r, 64, l), ApiError);  // no room at all
  try {
    check_lengths(m, 35, l);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 422);
    EXPECT_EQ(e.code, "context_length_exceeded");
  }
}

TEST(ServerMetrics, PrometheusTextIsConsistent) {
  Metrics m;
  m.request("completions", "ok");
  m.request("completions", "ok");
  m.request("chat", "queue_full");
  m.latency(0.003, 0.0007, true);
  m.latency(0.2, 0, false);
  m.tokens(5, 7);
  EngineSnapshot e;
  e.running = 2;
  e.waiting = 1;
  e.kv_blocks = 10;
  e.kv_reserved = {4, 3};
  e.kv_used = {3, -1};
  e.rank_cp = {0, 1};
  e.eplb_layers = {1, 2};
  e.eplb_balance = {1.25, 1.0};
  const std::string s = m.render(&e);
  auto has = [&](const std::string& line) {
    EXPECT_NE(s.find(line + "\n"), std::string::npos) << line << " not in:\n" << s;
  };
  has("helix_requests_total{endpoint=\"completions\",outcome=\"ok\"} 2");
  has("helix_requests_total{endpoint=\"chat\",outcome=\"queue_full\"} 1");
  has("helix_requests_total{endpoint=\"chat\",outcome=\"ok\"} 0");
  has("helix_time_to_first_token_seconds_bucket{le=\"0.0025\"} 0");
  has("helix_time_to_first_token_seconds_bucket{le=\"0.005\"} 1");
  has("helix_time_to_first_token_seconds_bucket{le=\"0.25\"} 2");
  has("helix_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2");
  has("helix_time_to_first_token_seconds_count 2");
  has("helix_time_per_output_token_seconds_count 1");
  has("helix_completion_tokens_total 7");
  has("helix_requests_running 2");
  has("helix_requests_waiting 1");
  has("helix_kv_blocks_reserved{cp_rank=\"1\"} 3");
  has("helix_kv_blocks_used{rank=\"0\",cp_rank=\"0\"} 3");
  has("helix_kv_blocks_free{rank=\"0\",cp_rank=\"0\"} 7");
  has("helix_eplb_balance{layer=\"1\"} 1.25");
  EXPECT_EQ(s.find("{rank=\"1\""), std::string::npos);  // unknown (another MPI process): left out
}

}  // namespace
}  // namespace helix::server
