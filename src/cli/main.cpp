// flowpool: run, validate and draw graph specs. Exit codes are documented in docs/cli.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "../util/paths.hpp"
#include "../util/quote.hpp"
#include "../util/text.hpp"
#include "flowpool/flowpool.hpp"
#include "flowpool/graph.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimedOut = 3;

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  // First signal: ask the run to stop (it cancels, kills and reaps exec children, writes
  // its report, exits 128+sig). A second one exits at once, except SIGPIPE: every later
  // write to the closed pipe raises it again, and the graceful stop must still happen.
  int expected = 0;
  if (g_signal.compare_exchange_strong(expected, sig)) return;
  if (sig != SIGPIPE) _exit(128 + sig);
}

// SIGHUP (terminal closed), SIGQUIT and SIGPIPE (`flowpool run ... | head`) stop the run the
// same graceful way as SIGINT and SIGTERM: exec children run in their own process groups, so
// without this they would outlive a flowpool killed by one of these signals.
void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaction(sig, &sa, nullptr);
}

// A file name as printed at the start of a message: as is when it is plain printable
// text, else in bash's $'...' quoting (detail::quote_name), so that a crafted name can
// neither forge a line nor send terminal escapes.
std::string message_name(const std::string& file) {
  std::string q = flowpool::detail::quote_name(file);
  return q.rfind("$'", 0) == 0 ? q : file;
}

// Prints every problem of a spec error as "flowpool: <file>: <path>: <message>".
int report_spec_error(const std::string& file, const flowpool::spec_error& e) {
  for (const auto& p : e.problems()) {
    if (p.path == file) {
      std::cerr << "flowpool: " << message_name(file) << ": " << p.message << '\n';
    } else {
      std::cerr << "flowpool: " << message_name(file) << ": " << p.to_string() << '\n';
    }
  }
  return kExitUsage;
}

struct run_args {
  std::string graph;
  int workers = 0;
  long long capacity = 0;
  std::vector<std::string> sets;
  bool keep_order = false;
  int retries = -1;
  std::string timeout, job_timeout, halt, report, joblog;
  bool resume = false;
  bool progress = false, no_progress = false, quiet = false;
  std::string metrics, metrics_interval = "1s", trace, timeline;
  std::size_t trace_limit = 1'000'000;
};

// Loads, overrides and validates a spec; throws spec_error.
flowpool::graph_spec load(const run_args& a) {
  nlohmann::json doc = flowpool::read_spec_file(a.graph);
  for (const auto& s : a.sets) flowpool::apply_override(doc, s);
  if (a.workers > 0 && doc.is_object() && doc.contains("stages") && doc["stages"].is_array()) {
    for (auto& st : doc["stages"]) {
      if (st.is_object()) st["workers"] = a.workers;
    }
  }
  if (doc.is_object()) {
    auto& o = doc["options"];
    if (o.is_null()) o = nlohmann::json::object();
    if (o.is_object()) {
      if (a.capacity > 0) o["capacity"] = a.capacity;
      if (a.keep_order) o["ordered"] = true;
      if (a.retries >= 0) o["retries"] = a.retries;
      if (!a.timeout.empty()) o["timeout"] = a.timeout;
      if (!a.job_timeout.empty()) o["job_timeout"] = a.job_timeout;
      if (!a.halt.empty()) {
        if (a.halt == "now") {
          o["on_error"] = "fail_fast";
        } else if (a.halt.rfind("soon,fail=", 0) == 0) {
          const std::string k = a.halt.substr(10);
          if (k.empty() || k.find_first_not_of("0123456789") != std::string::npos || k.size() > 9 || k == "0") {
            throw flowpool::spec_error({{"--halt", "expected now or soon,fail=K with K >= 1, got \"" + a.halt + "\""}});
          }
          o["max_failures"] = std::stoull(k);
        } else {
          throw flowpool::spec_error({{"--halt", "expected now or soon,fail=K, got \"" + a.halt + "\""}});
        }
      }
    }
  }
  return flowpool::validate_spec(doc);
}

