// flowpool/graph.hpp - declarative graph specs: parse, validate, run.
#pragma once

/// @file
/// Graph specs from C++: read a JSON spec (`read_spec_file`), override values
/// (`apply_override`), validate it against a `registry` (`validate_spec`), run it
/// (`run_graph`) and draw it (`to_dot`). The `flowpool` CLI is a thin shell over
/// these functions; docs/graph-spec.md describes the spec format.
///
/// Thread-safety: the functions here are reentrant; they share only the
/// `registry` they are given, which must not be modified while they run.
///
/// @code
///   auto spec = flowpool::validate_spec(flowpool::read_spec_file("graphs/seed.json"));
///   flowpool::run_controls controls;
///   controls.out = &std::cout;
///   flowpool::graph_report r = flowpool::run_graph(spec, controls);
///   return r.status == "ok" ? 0 : 1;
/// @endcode

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
  std::string path;     ///< where: a JSON path such as `stages[1].workers` (empty: the document itself)
  std::string message;  ///< what is wrong, e.g. `must be a positive integer, got "two"`
  /// The problem as one line: "stages[1].workers: must be a positive integer, got \"two\"".
  [[nodiscard]] std::string to_string() const { return path.empty() ? message : path + ": " + message; }
};

/// Thrown when a spec cannot be read or fails validation; `problems()` lists
/// every problem found, one per line in `what()`. Its code is `errc::invalid_spec`.
///
/// Thread-safety: immutable after construction.
///
/// @code
///   try {
///     auto spec = flowpool::validate_spec(doc);
///   } catch (const flowpool::spec_error& e) {
///     for (const auto& p : e.problems()) std::cerr << p.to_string() << '\n';
///   }
/// @endcode
class FLOWPOOL_API spec_error : public error {
 public:
  /// Builds the error from the problems found (at least one); `what()` lists them, one per line.
  explicit spec_error(std::vector<spec_problem> problems);
  /// Every problem found, in document order.
  [[nodiscard]] const std::vector<spec_problem>& problems() const noexcept { return problems_; }

 private:
  std::vector<spec_problem> problems_;
};

/// One stage of a validated spec.
struct stage_spec {
  std::string name;    ///< the stage's name, unique in the spec
  std::string kernel;  ///< the registered kernel it runs
  int workers = 1;     ///< N for this stage's pool
  nlohmann::json params;  ///< complete: defaults filled in
  std::optional<std::uint32_t> retries;  ///< per-stage override
  std::optional<std::chrono::nanoseconds> job_timeout;  ///< per-stage override
};

/// A validated graph spec (see docs/graph-spec.md).
struct graph_spec {
  std::string name;                 ///< the spec's name (its file name when it has none)
  std::string source_type;          ///< the registered source that produces the items
  nlohmann::json source_params;  ///< complete: defaults filled in
  std::vector<stage_spec> stages;   ///< one pool per stage, chained in this order
  std::string sink_type;            ///< the registered sink: the last stage's serial aggregator
  nlohmann::json sink_params;  ///< complete: defaults filled in
  std::ptrdiff_t capacity = 64;     ///< C of every stage's queue
  bool ordered = false;             ///< deliver items to the sink in source order
  std::uint32_t retries = 0;        ///< retries per item and stage (a stage may override it)
  std::chrono::nanoseconds backoff{std::chrono::milliseconds(100)};  ///< base of the exponential backoff
  error_policy on_error = error_policy::collect;  ///< what a final failure does to the run
  std::uint64_t max_failures = 0;   ///< cancel after this many failed items; 0: no limit
  std::chrono::nanoseconds timeout{0};      ///< run deadline; 0: none
  std::chrono::nanoseconds job_timeout{0};  ///< per attempt; 0: none
};

/// Reads a spec file and parses it as JSON (validate it with `validate_spec`). At most
/// 4 MiB + 1 byte is read, whatever the file is (a pipe such as /dev/stdin too), and the
/// JSON may nest at most 64 levels.
/// @throws spec_error naming the file and every problem
/// (missing file, a directory, unreadable, larger than 4 MiB, empty, not JSON, too deeply nested).
/// Thread-safe.
///
/// @code
///   nlohmann::json doc = flowpool::read_spec_file("graphs/seed.json");
/// @endcode
FLOWPOOL_API nlohmann::json read_spec_file(const std::filesystem::path& path);

/// Applies `PATH=VALUE` overrides (`stages[0].workers=4`, `source.count=100`).
/// VALUE is parsed as JSON when it is valid JSON, else taken as a string.
/// Missing objects on the path are created. This is the CLI's `--set`. The path's levels
/// plus the value's nesting may not exceed the spec's limit of 64 levels.
/// @throws spec_error for a malformed assignment, or one nested too deeply.
/// Thread-safety: modifies `doc` only.
///
/// @code
///   flowpool::apply_override(doc, "source.count=1000");
///   flowpool::apply_override(doc, "stages[0].workers=4");
/// @endcode
FLOWPOOL_API void apply_override(nlohmann::json& doc, const std::string& assignment);

