// The tokenizer library on the embedded model's tokenizer (models/tiny, byte-level BPE trained by
// tools/train_tiny.py): HF tokenizers' ids for the fixture prompts, round trips, UTF-8 handling
// (invalid input rejected, lossy decode as Rust's from_utf8_lossy), the streaming decoder, the
// chat format's structure and a long prompt (speed: bench/bench_tokenizer). Exactness against the
// real DeepSeek-V3 tokenizer is tests/tokenizer/exactness.sh (npm reference).
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fixture_util.h"
#include "tokenizer/tokenizer.h"

namespace helix {
namespace {

const Tokenizer& tiny() {
  static const Tokenizer t = Tokenizer::load(std::string(HELIX_SOURCE_DIR) + "/models/tiny");
  return t;
}

TEST(Tokenizer, FixturePromptsAreHfIds) {
  std::ifstream f(test::fixture_dir("tiny_kjv") + "/ref.json");
  const auto j = nlohmann::json::parse(f);
  const auto ref = test::fixture_ref("tiny_kjv");
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const std::string text = j["texts"][i][0].get<std::string>();
    EXPECT_EQ(tiny().encode(text), ref.prompts[i]) << text;
    EXPECT_EQ(tiny().decode(ref.greedy[i]), j["texts"][i][1].get<std::string>());
  }
  EXPECT_EQ(tiny().bos_id(), 0);
  EXPECT_EQ(tiny().eos_id(), 1);
  EXPECT_TRUE(tiny().add_bos());
  EXPECT_TRUE(tiny().is_special(0));
  EXPECT_FALSE(tiny().is_special(100));
}

TEST(Tokenizer, RoundTripsValidUtf8) {
  const std::vector<std::string> texts = {
      "",
      " ",
      "In the beginning God created the heaven and the earth.\n",
      "中文和日本語のテキスト 😀👩‍👩‍👧 e\xcc\x81 \xf4\x8f\xbf\xbd",
      "  \t\n\r\n   x  ",
      "<｜User｜>hi<｜Assistant｜>",
      "1234567890" + std::string(2000, 'z')};
  for (const auto& s : texts) {
    const auto ids = tiny().encode(s, false);
    EXPECT_EQ(tiny().decode(ids), s);
  }
  // Special tokens written in the text are one id each.
  const auto ids = tiny().encode("<｜User｜>x<｜Assistant｜>", false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), tiny().token_id("<｜User｜>"));
  EXPECT_EQ(ids.back(), tiny().token_id("<｜Assistant｜>"));
  EXPECT_EQ(tiny().decode({0, ids[1], 1}, true), "x");
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  for (std::string bad :
       {std::string("a\xff"), std::string("\xc0\xaf"), std::string("\xed\xa0\x80"),
        std::string("ab\xe4\xb8"), std::string("\xf5\x80\x80\x80")})
    EXPECT_THROW(tiny().encode(bad), Error) << bad;
  EXPECT_EQ(utf8_invalid_at("ok\xe4\xb8\xad\xff"), 5u);
  EXPECT_EQ(utf8_invalid_at("ok"), std::string_view::npos);
}