std::string fmt_duration(double seconds) {
  std::ostringstream s;
  if (seconds < 60) {
    s << static_cast<int>(seconds) << "s";
  } else {
    s << static_cast<int>(seconds / 60) << "m" << static_cast<int>(seconds) % 60 << "s";
  }
  return s.str();
}

// ---- output files: --report, --metrics, --trace, --timeline ----------------------------------
//
// A regular file (or a new one) is written through PATH.tmp and a rename, so a reader never
// sees half of it; the .tmp is removed when anything fails. An existing non-regular file
// (/dev/null, a FIFO) or any path under /dev or /proc (/dev/stdout, even when stdout is a
// file) is written directly: renaming over it would replace it.

bool is_special_file(const std::string& path) {
  return flowpool::detail::is_stream_path(path);
}

bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Writes `text` to `path`. Empty on success, else the reason ("Permission denied").
std::string write_output(const std::string& path, std::string_view text) {
  if (is_special_file(path)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return std::strerror(errno);
    const bool ok = write_all(fd, text);
    const int err = errno;
    if (::close(fd) != 0 && ok) return std::strerror(errno);
    return ok ? "" : std::strerror(err);
  }
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
  if (fd < 0) return std::strerror(errno);
  int err = 0;
  if (!write_all(fd, text)) err = errno != 0 ? errno : EIO;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return std::strerror(err);
  }
  return "";
}

// Whether `path` can be written by write_output, checked before the run starts (as --joblog
// is): a directory is refused, and the temporary file is created and removed again. Empty
// when it can, else the reason.
std::string output_problem(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return std::strerror(EISDIR);
    if (S_ISFIFO(st.st_mode)) return "";  // opening it would wait for a reader
    if (!S_ISREG(st.st_mode)) {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
      if (fd < 0) return std::strerror(errno);
      ::close(fd);
      return "";
    }
  }
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return "";
  }
  if (errno != EEXIST) return std::strerror(errno);
  fd = ::open(tmp.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);  // left by a killed run: it is reused
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "";
}

void print_output_error(const char* flag, const std::string& path, const std::string& reason) {
  std::cerr << "flowpool: " << flag << ": cannot write " << flowpool::detail::quote_name(path) << ": " << reason
            << '\n';
}

// Writes --report, --metrics (final), --trace and --timeline. False (after a message naming
// the file and the reason) when one cannot be written. `metrics_reported`: a failing
// periodic --metrics write was already reported, so the final one is not reported again.
bool write_outputs(const run_args& a, const flowpool::graph_report& r, bool metrics_reported) {
  bool ok = true;
  if (!a.report.empty()) {
    const std::string why = write_output(a.report, flowpool::detail::dump_escaped(r.to_json(), 2) + '\n');
    if (!why.empty()) {
      print_output_error("--report", a.report, why);
      ok = false;
    }
  }
  if (!a.metrics.empty()) {
    const std::string why = write_output(a.metrics, flowpool::to_prometheus(r.graph, r.metrics));
    if (!why.empty()) {
      if (!metrics_reported) print_output_error("--metrics", a.metrics, why);
      ok = false;
    }
  }
  std::uint64_t dropped = 0, kept = 0;
  for (const auto& t : r.traces) {
    dropped += t.trace.dropped;
    kept += t.trace.attempts.size() + 2 * t.trace.samples.size();  // a sample is two counter events
  }
  auto write = [&](const std::string& path, const char* flag, auto&& fn) {
    if (path.empty()) return;
    std::ostringstream text;
    fn(text);
    const std::string why = write_output(path, text.str());
    if (!why.empty()) {
      print_output_error(flag, path, why);
      ok = false;
    }
  };
  write(a.trace, "--trace", [&](std::ostream& o) { flowpool::write_chrome_trace(o, r.traces, r.start_ns); });
  write(a.timeline, "--timeline",
        [&](std::ostream& o) { flowpool::write_timeline_svg(o, r.graph, r.traces, r.start_ns); });
  if (dropped > 0 && (!a.trace.empty() || !a.timeline.empty())) {
    std::cerr << "flowpool: trace: kept " << kept << " events, dropped " << dropped
              << " over --trace-limit " << a.trace_limit << '\n';
  }
  return ok;
}

