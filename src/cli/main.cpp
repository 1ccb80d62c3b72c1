#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "parallel/comm.h"

namespace {

// Error text on exactly one line: arguments echoed into a message may hold newlines or other
// control characters; they are written as escapes.
std::string one_line(const char* msg) {
  std::string out;
  for (const char* p = msg; *p; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int report(const std::string& msg, bool abort_peers) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::fflush(stderr);
  if (abort_peers) helix::mpi_abort_if_running(2);  // peers blocked in a collective must not hang
  return 2;
}

}  // namespace

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
    return report(one_line(e.what()) + " (see --help)", false);
  } catch (const std::bad_alloc&) {
    return report("out of memory (the model, KV cache or a request is larger than this machine)",
                  true);
  } catch (const std::exception& e) {
    return report(one_line(e.what()), true);
  }
  return 0;
}
