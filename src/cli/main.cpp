#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "parallel/comm.h"

int main(int argc, char** argv) {
  CLI::App app{
      "helix: decode engine for DeepSeek-V3-class models (MLA + MoE) with Helix parallelism"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "helix 0.1.0");
  helix::cli::add_score_command(app);
  helix::cli::add_generate_command(app);
  helix::cli::add_eplb_command(app);
  helix::cli::add_serve_command(app);
  helix::cli::add_tokenize_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fflush(stderr);
    helix::mpi_abort_if_running(2);  // peers blocked in a collective must not hang
    return 2;
  }
  return 0;
}