// Every output file is checked before the run, so that a run never does all its work and
// then loses the result. Prints why a path is unusable.
bool outputs_writable(const run_args& a) {
  for (const auto& [flag, path] : {std::pair{"--report", &a.report}, std::pair{"--metrics", &a.metrics},
                                   std::pair{"--trace", &a.trace}, std::pair{"--timeline", &a.timeline}}) {
    if (path->empty()) continue;
    if (const std::string why = output_problem(*path); !why.empty()) {
      print_output_error(flag, *path, why);
      return false;
    }
  }
  return true;
}

// The progress line on stderr: a bar and an ETA when the total is known, a count otherwise.
// On a terminal it redraws one line; elsewhere it prints a line per update.
auto progress_printer(std::chrono::steady_clock::time_point start, bool tty) {
  return [start, tty](std::uint64_t done, std::optional<std::uint64_t> total, std::uint64_t failed, int busy,
                      int workers) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::ostringstream line;
    if (total && *total > 0) {
      const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(*total));
      const int filled = static_cast<int>(frac * 30);
      line << '[' << std::string(static_cast<std::size_t>(filled), '#')
           << std::string(static_cast<std::size_t>(30 - filled), '.') << "] " << done << '/' << *total;
      if (rate > 0 && done < *total) line << " ETA " << fmt_duration(static_cast<double>(*total - done) / rate);
    } else {
      line << done << " done";
    }
    line << "  " << static_cast<long long>(rate) << "/s  busy " << busy << '/' << workers << "  failed " << failed;
    std::cerr << (tty ? "\r\033[K" : "") << line.str() << (tty ? "" : "\n") << std::flush;
  };
}

// The summary line (unless -q), what stopped the run, and the first 10 errors.
void print_summary(const run_args& a, const flowpool::graph_report& r) {
  if (!a.quiet) {
    // A run that failed with no failed item failed for another reason: say which.
    std::string why;
    if (r.status == "failed" && r.failed == 0 && r.cause) {
      const auto& m = r.cause->message;
      why = m.rfind("sink: ", 0) == 0     ? " (the sink could not commit its output)"
            : m.rfind("source: ", 0) == 0 ? " (the source failed)"
            : m.rfind("--joblog", 0) == 0 ? " (the joblog or resume state could not be written)"
                                          : "";
    }
    std::cerr << "flowpool: " << r.graph << ": " << r.status << why << ": " << r.succeeded << " succeeded, " << r.failed
              << " failed, " << r.cancelled << " cancelled";
    if (r.skipped > 0) std::cerr << ", " << r.skipped << " skipped (resume)";
    if (r.retried > 0) std::cerr << ", " << r.retried << " retries";
    std::cerr << " in " << static_cast<long long>(r.wall_ms) << " ms\n";
  } else if (r.status != "ok" && !r.cause && r.errors.empty()) {
    // -q drops the summary, never the reason a run did not succeed.
    std::cerr << "flowpool: " << r.graph << ": " << r.status << '\n';
  }
  if (r.cause) std::cerr << "flowpool: stopped by: item " << r.cause->job << ": " << r.cause->message << '\n';
  std::size_t shown = 0;
  for (const auto& e : r.errors) {
    if (++shown > 10) {
      std::cerr << "flowpool: ... and " << r.errors.size() - 10 << " more errors (see --report)\n";
      break;
    }
    std::cerr << "flowpool: item " << e.job << " failed after " << e.attempts << " attempt"
              << (e.attempts == 1 ? "" : "s") << " (" << flowpool::to_string(e.kind) << "): " << e.message << '\n';
  }
}

// The exit code of a finished run (docs/cli.md, "Exit codes").
int exit_code(const flowpool::graph_report& r, bool outputs_ok) {
  int code = kExitOk;
  if (r.status == "interrupted") {
    code = 128 + (r.signal != 0 ? r.signal : SIGINT);
  } else if (r.status == "timed_out") {
    code = kExitTimedOut;
  } else if (r.status == "failed") {
    code = kExitFailed;
  }
  // An output that could not be written fails an otherwise successful run.
  if (!outputs_ok && code == kExitOk) code = kExitFailed;
  return code;
}