TEST(Tokenizer, LossyDecodeReplacesMaximalSubparts) {
  // Unicode's "maximal subpart" practice, the cases of its table 3-8 style.
  auto lossy = [](std::string_view s) {
    std::string out;
    utf8_lossy_append(s, out, true);
    return out;
  };
  const std::string R = "\xef\xbf\xbd";
  EXPECT_EQ(lossy("a\xff"
                  "b"),
            "a" + R + "b");
  EXPECT_EQ(lossy("\xe4\xb8"), R);  // truncated 3-byte sequence: one
  EXPECT_EQ(lossy("\xe4\xb8"
                  "a"),
            R + "a");
  EXPECT_EQ(lossy("\xe0\x80\x80"), R + R + R);  // overlong: every byte
  EXPECT_EQ(lossy("\xed\xa0\x80"), R + R + R);  // surrogate
  EXPECT_EQ(lossy("\xf0\x9f\x98"), R);
  EXPECT_EQ(lossy("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
  // Byte tokens that do not form UTF-8 decode the same way.
  const int b_ff = tiny().token_id("\xc3\xbf");  // ByteLevel's character for byte 0xFF
  ASSERT_GE(b_ff, 0);
  EXPECT_EQ(tiny().decode({b_ff}), R);
  EXPECT_EQ(tiny().token_bytes(b_ff), "\xff");
  EXPECT_THROW(tiny().decode({tiny().vocab_size()}), Error);
  EXPECT_THROW(tiny().decode({-1}), Error);
}

TEST(Tokenizer, StreamDecoderNeverSplitsACharacter) {
  const std::string text = "Emoji 😀 and 中文, ünï 👩‍👩‍👧 end";
  // Byte tokens one by one: the hardest split (every multi-byte character spans tokens).
  std::vector<int> ids;
  for (unsigned char c : text) {
    int id = -1;
    for (int v = 0; v < tiny().vocab_size() && id < 0; ++v)
      if (!tiny().is_special(v) && tiny().token_bytes(v) == std::string(1, static_cast<char>(c)))
        id = v;
    ASSERT_GE(id, 0);
    ids.push_back(id);
  }
  for (const auto& seq : {ids, tiny().encode(text, true)}) {
    StreamDecoder sd(tiny());
    std::string all;
    for (int id : seq) {
      const std::string piece = sd.push(id);
      EXPECT_EQ(utf8_invalid_at(piece), std::string_view::npos) << "half a character emitted";
      all += piece;
    }
    all += sd.finish();
    EXPECT_EQ(all, tiny().decode(seq));
  }
  // Bytes that can never complete come out as U+FFFD, at the latest on finish().
  StreamDecoder sd(tiny());
  const int b_e4 = tiny().token_id("\xc3\xa4");  // byte 0xE4 (lead of a 3-byte sequence)
  ASSERT_GE(b_e4, 0);
  EXPECT_EQ(sd.push(b_e4), "");
  EXPECT_EQ(sd.finish(), "\xef\xbf\xbd");
  StreamDecoder skip(tiny(), true);
  EXPECT_EQ(skip.push(tiny().eos_id()), "");
}

TEST(Tokenizer, ChatFormat) {
  const std::vector<ChatMessage> msgs = {{"system", "Be brief.", {}},
                                         {"user", "Hi", {}},
                                         {"assistant", "Hello.", {}},
                                         {"user", "Again", {}}};
  EXPECT_EQ(tiny().render_chat(msgs, true),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello.<｜end▁of▁sentence｜>"
            "<｜User｜>Again<｜Assistant｜>");
  EXPECT_EQ(tiny().render_chat({{"user", "x", {}}}, false), "<｜begin▁of▁sentence｜><｜User｜>x");
  // Its ids: bos and the tags are single tokens.
  const auto ids = tiny().encode(tiny().render_chat({{"user", "x", {}}}, true), false);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], tiny().bos_id());
  EXPECT_EQ(ids[3], tiny().token_id("<｜Assistant｜>"));
  EXPECT_THROW(tiny().render_chat({{"wizard", "x", {}}}, true), Error);
  EXPECT_THROW(tiny().render_chat({{"user", std::nullopt, {}}}, true), Error);
  const auto parsed = chat_messages_from_json(nlohmann::json::parse(
      R"([{"role":"user","content":"q"},{"role":"assistant","content":null,
          "tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}])"));
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_FALSE(parsed[1].content.has_value());
  EXPECT_EQ(parsed[1].tool_calls.at(0).name, "f");
  EXPECT_THROW(chat_messages_from_json(nlohmann::json::parse(R"([{"role":1}])")), Error);
  EXPECT_THROW(chat_messages_from_json(nlohmann::json::parse(R"({"role":"user"})")), Error);
}

TEST(Tokenizer, LongPromptRoundTrips) {
  // ~100K+ tokens of mixed text with long words and whitespace runs.
  std::mt19937 rng(7);
  const std::vector<std::string> parts = {"the ", "LORD ", "said ",   "unto ", "中文", "😀",
                                          "  ",   "\n",    "1234567", "word",  ", ",   "x"};
  std::string text;
  while (text.size() < 600000) text += parts[rng() % parts.size()];
  text += std::string(50000, 'a') + std::string(20000, ' ') + "end";
  const auto ids = tiny().encode(text, false);
  EXPECT_GT(ids.size(), 100000u);
  EXPECT_EQ(tiny().decode(ids), text);
}

}  // namespace
}  // namespace helix
