// The `checksums`, `file` and `concat` sinks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <ostream>

#include "../../util/quote.hpp"
#include "flowpool/error.hpp"
#include "kernels.hpp"

namespace flowpool::detail {
namespace {

// `<hex>  <path>` exactly as coreutils' sha256sum prints it: a name holding a
// backslash, newline or carriage return is escaped (\\, \n, \r) and the line then
// starts with a backslash.
class checksums_sink final : public sink {
 public:
  explicit checksums_sink(std::ostream& out) : out_(out) {}
  void consume(item&& it) override {
    line_.clear();
    const std::string& name = it.input;
    const bool escape = name.find_first_of("\\\n\r") != std::string::npos;
    if (escape) line_ += '\\';
    line_ += it.value;
    line_ += "  ";
    if (escape) {
      for (const char c : name) {
        if (c == '\\') {
          line_ += "\\\\";
        } else if (c == '\n') {
          line_ += "\\n";
        } else if (c == '\r') {
          line_ += "\\r";
        } else {
          line_ += c;
        }
      }
    } else {
      line_ += name;
    }
    line_ += '\n';
    write_output(out_, line_, "checksums");
  }

 private:
  std::ostream& out_;
  std::string line_;
};

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto ch = static_cast<unsigned char>(c);
    hex += digits[ch >> 4];
    hex += digits[ch & 15];
  }
  return hex;
}

std::string from_hex(const std::string& hex) {
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) throw_error(errc::io, "file: the saved state's path_hex is not lowercase hex");
    bytes += static_cast<char>(hi * 16 + lo);
  }
  if (hex.size() % 2 != 0) throw_error(errc::io, "file: the saved state's path_hex is not lowercase hex");
  return bytes;
}

// Writes each result's bytes to `path` in source order. The bytes go to
// `path.partial`, renamed to `path` only when the run succeeds. Only the
// contiguous prefix of items (1, 2, 3, ...) is ever written, so an interrupted
// run leaves a .partial that holds whole results; its state (next id, byte length)
// lets --resume truncate to exactly that and continue.
//
// Results arrive in source order (the sink forces ordered mode), so an item that
// arrives past the next one expected means that one failed or was cancelled: the
// output has a permanent gap and this run cannot commit. Later results are then
// dropped, not held (memory stays bounded); --resume runs them again (needs_rerun).
class file_sink final : public sink {
 public:
  // Opens (without truncating) path.partial at once, so an unwritable output fails
  // before the run starts (exit 2). A fresh run truncates it at its first result; a
  // resumed one keeps the saved prefix (load_state). Refuses a .partial that is one
  // of the source's inputs, or lies in a directory the source reads (a files source
  // would read it, and an earlier .partial there is an input): writing it would
  // destroy or corrupt the input.
  file_sink(std::string path, const std::vector<std::string>& inputs)
      : path_(std::move(path)), partial_(path_ + ".partial") {
    struct stat mine {};
    const bool exists = ::stat(partial_.c_str(), &mine) == 0;
    for (const auto& in : inputs) {
      struct stat theirs {};
      const bool same_inode =
          exists && ::stat(in.c_str(), &theirs) == 0 && theirs.st_dev == mine.st_dev && theirs.st_ino == mine.st_ino;
      std::error_code ec1, ec2;
      const bool same_path =
          std::filesystem::weakly_canonical(in, ec1) == std::filesystem::weakly_canonical(partial_, ec2) && !ec1 &&
          !ec2;
      if (same_inode || same_path) {
        throw_error(errc::invalid_argument, "file: the temporary output " + quote_name(partial_) + " is the input " +
                                                quote_name(in) +
                                                ": writing it would destroy the input; choose another sink.path");
      }
      std::error_code ec3;
      if (!ec1 && std::filesystem::is_directory(in, ec3) && inside(partial_, in)) {
        throw_error(errc::invalid_argument, "file: the temporary output " + quote_name(partial_) +
                                                " is inside the input directory " + quote_name(in) +
                                                ", which the source reads: writing it would corrupt the input; "
                                                "choose a sink.path outside it");
      }
    }
    fd_ = ::open(partial_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) fail_io("cannot create");
  }
  file_sink(const file_sink&) = delete;
  file_sink& operator=(const file_sink&) = delete;

  // Whether `file` lies somewhere below the directory `dir` (both resolved).
  static bool inside(const std::string& file, const std::string& dir) {
    std::error_code e1, e2;
    const auto f = std::filesystem::weakly_canonical(file, e1);
    const auto d = std::filesystem::weakly_canonical(dir, e2);
    if (e1 || e2) return false;
    const auto rel = f.lexically_relative(d);
    return !rel.empty() && *rel.begin() != "..";
  }
  ~file_sink() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void consume(item&& it) override {
    if (!started_) start_fresh();
    if (it.id < next_id_) return;  // already in the file (a resumed run)
    if (it.id != next_id_ || gap_) {  // item next_id_ will never come: drop the rest
      gap_ = true;
      return;
    }
    append(it.value);
    ++next_id_;
  }