int cmd_run(const run_args& a) {
  flowpool::graph_spec spec;
  try {
    spec = load(a);
  } catch (const flowpool::spec_error& e) {
    return report_spec_error(a.graph, e);
  }
  if (!outputs_writable(a)) return kExitUsage;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool show_progress = !a.quiet && !a.no_progress && (a.progress || tty);
  install_signal_handlers();
  flowpool::run_controls ctl;
  ctl.out = &std::cout;
  ctl.joblog = a.joblog;
  ctl.resume = a.resume;
  ctl.interrupt = &g_signal;
  if (show_progress) ctl.on_progress = progress_printer(std::chrono::steady_clock::now(), tty);
  // Observability: metrics for --report/--metrics, a trace for --trace/--timeline.
  ctl.metrics = !a.report.empty() || !a.metrics.empty() || !a.trace.empty() || !a.timeline.empty();
  ctl.trace_limit = a.trace.empty() && a.timeline.empty() ? 0 : a.trace_limit;
  std::atomic<bool> metrics_reported{false};
  if (!a.metrics.empty()) {
    const auto every = flowpool::parse_duration(a.metrics_interval);
    if (!every || every->count() <= 0) {
      std::cerr << "flowpool: --metrics-interval: expected a duration such as 500ms or 10s, got \""
                << a.metrics_interval << "\"\n";
      return kExitUsage;
    }
    ctl.metrics_interval = std::max(std::chrono::milliseconds(1),
                                    std::chrono::duration_cast<std::chrono::milliseconds>(*every));
    // A failing periodic write is reported once, not every interval.
    ctl.on_metrics = [&a, &spec, &metrics_reported](const std::vector<flowpool::stage_metrics>& live) {
      try {
        const std::string why = write_output(a.metrics, flowpool::to_prometheus(spec.name, live));
        if (!why.empty() && !metrics_reported.exchange(true)) print_output_error("--metrics", a.metrics, why);
      } catch (const std::exception& e) {  // on_metrics must not throw
        if (!metrics_reported.exchange(true)) print_output_error("--metrics", a.metrics, e.what());
      }
    };
  }
  flowpool::graph_report r;
  try {
    r = flowpool::run_graph(spec, ctl);
  } catch (const flowpool::error& e) {
    if (show_progress && tty) std::cerr << "\r\033[K";
    std::cerr << "flowpool: " << e.what() << '\n';
    return e.code() == flowpool::errc::io || e.code() == flowpool::errc::invalid_argument ? kExitUsage : kExitFailed;
  }
  std::cout.flush();
  if (show_progress && tty) std::cerr << "\r\033[K";
  const bool outputs_ok = write_outputs(a, r, metrics_reported.load());
  print_summary(a, r);
  return exit_code(r, outputs_ok);
}

void print_params(const std::vector<flowpool::param_info>& params) {
  for (const auto& p : params) {
    std::cout << "      " << p.name << " (" << flowpool::to_string(p.type) << ", "
              << (p.default_value.is_null() ? std::string("required") : "default " + p.default_value.dump())
              << "): " << p.help << '\n';
  }
}

