// The registry and the built-in sources, kernels and sinks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "../util/quote.hpp"
#include "../util/text.hpp"
#include "flowpool/graph.hpp"
#include "flowpool/registry.hpp"
#include "kernels/kernels.hpp"

namespace flowpool {
namespace {

// ---- sources ------------------------------------------------------------------------------

class range_source final : public source {
 public:
  range_source(std::int64_t start, std::uint64_t count) : start_(start), count_(count) {}
  std::optional<item> next() override {
    if (i_ >= count_) return std::nullopt;
    item it;
    it.id = i_ + 1;
    it.input = std::to_string(start_ + static_cast<std::int64_t>(i_));
    ++i_;
    return it;
  }
  [[nodiscard]] std::optional<std::uint64_t> size_hint() const override { return count_; }
  [[nodiscard]] std::size_t read_ahead() const override { return 64; }

 private:
  std::int64_t start_;
  std::uint64_t count_;
  std::uint64_t i_ = 0;
};

// Streams lines one at a time: never loads the input whole. Reads with ::read, so a
// read error (stdin is a directory, a closed stdin, EIO) fails the run with its reason
// instead of looking like the end of the input. A line is every byte up to its '\n'
// (a '\r' before it is kept, as with xargs and GNU parallel); a last line without '\n'
// is an item too, an empty input is no item.
class lines_source final : public source {
 public:
  explicit lines_source(const std::string& path) : path_(path) {
    if (path == "-") {
      fd_ = STDIN_FILENO;
    } else {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) {
        const int e = errno;
        detail::throw_error(errc::io, "source.path: cannot open " + detail::quote_name(path) + ": " + std::strerror(e));
      }
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      close_fd();
      detail::throw_error(errc::io, "source.path: cannot read " + describe() + ": " + std::strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
      close_fd();
      detail::throw_error(errc::io, "source.path: " + describe() + " is a directory, expected a file");
    }
    regular_ = S_ISREG(st.st_mode);
  }
  lines_source(const lines_source&) = delete;
  lines_source& operator=(const lines_source&) = delete;
  ~lines_source() override { close_fd(); }

