// flowpool/graph.hpp - declarative graph specs: parse, validate, run.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowpool/error.hpp"
#include "flowpool/export.hpp"
#include "flowpool/metrics.hpp"
#include "flowpool/options.hpp"
#include "flowpool/registry.hpp"
#include "flowpool/report.hpp"

namespace flowpool {

/// One validation problem: where (a JSON path such as `stages[1].workers`) and what.
struct spec_problem {
  std::string path;
  std::string message;
  /// "stages[1].workers: must be a positive integer, got \"two\""
  [[nodiscard]] std::string to_string() const { return path.empty() ? message : path + ": " + message; }
};

/// Thrown when a spec cannot be read or fails validation; `problems()` lists
/// every problem found, one per line in `what()`.
class FLOWPOOL_API spec_error : public error {
 public:
  explicit spec_error(std::vector<spec_problem> problems);
  [[nodiscard]] const std::vector<spec_problem>& problems() const noexcept { return problems_; }

 private:
  std::vector<spec_problem> problems_;
};

/// One stage of a validated spec.
struct stage_spec {
  std::string name;
  std::string kernel;
  int workers = 1;
  nlohmann::json params;  ///< complete: defaults filled in
  std::optional<std::uint32_t> retries;  ///< per-stage override
  std::optional<std::chrono::nanoseconds> job_timeout;  ///< per-stage override
};

/// A validated graph spec (see docs/graph-spec.md).
struct graph_spec {
  std::string name;
  std::string source_type;
  nlohmann::json source_params;  ///< complete: defaults filled in
  std::vector<stage_spec> stages;
  std::string sink_type;
  nlohmann::json sink_params;  ///< complete: defaults filled in
  std::ptrdiff_t capacity = 64;
  bool ordered = false;
  std::uint32_t retries = 0;
  std::chrono::nanoseconds backoff{std::chrono::milliseconds(100)};
  error_policy on_error = error_policy::collect;
  std::uint64_t max_failures = 0;
  std::chrono::nanoseconds timeout{0};      ///< run deadline; 0: none
  std::chrono::nanoseconds job_timeout{0};  ///< per attempt; 0: none
};

/// Reads a spec file. @throws spec_error naming the file and every problem
/// (missing file, a directory, unreadable, empty, not JSON, too deeply nested, invalid).
FLOWPOOL_API nlohmann::json read_spec_file(const std::filesystem::path& path);

/// Applies `PATH=VALUE` overrides (`stages[0].workers=4`, `source.count=100`).
/// VALUE is parsed as JSON when it is valid JSON, else taken as a string.
/// @throws spec_error for a malformed assignment.
FLOWPOOL_API void apply_override(nlohmann::json& doc, const std::string& assignment);

/// Validates a parsed spec against the registry and fills in defaults.
/// @throws spec_error listing every problem, each with its JSON path.
FLOWPOOL_API graph_spec validate_spec(const nlohmann::json& doc, const registry& reg = registry::global());

/// Parses a duration such as "250ms", "30s", "2m", "1.5h". nullopt if malformed.
FLOWPOOL_API std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text);

/// How `run_graph` reports and controls a run.
struct run_controls {
  std::ostream* out = nullptr;                  ///< where sinks write (stdout in the CLI)
  std::string joblog;                           ///< append one line per finished item; empty: none
  bool resume = false;                          ///< skip items the joblog says succeeded
  const std::atomic<int>* interrupt = nullptr;  ///< set to a signal number to interrupt the run
  /// Called every ~100 ms during the run with a progress line's figures.
  std::function<void(std::uint64_t done, std::optional<std::uint64_t> total, std::uint64_t failed, int busy,
                     int workers)>
      on_progress;
  /// Collect each stage's metrics (see flowpool/metrics.hpp) into `graph_report::metrics`.
  bool metrics = false;
  /// Record a trace of at most this many events in all (split evenly over the stages)
  /// into `graph_report::traces`; 0: none.
  std::size_t trace_limit = 0;
  /// Called every `metrics_interval` during the run (on the watcher thread) with every
  /// stage's live metrics; needs `metrics`. Must not throw.
  std::function<void(const std::vector<stage_metrics>&)> on_metrics;
  /// How often `on_metrics` is called.
  std::chrono::milliseconds metrics_interval{1000};
};

/// Per-stage figures in a graph report.
struct stage_report {
  std::string name;
  int workers = 0;
  std::size_t max_queue_depth = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
};

/// The result of `run_graph`. `submitted == succeeded + failed + cancelled`,
/// counted in source items.
struct graph_report {
  std::string graph;
  std::string status;  ///< ok, failed, cancelled, timed_out or interrupted
  int signal = 0;      ///< the signal that interrupted the run, if any
  std::uint64_t submitted = 0, succeeded = 0, failed = 0, cancelled = 0, retried = 0, skipped = 0;
  double wall_ms = 0;
  std::vector<stage_report> stages;
  std::vector<job_error> errors;  ///< `job` is the item id (its 1-based source position)
  std::optional<job_error> cause;
  std::vector<stage_metrics> metrics;  ///< per stage, with `run_controls::metrics` (final figures)
  std::vector<stage_trace> traces;     ///< per stage, with `run_controls::trace_limit > 0`
  std::int64_t start_ns = 0;           ///< steady_clock time (ns) the run started: the traces' origin
  /// The report as JSON, with the keys documented in docs/cli.md.
  [[nodiscard]] nlohmann::json to_json() const;
};

/// Runs a validated spec. Stages are pools chained through bounded queues; the
/// sink is the last stage's serial aggregator.
/// @throws flowpool::error when the source or sink cannot start (errc::io).
FLOWPOOL_API graph_report run_graph(const graph_spec& spec, const run_controls& controls,
                                    const registry& reg = registry::global());

/// Graphviz DOT for a spec; with a report, stages are annotated with its figures.
FLOWPOOL_API std::string to_dot(const graph_spec& spec, const nlohmann::json* report = nullptr);

/// One line per stage describing what would run (for `flowpool validate`).
FLOWPOOL_API std::string describe(const graph_spec& spec);

}  // namespace flowpool
