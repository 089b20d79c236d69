// flowpool: run, validate and draw graph specs. Exit codes are documented in docs/cli.md.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "flowpool/flowpool.hpp"
#include "flowpool/graph.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimedOut = 3;

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  // First signal: ask the run to stop (it cancels, writes its report, exits 128+sig).
  // Second one: exit at once.
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig)) _exit(128 + sig);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Prints every problem of a spec error as "flowpool: <file>: <path>: <message>".
int report_spec_error(const std::string& file, const flowpool::spec_error& e) {
  for (const auto& p : e.problems()) {
    const std::string where = p.path == file ? "" : file + ": ";
    std::cerr << "flowpool: " << where << p.to_string() << '\n';
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

int cmd_run(const run_args& a) {
  flowpool::graph_spec spec;
  try {
    spec = load(a);
  } catch (const flowpool::spec_error& e) {
    return report_spec_error(a.graph, e);
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool show_progress = !a.quiet && !a.no_progress && (a.progress || tty);
  install_signal_handlers();
  flowpool::run_controls ctl;
  ctl.out = &std::cout;
  ctl.joblog = a.joblog;
  ctl.resume = a.resume;
  ctl.interrupt = &g_signal;
  const auto start = std::chrono::steady_clock::now();
  if (show_progress) {
    ctl.on_progress = [start, tty](std::uint64_t done, std::optional<std::uint64_t> total, std::uint64_t failed,
                                   int busy, int workers) {
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
  if (!a.report.empty()) {
    const std::string tmp = a.report + ".tmp";
    std::ofstream f(tmp, std::ios::trunc);
    f << r.to_json().dump(2) << '\n';
    f.close();
    if (!f || std::rename(tmp.c_str(), a.report.c_str()) != 0) {
      std::cerr << "flowpool: --report: cannot write \"" << a.report << "\"\n";
    }
  }
  if (!a.quiet) {
    std::cerr << "flowpool: " << r.graph << ": " << r.status << ": " << r.succeeded << " succeeded, " << r.failed
              << " failed, " << r.cancelled << " cancelled";
    if (r.skipped > 0) std::cerr << ", " << r.skipped << " skipped (resume)";
    if (r.retried > 0) std::cerr << ", " << r.retried << " retries";
    std::cerr << " in " << static_cast<long long>(r.wall_ms) << " ms\n";
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
  if (r.status == "interrupted") return 128 + (r.signal != 0 ? r.signal : SIGINT);
  if (r.status == "timed_out") return kExitTimedOut;
  if (r.status == "failed") return kExitFailed;
  return kExitOk;
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
  run->add_option("--joblog", ra.joblog, "append one line per finished item here");
  run->add_flag("--resume", ra.resume, "skip items the joblog says succeeded");
  auto* prog = run->add_flag("--progress", ra.progress, "show a progress bar (default: on a TTY)");
  run->add_flag("--no-progress", ra.no_progress, "never show a progress bar")->excludes(prog);
  run->add_flag("-q,--quiet", ra.quiet, "no progress bar, no summary");

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
      std::cout << flowpool::to_dot(spec, dreport.empty() ? nullptr : &rep);
      return kExitOk;
    }
    return cmd_kernels();
  } catch (const std::exception& e) {
    std::cerr << "flowpool: " << e.what() << '\n';
    return kExitUsage;
  }
}