  std::optional<item> next() override {
    for (;;) {
      const auto nl = buf_.find('\n', std::max(pos_, scanned_));  // a long line is scanned once
      if (nl != std::string::npos) return take(nl - pos_, 1);
      scanned_ = buf_.size();
      if (eof_) {
        if (pos_ == buf_.size()) return std::nullopt;
        return take(buf_.size() - pos_, 0);
      }
      buf_.erase(0, pos_);
      scanned_ -= pos_;
      pos_ = 0;
      const std::size_t have = buf_.size();
      buf_.resize(have + 65536);
      ssize_t n = 0;
      do {
        n = ::read(fd_, buf_.data() + have, 65536);
      } while (n < 0 && errno == EINTR);
      const int e = errno;
      buf_.resize(have + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
      if (n < 0) detail::throw_error(errc::io, "source.path: read error in " + describe() + ": " + std::strerror(e));
      if (n == 0) eof_ = true;
    }
  }
  // A regular file never makes next() wait on outside input; a pipe or a terminal does.
  [[nodiscard]] std::size_t read_ahead() const override { return regular_ ? 64 : 1; }

 private:
  [[nodiscard]] std::string describe() const { return path_ == "-" ? "stdin" : detail::quote_name(path_); }
  void close_fd() {
    if (fd_ > STDIN_FILENO) ::close(fd_);
    fd_ = -1;
  }
  item take(std::size_t len, std::size_t skip) {
    item it;
    it.id = ++n_;
    it.input.assign(buf_, pos_, len);
    pos_ += len + skip;
    return it;
  }

  std::string path_;
  int fd_ = -1;
  std::string buf_;
  std::size_t pos_ = 0;
  std::size_t scanned_ = 0;  // buf_ has no '\n' in [pos_, scanned_)
  bool eof_ = false;
  bool regular_ = false;  // fd_ is a regular file (read_ahead)
  std::uint64_t n_ = 0;
};

// ---- kernels -------------------------------------------------------------------------------

// Deterministic CPU work: xorshift rounds, no clock reads.
std::uint64_t spin_work(std::uint64_t iterations, std::uint64_t x) {
  x |= 1;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

std::uint64_t mix(std::uint64_t seed, std::uint64_t id) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (id + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// ---- sinks ---------------------------------------------------------------------------------

class print_sink final : public sink {
 public:
  print_sink(std::string format, std::ostream& out) : format_(std::move(format)), out_(out) {}
  void consume(item&& it) override {
    line_.clear();
    for (std::size_t i = 0; i < format_.size(); ++i) {
      if (format_[i] == '{') {
        const auto close = format_.find('}', i);
        if (close != std::string::npos) {
          const std::string_view key(format_.data() + i + 1, close - i - 1);
          if (key == "id") {
            line_ += std::to_string(it.id);
          } else if (key == "worker") {
            line_ += std::to_string(it.worker);
          } else if (key == "input") {
            line_ += it.input;
          } else if (key == "value") {
            line_ += it.value;
          } else {
            line_.append(format_, i, close - i + 1);
          }
          i = close;
          continue;
        }
      }
      line_ += format_[i];
    }
    line_ += '\n';
    detail::write_output(out_, line_, "print");  // one complete record
  }

 private:
  std::string format_;
  std::ostream& out_;
  std::string line_;
};

// The aggregates print nothing when the run failed: a partial total is not the
// answer. Their state is kept for --resume instead (see runner.cpp).
class count_sink final : public sink {
 public:
  explicit count_sink(std::ostream& out) : out_(out) {}
  void consume(item&&) override { ++n_; }
  void finish() override { detail::write_output(out_, std::to_string(n_) + '\n', "count"); }
  void finish_failed() override {}
  [[nodiscard]] nlohmann::json save_state() const override { return {{"count", n_}}; }
  void load_state(const nlohmann::json& s) override { n_ = s.at("count").get<std::uint64_t>(); }

 private:
  std::ostream& out_;
  std::uint64_t n_ = 0;
};

// Integers are summed exactly in 128 bits (no int64 wrap: three values near 4e18 print
// 12000000000000000000), decimal values in a double. The sum of 2^64 int64 values always
// fits; an overflow of the 128-bit sum would still be reported, never wrapped.
__extension__ using int128 = __int128;  // GCC/Clang: exact 128-bit sums
__extension__ using uint128 = unsigned __int128;

class sum_sink final : public sink {
 public:
  explicit sum_sink(std::ostream& out) : out_(out) {}
  void consume(item&& it) override {
    const std::string& v = it.value.empty() ? it.input : it.value;
    std::int64_t i = 0;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), i);
    if (ec == std::errc{} && p == v.data() + v.size()) {
      if (__builtin_add_overflow(isum_, static_cast<int128>(i), &isum_)) {
        throw error(errc::invalid_argument, "sum: the integer sum overflows 128 bits at item " + std::to_string(it.id));
      }
      return;
    }
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(d)) {
      // Quoted (a value may hold a newline or a terminal escape) and cut to its first 100 bytes.
      const std::string shown = detail::quote_name(std::string_view(v).substr(0, 100)) +
                                (v.size() > 100 ? " (the first 100 of " + std::to_string(v.size()) + " bytes)" : "");
      throw error(errc::invalid_argument,
                  "sum: item " + std::to_string(it.id) + " value " + shown + " is not a number");
    }
    dsum_ += d;
    has_double_ = true;
  }
  void finish() override {
    std::ostringstream text;
    if (has_double_) {
      text << (static_cast<double>(isum_) + dsum_) << '\n';
    } else {
      text << to_decimal(isum_) << '\n';
    }
    detail::write_output(out_, text.str(), "sum");
  }
  void finish_failed() override {}
  // The integer sum is saved as a decimal string (JSON numbers stop at 64 bits).
  [[nodiscard]] nlohmann::json save_state() const override {
    return {{"int", to_decimal(isum_)}, {"double", dsum_}, {"has_double", has_double_}};
  }
  void load_state(const nlohmann::json& s) override {
    const auto& i = s.at("int");
    if (i.is_string()) {
      isum_ = from_decimal(i.get<std::string>());
    } else {
      isum_ = i.get<std::int64_t>();  // a state saved by an older version
    }
    dsum_ = s.at("double").get<double>();
    has_double_ = s.at("has_double").get<bool>();
  }

  static std::string to_decimal(int128 v) {
    const bool neg = v < 0;
    auto u = neg ? uint128{0} - static_cast<uint128>(v) : static_cast<uint128>(v);
    std::string digits;
    do {
      digits += static_cast<char>('0' + static_cast<int>(u % 10));
      u /= 10;
    } while (u != 0);
    if (neg) digits += '-';
    return {digits.rbegin(), digits.rend()};
  }
  static int128 from_decimal(const std::string& s) {
    std::size_t k = 0;
    const bool neg = !s.empty() && s[0] == '-';
    if (neg) k = 1;
    if (k == s.size()) throw error(errc::invalid_argument, "sum: bad saved state \"" + s + "\"");
    int128 v = 0;
    for (; k < s.size(); ++k) {
      const char c = s[k];
      if (c < '0' || c > '9' || __builtin_mul_overflow(v, 10, &v) ||
          __builtin_add_overflow(v, neg ? -(c - '0') : (c - '0'), &v)) {
        throw error(errc::invalid_argument, "sum: bad saved state \"" + s + "\"");
      }
    }
    return v;
  }

