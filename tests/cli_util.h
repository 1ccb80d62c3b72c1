#pragma once
// Running the `helix` binary from tests: captured stdout/stderr, exit code or signal, and the
// user-facing failure contract (exit 2, exactly one "error: ..." line, nothing on stdout).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace helix {
namespace test {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/helix_cli_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

struct Result {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out, err;
};

// Runs `helix args...` in the source directory, stdout and stderr captured separately.
// Runs `helix args...` in the source directory, stdout and stderr captured separately, with
// `input` on stdin; under `timeout 60`, so a hang shows as exit code 124 instead of stalling.
inline Result run_helix(const std::vector<std::string>& args, const std::string& input = "") {
  TempDir d;
  const fs::path out = d.path / "stdout", err = d.path / "stderr", in = d.path / "stdin";
  std::ofstream(in, std::ios::binary) << input;
  std::string cmd = "cd " + quote(HELIX_SOURCE_DIR) + " && timeout -k 5 60 " + quote(HELIX_BINARY);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " > " + quote(out.string()) + " 2> " + quote(err.string()) + " < " + quote(in.string());
  const int status = std::system(cmd.c_str());
  Result r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) v.push_back(line);
  return v;
}

inline std::string join(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// The user-facing failure contract: exit 2, stderr exactly one line "error: ..." that contains
// every needle, nothing on stdout.
inline void expect_user_error(const std::vector<std::string>& args,
                              std::initializer_list<std::string> needles, const std::string& what,
                              const std::string& input = "") {
  Result r = run_helix(args, input);
  EXPECT_EQ(r.signal, 0) << what << ": killed by signal " << r.signal << "\n" << r.err;
  EXPECT_EQ(r.exit_code, 2) << what << "\nstderr: " << r.err;
  auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 1u) << what << ": stderr is not one line:\n" << r.err;
  EXPECT_EQ(lines[0].rfind("error: ", 0), 0u) << what << ": " << lines[0];
  for (const auto& n : needles)
    EXPECT_NE(lines[0].find(n), std::string::npos)
        << what << ": '" << lines[0] << "' lacks '" << n << "'";
  EXPECT_TRUE(r.out.empty()) << what << ": stdout: " << r.out;
}

// A copy of the tiny model that a test may damage.
struct ModelCopy : TempDir {
  ModelCopy() {
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors"})
      fs::copy_file(fs::path(HELIX_SOURCE_DIR) / "models/tiny" / f, path / f);
  }
  std::string dir() const { return path.string(); }
};

}  // namespace test
}  // namespace helix
