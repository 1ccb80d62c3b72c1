#pragma once
// File access for everything the user names. Inputs: only regular files are read, and the type
// is checked before a blocking open (a FIFO or device never hangs the process). Outputs: written
// to a temporary name beside the target, flushed, checked and renamed, so a failed write (a full
// disk, /dev/full) is an Error and never leaves a truncated file under the real name.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace helix {

// True when `path` exists and is a regular file (after symlinks). Other types are not "there".
bool regular_file_exists(const std::string& path);

// The whole file. Error when it is missing, not a regular file, larger than max_bytes or
// unreadable; `what` names it in messages (e.g. "config.json").
std::string file_read_text(const std::string& path, size_t max_bytes = size_t(1) << 30);

// Writes the concatenated parts to `path` atomically (temp + rename) when path is a regular
// file or new; into the file itself when it is a character device or FIFO (/dev/stdout,
// /dev/full). Every write, the flush and the close are checked.
void file_write(const std::string& path, const std::vector<std::string_view>& parts);
inline void file_write(const std::string& path, std::string_view text) {
  file_write(path, std::vector<std::string_view>{text});
}

// `s` made fit for a one-line message: control characters become '?', capped at 200 bytes.
std::string printable(std::string_view s);

}  // namespace helix