 private:
  std::ostream& out_;
  int128 isum_ = 0;
  double dsum_ = 0;
  bool has_double_ = false;
};

param_info P(std::string name, param_type type, nlohmann::json def, std::string help, double lo = 0,
             double hi = 9.0e15) {
  return detail::make_param(std::move(name), type, std::move(def), std::move(help), lo, hi);
}

// ---- parameter rules beyond the types (param_info::check), run by validate_spec ------------

using problem_fn = std::function<void(const std::string&, const std::string&)>;

// An item id in a list: a positive integer, or one written as a string ("7").
std::optional<std::uint64_t> item_id(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>() > 0 ? std::optional(v.get<std::uint64_t>()) : std::nullopt;
  if (v.is_number_integer()) return v.get<std::int64_t>() > 0 ? std::optional(v.get<std::uint64_t>()) : std::nullopt;
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_ref<const std::string&>();
  std::uint64_t id = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size() || id == 0) return std::nullopt;
  return id;
}

void check_item_ids(const nlohmann::json& ids, const nlohmann::json&, const problem_fn& problem) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (!item_id(ids[i])) {
      problem("[" + std::to_string(i) + "]",
              "must be an item id (a positive integer, or one written as a string such as \"7\"), got " +
                  detail::dump_escaped(ids[i]));
    }
  }
}

// The print sink's placeholders: {id} {worker} {input} {value}. Parsed as the sink parses
// them (a '{' up to the next '}'), so that nothing is printed literally by mistake.
void check_print_format(const nlohmann::json& v, const nlohmann::json&, const problem_fn& problem) {
  const auto& format = v.get_ref<const std::string&>();
  for (std::size_t i = format.find('{'); i != std::string::npos; i = format.find('{', i + 1)) {
    const auto close = format.find('}', i);
    if (close == std::string::npos) break;
    const std::string key = format.substr(i + 1, close - i - 1);
    if (key != "id" && key != "worker" && key != "input" && key != "value") {
      problem("", "unknown placeholder \"{" + detail::escape_bytes(key) +
                      "}\"; the placeholders are {id} {worker} {input} {value}");
    }
    i = close;
  }
}

