#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace helix {

std::string printable(std::string_view s) {
  constexpr size_t kMax = 200;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7F) ? '?' : static_cast<char>(c);
  }
  if (s.size() > kMax) out += "...";
  return out;
}

bool regular_file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string file_read_text(const std::string& path, size_t max_bytes) {
  const std::string name = printable(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot open {}: {}", name, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("{} is not a regular file", name);
  // O_NONBLOCK: if the file was swapped for a FIFO after the stat, open still returns at once.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("cannot open {}: {}", name, std::strerror(errno));
  std::string out;
  try {
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) fail("{} is not a regular file", name);
    if (static_cast<uint64_t>(st.st_size) > max_bytes)
      fail("{} is {} bytes, more than the {} allowed", name, st.st_size, max_bytes);
    out.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < out.size()) {
      const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("cannot read {}: {}", name, std::strerror(errno));
      if (n == 0) break;  // shrank while reading
      got += static_cast<size_t>(n);
    }
    out.resize(got);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return out;
}

namespace {

void write_all(int fd, const std::vector<std::string_view>& parts, const std::string& name) {
  for (std::string_view p : parts) {
    size_t off = 0;
    while (off < p.size()) {
      const ssize_t n = ::write(fd, p.data() + off, p.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("cannot write {}: {}", name, std::strerror(n < 0 ? errno : EIO));
      off += static_cast<size_t>(n);
    }
  }
}

}  // namespace

void file_write(const std::string& path, const std::vector<std::string_view>& parts) {
  const std::string name = printable(path);
  if (path.empty()) fail("output file name is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) fail("cannot write {}: it is a directory", name);
    // A device or FIFO the user named on purpose: write straight into it (never rename over it).
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail("cannot open {} for writing: {}", name, std::strerror(errno));
    try {
      // Blocking writes from here on: a reader on the FIFO is there (open succeeded).
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      write_all(fd, parts, name);
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0) fail("cannot write {}: {}", name, std::strerror(errno));
    return;
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot open {} for writing: {}", name, std::strerror(errno));
  try {
    write_all(fd, parts, name);
    if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
      fail("cannot write {}: {}", name, std::strerror(errno));
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("cannot write {}: {}", name, std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write {}: {}", name, std::strerror(err));
  }
}

}  // namespace helix
