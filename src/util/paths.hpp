// Internal: which output paths are streams (written in place, never truncated or renamed over).
//
// Header-only so that both the library and the CLI can use it without exporting it.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <string>

namespace flowpool::detail {

// Whether `path` names a stream rather than a file flowpool may truncate, rename over or put
// a FILE.state beside: any existing file that is not a regular file or a directory (a FIFO,
// a terminal, /dev/null), and every path under /dev or /proc, whatever it resolves to.
// /dev/stderr with stderr redirected to a file resolves to that regular file, which is the
// shell's to append to, not ours to truncate.
inline bool is_stream_path(const std::string& path) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (!ec && (abs.rfind("/dev/", 0) == 0 || abs.rfind("/proc/", 0) == 0)) return true;
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

}  // namespace flowpool::detail
