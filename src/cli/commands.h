#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself on the root app here.
// A command's callback throws helix::Error for bad input; main() turns it into one line on
// stderr and exit code 2.
#include <CLI/CLI.hpp>

namespace helix::cli {

void add_score_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_eplb_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);  // tokenize and detokenize

}  // namespace helix::cli