int cmd_kernels() {
  const auto& reg = flowpool::registry::global();
  std::cout << "sources:\n";
  for (const auto& [name, s] : reg.sources()) {
    std::cout << "  " << name << " - " << s.help << '\n';
    print_params(s.params);
  }
  std::cout << "kernels:\n";
  for (const auto& [name, k] : reg.kernels()) {
    std::cout << "  " << name << " - " << k.help << '\n';
    print_params(k.params);
  }
  std::cout << "sinks:\n";
  for (const auto& [name, s] : reg.sinks()) {
    std::cout << "  " << name << " - " << s.help << (s.forces_order ? " (forces ordered mode)" : "") << '\n';
    print_params(s.params);
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flowpool: run declarative worker-pool graphs on oneTBB", "flowpool"};
  app.set_version_flag("--version", std::string("flowpool ") + flowpool::version);
  app.require_subcommand(1);

  run_args ra;
  auto* run = app.add_subcommand("run", "run a graph spec");
  run->add_option("graph", ra.graph, "graph spec (JSON)")->required();
  run->add_option("-j,--workers", ra.workers, "workers for every stage")->check(CLI::Range(1, 4096));
  run->add_option("--capacity", ra.capacity, "queue capacity between stages")->check(CLI::Range(1LL, 100000000LL));
  run->add_option("--set", ra.sets, "set a spec field: PATH=VALUE (repeatable)");
  run->add_flag("--keep-order", ra.keep_order, "deliver results in source order");
  run->add_option("--retries", ra.retries, "retries per item")->check(CLI::Range(0, 1000));
  run->add_option("--timeout", ra.timeout, "whole-run deadline, e.g. 30s");
  run->add_option("--job-timeout", ra.job_timeout, "per-attempt deadline, e.g. 250ms");
  run->add_option("--halt", ra.halt, "now | soon,fail=K");
  run->add_option("--report", ra.report, "write the JSON report here");
  run->add_option("--joblog", ra.joblog, "write one line per finished item here (a new joblog unless --resume)");
  run->add_flag("--resume", ra.resume, "continue the run the joblog records (see docs/cli.md)");
  auto* prog = run->add_flag("--progress", ra.progress, "show a progress bar (default: on a TTY)");
  run->add_flag("--no-progress", ra.no_progress, "never show a progress bar")->excludes(prog);
  run->add_flag("-q,--quiet", ra.quiet, "no progress bar, no summary");
  run->add_option("--metrics", ra.metrics, "write Prometheus text metrics here (at the end and every --metrics-interval)");
  run->add_option("--metrics-interval", ra.metrics_interval, "how often --metrics is rewritten during the run (default 1s)");
  run->add_option("--trace", ra.trace, "write a Chrome Trace Event JSON file (Perfetto, chrome://tracing)");
  run->add_option("--trace-limit", ra.trace_limit, "most trace events kept (default 1000000)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 32));
  run->add_option("--timeline", ra.timeline, "write an SVG Gantt chart of the run");

  std::string vgraph;
  std::vector<std::string> vsets;
  auto* validate = app.add_subcommand("validate", "check a graph spec and print what would run");
  validate->add_option("graph", vgraph, "graph spec (JSON)")->required();
  validate->add_option("--set", vsets, "set a spec field: PATH=VALUE (repeatable)");

  std::string dgraph, dreport;
  auto* dot = app.add_subcommand("dot", "write Graphviz DOT of a graph spec");
  dot->add_option("graph", dgraph, "graph spec (JSON)")->required();
  dot->add_option("--report", dreport, "annotate stages with a run's JSON report");

  app.add_subcommand("kernels", "list every source, kernel and sink with its parameters");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "flowpool: " << e.what() << "\n(run 'flowpool --help' for usage)\n";
    return kExitUsage;
  }
  try {
    if (run->parsed()) return cmd_run(ra);
    if (validate->parsed()) {
      run_args a;
      a.graph = vgraph;
      a.sets = vsets;
      try {
        std::cout << flowpool::describe(load(a));
      } catch (const flowpool::spec_error& e) {
        return report_spec_error(vgraph, e);
      }
      return kExitOk;
    }
    if (dot->parsed()) {
      run_args a;
      a.graph = dgraph;
      flowpool::graph_spec spec;
      try {
        spec = load(a);
      } catch (const flowpool::spec_error& e) {
        return report_spec_error(dgraph, e);
      }
      nlohmann::json rep;
      if (!dreport.empty()) {
        try {
          rep = flowpool::read_spec_file(dreport);
        } catch (const flowpool::spec_error& e) {
          return report_spec_error(dreport, e);
        }
      }
      try {
        std::cout << flowpool::to_dot(spec, dreport.empty() ? nullptr : &rep);
      } catch (const flowpool::error& e) {
        std::cerr << "flowpool: " << message_name(dreport) << ": " << e.what() << '\n';
        return kExitUsage;
      }
      return kExitOk;
    }
    return cmd_kernels();
  } catch (const std::exception& e) {
    std::cerr << "flowpool: " << e.what() << '\n';
    return kExitUsage;
  }
}
