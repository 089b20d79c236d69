// The `files` and `chunks` sources.
//
// `files` walks a directory depth-first. Each directory's entries are read, sorted
// by name (bytewise) and visited in that order, so the output order is stable and
// equals sorting the paths component by component. Only the directories on the
// current path are held in memory, never the whole tree.
//
// `chunks` reads one file (or stdin) in fixed-size pieces. The runner pulls the next
// chunk only when the first stage's queue has room, so at most `capacity` chunks
// (plus those being worked on) are in memory.
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../../util/quote.hpp"
#include "flowpool/error.hpp"
#include "kernels.hpp"

namespace flowpool::detail {

std::string errno_text(int err) { return std::strerror(err); }

std::string read_whole_file(const std::string& path, std::string_view what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    throw permanent_error(std::string(what) + ": cannot open " + quote_name(path) + ": " + errno_text(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool dir = S_ISDIR(st.st_mode);
    ::close(fd);
    throw permanent_error(std::string(what) + ": " + quote_name(path) + " is " +
                          (dir ? "a directory" : "not a regular file") + ", expected a file");
  }
  std::string data;
  data.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  for (;;) {
    if (got == data.size()) data.resize(std::max<std::size_t>(data.size() * 2, 65536));  // the file grew
    const ssize_t n = ::read(fd, data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      throw permanent_error(std::string(what) + ": read error in " + quote_name(path) + ": " + errno_text(e));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  data.resize(got);
  return data;
}

namespace {

// ---- files ---------------------------------------------------------------------------------

class files_source final : public source {
 public:
  files_source(std::string root, bool recursive, std::string glob, bool follow)
      : recursive_(recursive), glob_(std::move(glob)), follow_(follow) {
    struct stat st {};
    if (::stat(root.c_str(), &st) != 0) {
      const int e = errno;
      throw_error(errc::io, "source.path: cannot open " + quote_name(root) + ": " + errno_text(e));
    }
    if (S_ISREG(st.st_mode)) {
      single_ = std::move(root);
      return;
    }
    if (!S_ISDIR(st.st_mode)) {
      throw_error(errc::io, "source.path: " + quote_name(root) + " is neither a file nor a directory");
    }
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    push_dir(std::move(root));
  }

  // A directory walk never waits on outside input: items (paths) are read ahead.
  [[nodiscard]] std::size_t read_ahead() const override { return 64; }
  std::optional<item> next() override {
    if (!single_.empty()) {
      if (single_done_) return std::nullopt;
      single_done_ = true;
      return make_item(single_);
    }
    while (!stack_.empty()) {
      frame& f = stack_.back();
      if (f.pos == f.entries.size()) {
        stack_.pop_back();
        continue;
      }
      const entry e = std::move(f.entries[f.pos++]);
      std::string full = f.dir == "/" ? "/" + e.name : f.dir + "/" + e.name;
      unsigned char type = e.type;
      if (type == DT_UNKNOWN) {  // some file systems do not fill d_type
        struct stat st {};
        if (::lstat(full.c_str(), &st) != 0) continue;  // vanished since the listing
        type = S_ISLNK(st.st_mode) ? DT_LNK : S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
      }
      if (type == DT_LNK) {
        if (!follow_) continue;
        struct stat st {};
        if (::stat(full.c_str(), &st) != 0) continue;  // dangling link
        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
      }
      if (type == DT_DIR) {
        if (recursive_) push_dir(std::move(full));
        continue;
      }
      if (type != DT_REG) continue;  // fifos, sockets, devices
      if (::fnmatch(glob_.c_str(), e.name.c_str(), 0) != 0) continue;
      return make_item(full);
    }
    return std::nullopt;
  }

 private:
  struct entry {
    std::string name;
    unsigned char type = DT_UNKNOWN;
  };
  struct frame {
    std::string dir;
    std::vector<entry> entries;
    std::size_t pos = 0;
    dev_t dev = 0;
    ino_t ino = 0;
  };

  item make_item(const std::string& path) {
    item it;
    it.id = ++n_;
    it.input = path;
    return it;
  }

  void push_dir(std::string dir) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      const int e = errno;
      throw_error(errc::io, "cannot read directory " + quote_name(dir) + ": " + errno_text(e));
    }
    frame f;
    f.dir = std::move(dir);
    struct stat st {};
    if (::fstat(::dirfd(d), &st) == 0) {
      f.dev = st.st_dev;
      f.ino = st.st_ino;
    }
    for (const auto& a : stack_) {  // a symlink loop (only reachable with follow_symlinks)
      if (a.dev == f.dev && a.ino == f.ino) {
        ::closedir(d);
        return;
      }
    }
    errno = 0;
    while (const dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      f.entries.push_back(entry{de->d_name, de->d_type});
    }
    const int e = errno;
    ::closedir(d);
    if (e != 0) throw_error(errc::io, "read error in directory " + quote_name(f.dir) + ": " + errno_text(e));
    std::sort(f.entries.begin(), f.entries.end(), [](const entry& a, const entry& b) { return a.name < b.name; });
    stack_.push_back(std::move(f));
  }

  bool recursive_;
  std::string glob_;
  bool follow_;
  std::string single_;
  bool single_done_ = false;
  std::vector<frame> stack_;
  std::uint64_t n_ = 0;
};

// ---- chunks --------------------------------------------------------------------------------

class chunks_source final : public source {
 public:
  chunks_source(std::string path, std::size_t size, bool line_boundary)
      : path_(std::move(path)), size_(size), lines_(line_boundary) {
    if (path_ == "-") {
      fd_ = 0;
      return;
    }
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const int e = errno;
      throw_error(errc::io, "source.path: cannot open " + quote_name(path_) + ": " + errno_text(e));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || S_ISDIR(st.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      throw_error(errc::io, "source.path: " + quote_name(path_) + " is a directory, expected a file");
    }
    if (S_ISREG(st.st_mode) && !lines_) {
      const auto bytes = static_cast<std::uint64_t>(st.st_size);
      hint_ = std::max<std::uint64_t>(1, (bytes + size_ - 1) / size_);
    }
  }
  chunks_source(const chunks_source&) = delete;
  chunks_source& operator=(const chunks_source&) = delete;
  ~chunks_source() override {
    if (fd_ > 0) ::close(fd_);
  }

  std::optional<item> next() override {
    if (eof_ && carry_.empty()) {
      if (n_ > 0) return std::nullopt;
      item it;  // an empty input is one empty chunk: a valid (empty) output downstream
      it.id = ++n_;
      return it;
    }
    std::string buf = std::move(carry_);
    carry_.clear();
    const std::size_t want = size_;
    if (buf.size() < want && !eof_) {
      const std::size_t have = buf.size();
      buf.resize(want);
      std::size_t got = have;
      while (got < want) {
        const ssize_t n = ::read(fd_, buf.data() + got, want - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          const int e = errno;
          throw_error(errc::io, "read error in " + quote_name(path_) + ": " + errno_text(e));
        }
        if (n == 0) {
          eof_ = true;
          break;
        }
        got += static_cast<std::size_t>(n);
      }
      buf.resize(got);
    }
    if (lines_ && !eof_) {  // end the chunk after its last newline; the rest starts the next one
      const auto nl = buf.rfind('\n');
      if (nl != std::string::npos && nl + 1 < buf.size()) {
        carry_.assign(buf, nl + 1, std::string::npos);
        buf.resize(nl + 1);
      }
    }
    if (buf.empty()) {
      if (n_ > 0) return std::nullopt;
      eof_ = true;
      return next();
    }
    item it;
    it.id = ++n_;
    it.input = std::move(buf);
    return it;
  }
  [[nodiscard]] std::optional<std::uint64_t> size_hint() const override { return hint_; }

 private:
  std::string path_;
  std::size_t size_;
  bool lines_;
  int fd_ = -1;
  bool eof_ = false;
  std::string carry_;
  std::uint64_t n_ = 0;
  std::optional<std::uint64_t> hint_;
};

}  // namespace

void register_fs_sources(registry& r) {
  r.add_source({"files",
                "the regular files under a directory (or one file), depth-first in sorted order, streamed; "
                "item input = the path",
                {make_param("path", param_type::string, nullptr, "a directory (or a single file)"),
                 make_param("recursive", param_type::boolean, true, "descend into subdirectories"),
                 make_param("glob", param_type::string, "*", "keep files whose name matches this pattern (fnmatch)"),
                 make_param("follow_symlinks", param_type::boolean, false,
                            "follow symbolic links to files and directories (false: skip them)")},
                [](const nlohmann::json& p) -> std::unique_ptr<source> {
                  return std::make_unique<files_source>(p["path"].get<std::string>(), p["recursive"].get<bool>(),
                                                        p["glob"].get<std::string>(),
                                                        p["follow_symlinks"].get<bool>());
                }});
  r.add_source({"chunks",
                "the bytes of one file (\"-\": stdin) in chunks of `size`; item input = the bytes",
                {make_param("path", param_type::string, nullptr, "the file to read, or \"-\" for stdin"),
                 make_param("size", param_type::integer, 1048576, "bytes per chunk", 1, 1073741824.0),
                 make_param("boundary", param_type::string, "none",
                            "\"line\": end each chunk after its last newline (no line is split unless it is "
                            "longer than size)",
                            0, 9.0e15, {"none", "line"})},
                [](const nlohmann::json& p) -> std::unique_ptr<source> {
                  return std::make_unique<chunks_source>(p["path"].get<std::string>(),
                                                         p["size"].get<std::size_t>(),
                                                         p["boundary"].get<std::string>() == "line");
                }});
}

}  // namespace flowpool::detail