/// Validates a parsed spec against the registry and fills in defaults.
/// Unknown keys, types and names are reported with a did-you-mean suggestion; each
/// parameter's own rules (`param_info::check`) run once the types are right, and stage
/// names must be unique.
/// @throws spec_error listing every problem, each with its JSON path.
/// Thread-safe, as long as `reg` is not modified meanwhile.
///
/// @code
///   flowpool::graph_spec spec = flowpool::validate_spec(doc);   // against registry::global()
/// @endcode
FLOWPOOL_API graph_spec validate_spec(const nlohmann::json& doc, const registry& reg = registry::global());

/// Parses a duration such as "250ms", "30s", "2m", "1.5h". nullopt if malformed
/// (never throws for bad input). Thread-safe.
///
/// @code
///   auto d = flowpool::parse_duration("250ms");   // std::chrono::milliseconds(250)
/// @endcode
FLOWPOOL_API std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text);

/// How `run_graph` reports and controls a run. Plain data; every field is optional.
///
/// @code
///   std::atomic<int> stop{0};          // a signal handler stores SIGINT here
///   flowpool::run_controls c;
///   c.out = &std::cout;
///   c.joblog = "jobs.log";             // rerun with c.resume = true to skip what succeeded
///   c.interrupt = &stop;
/// @endcode
struct run_controls {
  std::ostream* out = nullptr;                  ///< where sinks write (stdout in the CLI)
  /// One line per finished item; empty: none. A run without `resume` starts it
  /// afresh (a regular file is truncated, and its `FILE.state` removed).
  std::string joblog;
  /// Continue the run the joblog (and its `FILE.state`) recorded: skip the items
  /// whose result is already in the output (see docs/cli.md, "Interrupts and resume").
  bool resume = false;
  /// With a joblog that is a regular file and a sink with state: about how often
  /// the sink's state is checkpointed (fsynced) into `FILE.state` during the run
  /// (less often when a checkpoint takes more than a tenth of this).
  std::chrono::milliseconds checkpoint_interval{1000};
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
  std::string name;                 ///< the stage's name
  int workers = 0;                  ///< its N
  std::size_t max_queue_depth = 0;  ///< the deepest its queue got (never above C)
  std::uint64_t succeeded = 0;      ///< items this stage passed on
  std::uint64_t failed = 0;         ///< items that failed for good in this stage
  std::uint64_t cancelled = 0;      ///< items cancelled in this stage
};

/// The result of `run_graph`. `submitted == succeeded + failed + cancelled`,
/// counted in source items.
struct FLOWPOOL_API graph_report {
  std::string graph;   ///< the spec's name
  std::string status;  ///< ok, failed, cancelled, timed_out or interrupted
  int signal = 0;      ///< the signal that interrupted the run, if any
  std::uint64_t submitted = 0;  ///< items the source produced and the first stage accepted
  std::uint64_t succeeded = 0;  ///< items the sink consumed
  std::uint64_t failed = 0;     ///< items that failed for good in some stage
  std::uint64_t cancelled = 0;  ///< items cancelled (run cancelled, deadline, interrupt, fail-fast)
  std::uint64_t retried = 0;    ///< re-attempts over all stages
  std::uint64_t skipped = 0;    ///< items skipped by `--resume` (the joblog says they succeeded)
  double wall_ms = 0;           ///< the run's wall-clock time in milliseconds
  std::vector<stage_report> stages;  ///< one per stage, in order
  std::vector<job_error> errors;  ///< `job` is the item id (its 1-based source position)
  std::optional<job_error> cause;  ///< the failure that stopped the run, if one did
  std::vector<stage_metrics> metrics;  ///< per stage, with `run_controls::metrics` (final figures)
  std::vector<stage_trace> traces;     ///< per stage, with `run_controls::trace_limit > 0`
  std::int64_t start_ns = 0;           ///< steady_clock time (ns) the run started: the traces' origin
  /// The report as JSON, with the keys documented in docs/cli.md.
  [[nodiscard]] nlohmann::json to_json() const;
};

/// Runs a validated spec to its end and returns the report. Stages are pools
/// chained through bounded queues; the sink is the last stage's serial aggregator.
/// Item failures do not throw: they are in the report.
/// @throws flowpool::error when the source or sink cannot start (errc::io).
/// Thread-safe: several graphs may run at once (each stage has its own arena),
/// as long as `reg` is not modified meanwhile.
///
/// @code
///   std::ostringstream out;
///   flowpool::run_controls controls;
///   controls.out = &out;   // the sink writes here
///   flowpool::graph_report r = flowpool::run_graph(spec, controls);
///   std::cout << r.to_json().dump(2) << '\n';
/// @endcode
FLOWPOOL_API graph_report run_graph(const graph_spec& spec, const run_controls& controls,
                                    const registry& reg = registry::global());

/// Graphviz DOT for a spec; with a report (`graph_report::to_json()`), stages are
/// annotated with its figures. Throws `flowpool::error` (`errc::invalid_argument`)
/// when the report is not of this graph (another graph name, or other stage names
/// or order); otherwise never throws for a validated spec. Thread-safe.
///
/// @code
///   std::cout << flowpool::to_dot(spec);   // | dot -Tsvg > graph.svg
/// @endcode
FLOWPOOL_API std::string to_dot(const graph_spec& spec, const nlohmann::json* report = nullptr);

/// One line per stage describing what would run (for `flowpool validate`).
/// Thread-safe.
///
/// @code
///   std::cout << flowpool::describe(spec);
/// @endcode
FLOWPOOL_API std::string describe(const graph_spec& spec);

}  // namespace flowpool
