#pragma once
// One exception type for every user-facing failure: the CLI prints its message on one line and
// exits with code 2. Internal invariants use HELIX_CHECK, which throws the same type so that a
// bug never turns into a crash without a message.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace helix {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace helix

#define HELIX_CHECK(cond, ...)               \
  do {                                       \
    if (!(cond)) ::helix::fail(__VA_ARGS__); \
  } while (0)