void register_builtins(registry& r) {
  r.add_source({"range",
                "the integers start, start+1, ... (count of them)",
                {P("count", param_type::integer, nullptr, "how many items", 0, 4.0e18),
                 P("start", param_type::integer, 1, "the first integer", -4.0e18, 4.0e18)},
                [](const nlohmann::json& p) -> std::unique_ptr<source> {
                  return std::make_unique<range_source>(p["start"].get<std::int64_t>(), p["count"].get<std::uint64_t>());
                }});
  r.add_source({"lines",
                "the lines of a text file (\"-\": stdin), streamed",
                {P("path", param_type::string, nullptr, "the file to read, or \"-\" for stdin")},
                [](const nlohmann::json& p) -> std::unique_ptr<source> {
                  return std::make_unique<lines_source>(p["path"].get<std::string>());
                }});

  r.add_kernel({"sleep",
                "waits (simulated I/O), stopping early on cancel; value = input",
                {P("ms", param_type::integer, 50, "milliseconds to sleep", 0, 86'400'000)},
                [](const nlohmann::json& p) -> kernel_fn {
                  const auto ms = std::chrono::milliseconds(p["ms"].get<std::int64_t>());
                  return [ms](item& it, job_context& ctx) {
                    const auto until = std::chrono::steady_clock::now() + ms;
                    while (true) {
                      ctx.throw_if_stop_requested();
                      const auto now = std::chrono::steady_clock::now();
                      if (now >= until) break;
                      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(until - now, std::chrono::milliseconds(10)));
                    }
                    it.value = it.input;
                  };
                }});
  r.add_kernel({"spin",
                "a fixed amount of deterministic CPU work; value = input",
                {P("iterations", param_type::integer, 1'000'000, "xorshift rounds per item", 0, 1.0e13)},
                [](const nlohmann::json& p) -> kernel_fn {
                  const auto n = p["iterations"].get<std::uint64_t>();
                  return [n](item& it, job_context&) {
                    volatile std::uint64_t sink = spin_work(n, it.id);
                    (void)sink;
                    it.value = it.input;
                  };
                }});
  param_info ids_param = P("ids", param_type::string_list, nlohmann::json::array(), "item ids that always fail");
  ids_param.check = check_item_ids;
  r.add_kernel({"fail",
                "fault injection: fails chosen attempts; value = input",
                {P("probability", param_type::number, 0.0, "chance that an item fails", 0, 1),
                 ids_param,
                 P("fail_attempts", param_type::integer, 0, "fail only the first K attempts (0: every attempt)", 0, 1000),
                 P("seed", param_type::integer, 0, "seed for probability", 0, 9.0e15)},
                [](const nlohmann::json& p) -> kernel_fn {
                  const double prob = p["probability"].get<double>();
                  std::vector<std::uint64_t> ids;
                  for (const auto& v : p["ids"]) {
                    const auto id = item_id(v);
                    if (!id) detail::throw_error(errc::invalid_argument, "fail: ids: " + detail::dump_escaped(v));
                    ids.push_back(*id);
                  }
                  const auto k = p["fail_attempts"].get<std::uint32_t>();
                  const auto seed = p["seed"].get<std::uint64_t>();
                  return [prob, ids, k, seed](item& it, job_context& ctx) {
                    const bool chosen = std::find(ids.begin(), ids.end(), it.id) != ids.end() ||
                                        static_cast<double>(mix(seed, it.id) >> 11) * 0x1.0p-53 < prob;
                    if (chosen && (k == 0 || ctx.attempt() <= k)) {
                      throw std::runtime_error("injected failure: item " + std::to_string(it.id) + " attempt " +
                                               std::to_string(ctx.attempt()));
                    }
                    it.value = it.input;
                  };
                }});

  param_info format = P("format", param_type::string, "{value}", "placeholders {id} {worker} {input} {value}");
  format.check = check_print_format;
  r.add_sink({"print",
              "prints one line per item",
              {format},
              [](const nlohmann::json& p, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<print_sink>(p["format"].get<std::string>(), *env.out);
              },
              false});
  r.add_sink({"count", "prints how many items succeeded", {},
              [](const nlohmann::json&, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<count_sink>(*env.out);
              },
              false});
  r.add_sink({"sum", "prints the sum of the item values (numbers)", {},
              [](const nlohmann::json&, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<sum_sink>(*env.out);
              },
              false});

  // Data processing (src/graph/kernels/).
  detail::register_fs_sources(r);
  detail::register_hash_kernels(r);
  detail::register_zstd_kernels(r);
  detail::register_wordcount(r);
  detail::register_exec_kernel(r);
  detail::register_io_sinks(r);
}

template <class Map, class Info>
void add_unique(Map& m, Info info, const char* what) {
  if (info.name.empty()) detail::throw_error(errc::invalid_argument, std::string("registry: ") + what + " name is empty");
  if (!info.make) detail::throw_error(errc::invalid_argument, std::string("registry: ") + what + " \"" + info.name + "\" has no factory");
  const std::string name = info.name;
  if (!m.emplace(name, std::move(info)).second) {
    detail::throw_error(errc::invalid_argument, std::string("registry: ") + what + " \"" + name + "\" is already registered");
  }
}

template <class Map>
const typename Map::mapped_type* find_in(const Map& m, const std::string& name) {
  auto it = m.find(name);
  return it == m.end() ? nullptr : &it->second;
}

}  // namespace

namespace detail {

void check_exec_argv(const nlohmann::json& argv, const nlohmann::json& params, const problem_fn& problem) {
  if (argv.empty() || (argv[0].is_string() && argv[0].get_ref<const std::string&>().empty())) {
    problem("", "must name a command: a non-empty list whose first element is not empty, got " + dump_escaped(argv));
  } else if (const auto shell = params.find("shell");
             shell != params.end() && shell->is_boolean() && shell->get<bool>() && argv.size() != 1) {
    // (find, not params.value("shell", false): GCC 12 then warns of a null dereference inside nlohmann)
    problem("", "with shell: true, must be one string (the script; the input is \"$1\"), got " +
                    std::to_string(argv.size()) + " elements");
  }
}

}  // namespace detail

registry& registry::global() {
  static registry* r = [] {
    auto* reg = new registry();  // never destroyed: usable during static destruction
    register_builtins(*reg);
    return reg;
  }();
  return *r;
}

void registry::add_source(source_info info) { add_unique(sources_, std::move(info), "source"); }
void registry::add_kernel(kernel_info info) { add_unique(kernels_, std::move(info), "kernel"); }
void registry::add_sink(sink_info info) { add_unique(sinks_, std::move(info), "sink"); }
const source_info* registry::find_source(const std::string& name) const { return find_in(sources_, name); }
const kernel_info* registry::find_kernel(const std::string& name) const { return find_in(kernels_, name); }
const sink_info* registry::find_sink(const std::string& name) const { return find_in(sinks_, name); }

}  // namespace flowpool
