#include <cstdio>

#include "cli/commands.h"
#include "cli/tokens.h"
#include "core/npy.h"
#include "engine/engine.h"

namespace helix::cli {

void add_score_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Logits of one full forward over the tokens (.npy)");
  struct Opts {
    std::string model, tokens, tokens_file, out;
    DeviceConfig dev;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3");
  cmd->add_option("--tokens-file", o->tokens_file,
                  "File with the token ids (comma-separated, one line) instead of --tokens");
  add_device_options(cmd, o->dev);
  cmd->add_option("--out", o->out, "Output .npy file: float32 [n_tokens, vocab]")->required();
  cmd->callback([o]() {
    if (o->tokens.empty() == o->tokens_file.empty())
      fail("give the token ids with exactly one of --tokens and --tokens-file");
    std::vector<int> tokens;
    if (!o->tokens_file.empty()) {
      auto reqs = read_tokens_file(o->tokens_file);
      if (reqs.size() != 1)
        fail("--tokens-file '{}': score takes one request (one line), got {}", o->tokens_file,
             reqs.size());
      tokens = std::move(reqs[0]);
    } else {
      tokens = parse_tokens(o->tokens);
    }
    int vocab = 0;
    std::vector<float> logits = score(o->model, tokens, &vocab, o->dev);
    npy_write_f32(o->out, logits.data(), {static_cast<int64_t>(tokens.size()), vocab});
    std::fprintf(stderr, "wrote %s [%zu, %d]\n", o->out.c_str(), tokens.size(), vocab);
  });
}

}  // namespace helix::cli
