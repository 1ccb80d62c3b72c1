#include <cstdio>

#include "cli/commands.h"
#include "cli/tokens.h"
#include "core/npy.h"
#include "engine/engine.h"

namespace helix::cli {

void add_score_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Logits of one full forward over the tokens (.npy)");
  struct Opts {
    std::string model, tokens, out;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_option("--out", o->out, "Output .npy file: float32 [n_tokens, vocab]")->required();
  cmd->callback([o]() {
    const std::vector<int> tokens = parse_tokens(o->tokens);
    int vocab = 0;
    std::vector<float> logits = score(o->model, tokens, &vocab);
    npy_write_f32(o->out, logits.data(), {static_cast<int64_t>(tokens.size()), vocab});
    std::fprintf(stderr, "wrote %s [%zu, %d]\n", o->out.c_str(), tokens.size(), vocab);
  });
}

}  // namespace helix::cli
