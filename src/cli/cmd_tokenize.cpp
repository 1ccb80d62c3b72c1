// `helix tokenize` (stdin text -> ids, last line of stdout) and `helix detokenize` (ids -> the
// text, written as is: no newline is added). Both need only the tokenizer files of --model.
#include <cstdio>
#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/tokens.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace helix::cli {

void add_tokenize_commands(CLI::App& app) {
  struct Opts {
    std::string model, tokens;
    bool no_special = false, skip_special = false, gen_prompt = false;
  };
  auto o = std::make_shared<Opts>();
  auto* tok = app.add_subcommand(
      "tokenize",
      "Read UTF-8 text from stdin, print its token ids comma-separated (last line of stdout); "
      "text that is not valid UTF-8 is an error");
  tok->add_option("--model", o->model, "Directory with tokenizer.json (+ tokenizer_config.json)")
      ->required();
  tok->add_flag("--no-special", o->no_special, "Do not add bos (or eos) around the text");
  tok->callback([o]() {
    const Tokenizer t = Tokenizer::load(o->model);
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    const std::vector<int> ids = t.encode(text, !o->no_special);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
  });

  auto* det = app.add_subcommand("detokenize", "Print the text of token ids (no newline added)");
  det->add_option("--model", o->model, "Directory with tokenizer.json (+ tokenizer_config.json)")
      ->required();
  det->add_option("--tokens", o->tokens, "Comma-separated ids; - reads them from stdin")
      ->required();
  det->add_flag("--skip-special", o->skip_special, "Leave out special tokens (bos, eos, ...)");
  det->callback([o]() {
    const Tokenizer t = Tokenizer::load(o->model);
    std::string list = o->tokens;
    if (list == "-") {
      list.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      while (!list.empty() && (list.back() == '\n' || list.back() == '\r')) list.pop_back();
    }
    const std::string text = t.decode(parse_tokens(list), o->skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });

  auto* chat = app.add_subcommand(
      "render-chat",
      "Read OpenAI-style chat messages (a JSON array) from stdin, print the prompt text in "
      "DeepSeek-V3's chat format (no newline added)");
  chat->add_option("--model", o->model, "Directory with tokenizer.json (+ tokenizer_config.json)")
      ->required();
  chat->add_flag("--add-generation-prompt", o->gen_prompt,
                 "End with the assistant tag, ready for the reply");
  chat->callback([o]() {
    const Tokenizer t = Tokenizer::load(o->model);
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail("render-chat: stdin is not JSON: {}", e.what());
    }
    const std::string out = t.render_chat(chat_messages_from_json(j), o->gen_prompt);
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
}

}  // namespace helix::cli