  void finish() override {
    if (!started_) start_fresh();  // no items: an empty file
    if (gap_) {
      throw_error(errc::io, "file: " + quote_name(path_) + ": item " + std::to_string(next_id_) +
                                " never arrived; the output is incomplete and was left in " + quote_name(partial_));
    }
    if (::fsync(fd_) != 0 && errno != EINVAL) fail_io("cannot sync");
    if (::close(fd_) != 0) {
      fd_ = -1;
      fail_io("cannot close");
    }
    fd_ = -1;
    if (std::rename(partial_.c_str(), path_.c_str()) != 0) {
      const int e = errno;
      throw_error(errc::io,
                  "file: cannot rename " + quote_name(partial_) + " to " + quote_name(path_) + ": " + errno_text(e));
    }
    // The rename is durable before the caller drops the resume state (best effort).
    const auto dir = std::filesystem::path(path_).parent_path();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }

  void finish_failed() override {
    // A failed run commits nothing: what was written stays in .partial for inspection.
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  void sync() override {
    if (fd_ >= 0 && ::fsync(fd_) != 0 && errno != EINVAL) fail_io("cannot sync");
  }

  // The path is stored hex-encoded: it may hold any bytes, and JSON needs UTF-8.
  [[nodiscard]] nlohmann::json save_state() const override {
    return {{"path_hex", to_hex(path_)}, {"next_id", next_id_}, {"bytes", bytes_}};
  }

  void load_state(const nlohmann::json& s) override {
    const auto saved_path = from_hex(s.at("path_hex").get<std::string>());
    if (saved_path != path_) {
      throw_error(errc::io,
                  "file: the saved run wrote " + quote_name(saved_path) + ", this one writes " + quote_name(path_));
    }
    next_id_ = s.at("next_id").get<std::uint64_t>();
    bytes_ = s.at("bytes").get<std::uint64_t>();
    if (next_id_ == 0) throw_error(errc::io, "file: the saved next_id is 0");
    started_ = true;
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < bytes_) {
      throw_error(errc::io, "file: --resume: " + quote_name(partial_) + " is missing or shorter than the saved " +
                                std::to_string(bytes_) + " bytes");
    }
    if (::ftruncate(fd_, static_cast<off_t>(bytes_)) != 0 || ::lseek(fd_, 0, SEEK_END) < 0) {
      fail_io("cannot truncate");
    }
  }

  [[nodiscard]] bool needs_rerun(std::uint64_t id) const override { return id >= next_id_; }

 private:
  void start_fresh() {
    if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) < 0) fail_io("cannot truncate");
    started_ = true;
  }
  void append(const std::string& data) {
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail_io("cannot write");
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    bytes_ += data.size();
  }
  [[noreturn]] void fail_io(const char* what) const {
    const int e = errno;
    throw_error(errc::io, std::string("file: ") + what + " " + quote_name(partial_) + ": " + errno_text(e));
  }

  std::string path_;
  std::string partial_;
  int fd_ = -1;
  bool started_ = false;  // truncated (fresh run) or restored (resume)
  bool gap_ = false;      // an item never came: nothing more is written
  std::uint64_t next_id_ = 1;
  std::uint64_t bytes_ = 0;
};

// Each result's bytes, as they are, in source order (like `parallel -k`).
class concat_sink final : public sink {
 public:
  explicit concat_sink(std::ostream& out) : out_(out) {}
  void consume(item&& it) override {
    if (it.value.empty()) return;
    write_output(out_, it.value, "concat");
  }

 private:
  std::ostream& out_;
};

}  // namespace

void write_output(std::ostream& out, std::string_view data, std::string_view who) {
  errno = 0;
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.flush();
  if (!out) {
    const int e = errno;
    throw_error(errc::io, std::string(who) + ": cannot write the output: " + (e != 0 ? errno_text(e) : "write error"));
  }
}

// The file sink's path: a file name, never empty or ending in a slash.
param_info file_path_param() {
  param_info p = make_param("path", param_type::string, nullptr, "the output file");
  p.check = [](const nlohmann::json& v, const nlohmann::json&,
               const std::function<void(const std::string&, const std::string&)>& problem) {
    const auto& path = v.get_ref<const std::string&>();
    if (path.empty()) {
      problem("", "must name a file, got \"\"");
    } else if (path.back() == '/') {
      problem("", "must name a file, not a directory: " + quote_name(path));
    }
  };
  return p;
}

void register_io_sinks(registry& r) {
  r.add_sink({"checksums",
              "prints \"<value>  <input>\" lines exactly as sha256sum does (names with \\, newline or CR escaped)",
              {},
              [](const nlohmann::json&, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<checksums_sink>(*env.out);
              },
              true});
  r.add_sink({"file",
              "writes each value's bytes to a file in source order, through path.partial renamed on success "
              "(--resume continues an interrupted .partial)",
              {file_path_param()},
              [](const nlohmann::json& p, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<file_sink>(p["path"].get<std::string>(), env.inputs);
              },
              true});
  r.add_sink({"concat",
              "writes each value's bytes to stdout as they are, in source order (like parallel -k)",
              {},
              [](const nlohmann::json&, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<concat_sink>(*env.out);
              },
              true});
}

}  // namespace flowpool::detail
