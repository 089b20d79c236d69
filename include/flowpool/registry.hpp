// flowpool/registry.hpp - sources, kernels and sinks that graph specs refer to by name.
#pragma once

/// @file
/// The registry of sources, kernels and sinks that graph specs name, and the
/// interfaces to implement your own (`source`, `sink`, `kernel_fn`). See
/// docs/guide.md, "Extending the registry", and examples/custom_kernel.cpp.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowpool/export.hpp"
#include "flowpool/job_context.hpp"

namespace flowpool {

/// One unit of data flowing through a graph: produced by a source, transformed by
/// each stage's kernel, consumed by the sink.
struct item {
  std::uint64_t id = 0;  ///< 1-based position in the source: stable across runs (joblog, resume)
  std::string input;     ///< what the source produced (a number, a line, a path, ...)
  std::string value;     ///< what the kernels produced so far
  int worker = 0;        ///< the worker (1..N) of the last stage that ran it
};

/// The type of a parameter, for validation and for `flowpool kernels`.
enum class param_type : std::uint8_t { integer, number, string, boolean, duration, string_list };

/// Describes one parameter of a source, kernel or sink.
struct param_info {
  std::string name;                      ///< the key in the spec's `params` object
  param_type type = param_type::string;  ///< checked by validate_spec
  nlohmann::json default_value;  ///< null: required
  std::string help;                      ///< one line for `flowpool kernels`
  double min = 0;              ///< integers and numbers: smallest allowed value
  double max = 9.0e15;         ///< integers and numbers: largest allowed value
  std::vector<std::string> choices;  ///< strings: the allowed values (empty: any)
  /// Rules that the type cannot express, checked by validate_spec (so `flowpool validate`
  /// finds them) once every parameter has passed its type check: called with this
  /// parameter's value and the complete parameters (defaults filled in), it reports each
  /// problem through `problem(where, message)`, where `where` is a path below the parameter
  /// ("" for the value itself, "[2]" for an element of a list). Empty: no extra rules.
  /// It must not throw; the `make` function may then rely on what it checked.
  ///
  /// @code
  ///   p.check = [](const nlohmann::json& v, const nlohmann::json&, const auto& problem) {
  ///     if (v.get<std::string>().empty()) problem("", "must not be empty");
  ///   };
  /// @endcode
  std::function<void(const nlohmann::json& value, const nlohmann::json& params,
                     const std::function<void(const std::string& where, const std::string& message)>& problem)>
      check;
};

/// A kernel transforms an item in place; it may throw to fail the attempt
/// (`flowpool::permanent_error` to forbid retries). It runs on up to N threads at
/// once, so it must be thread-safe; a long kernel should poll
/// `job_context::stop_requested()`.
using kernel_fn = std::function<void(item&, job_context&)>;

/// A source produces items one at a time, in a stable order, on one thread
/// (`next()` is never called concurrently). Ids must be 1, 2, 3, ... in order:
/// the joblog and `--resume` rely on them.
///
/// @code
///   class countdown final : public flowpool::source {
///    public:
///     std::optional<flowpool::item> next() override {
///       if (n_ == 0) return std::nullopt;
///       flowpool::item it;
///       it.id = ++id_;
///       it.input = std::to_string(n_--);
///       return it;
///     }
///    private:
///     int n_ = 3;
///     std::uint64_t id_ = 0;
///   };
/// @endcode
class FLOWPOOL_API source {
 public:
  /// Sources are destroyed after the run, on the thread that ran it.
  virtual ~source() = default;
  /// The next item, or nullopt at the end. May throw flowpool::error (errc::io).
  virtual std::optional<item> next() = 0;
  /// How many items there will be, if known (for the progress bar).
  [[nodiscard]] virtual std::optional<std::uint64_t> size_hint() const { return std::nullopt; }
  /// How many items the runner may read ahead before handing them to the first
  /// stage, so that it takes the stage's queue lock once per run of items instead of
  /// once per item. 1 (the default): each item is handed on as soon as next()
  /// returns it. Only a source whose next() never waits on outside input (a pipe, a
  /// terminal, a socket) may return more: items read ahead wait while next() runs.
  /// The runner reads ahead by 64 items at most.
  [[nodiscard]] virtual std::size_t read_ahead() const { return 1; }
};

/// A sink is the graph's serial aggregator: `consume` never runs concurrently
/// with itself. A sink is either a stream (it writes each item's output as it
/// consumes it; `save_state()` returns null) or keeps state (an aggregate, or a
/// file being written; `save_state()` returns non-null JSON). The two are resumed
/// differently: docs/cli.md, "Interrupts and resume", says how.
class FLOWPOOL_API sink {
 public:
  /// Sinks are destroyed after the run, on the thread that ran it.
  virtual ~sink() = default;
  /// Folds one successful item. May throw: the item is then recorded as failed
  /// (`error_kind::aggregator`) and the run stops. A sink that writes must check
  /// the write (and flush) and throw, naming the cause, when it fails: the joblog
  /// records the item as succeeded as soon as this returns.
  virtual void consume(item&& it) = 0;
  /// Called once after the run when it succeeded: print totals, commit files.
  /// May throw: the run then fails with the sink as its cause.
  virtual void finish() {}
  /// The state, saved in the joblog's `FILE.state` for --resume (at checkpoints
  /// during the run and when a run ends without succeeding). Null (the default): a
  /// stream sink, which has no state. The JSON must be valid UTF-8: encode byte
  /// strings (hex, as the built-ins do).
  [[nodiscard]] virtual nlohmann::json save_state() const { return nullptr; }
  /// Restores a state saved by save_state() (--resume), before any consume().
  /// May throw flowpool::error when the state does not fit this sink.
  virtual void load_state(const nlohmann::json& /*state*/) {}
  /// Makes what consume() wrote so far durable (fsync), before a checkpoint of
  /// save_state() records it. Default: nothing.
  virtual void sync() {}
  /// Called instead of finish() when the run ended failed (an item failed, or a
  /// failure policy stopped the run). The default calls finish(); the built-in
  /// aggregates print nothing (a partial aggregate is not the answer) and the
  /// `file` sink commits nothing.
  virtual void finish_failed() { finish(); }
  /// Whether an item this sink has consumed (in this run, or in the run whose
  /// state load_state() restored) is missing from its state and must run again
  /// on --resume: a `file` sink keeps only the contiguous prefix of its output.
  /// Default: false.
  [[nodiscard]] virtual bool needs_rerun(std::uint64_t /*id*/) const { return false; }
};

/// Where sinks write their output (the CLI passes stdout).
struct sink_env {
  std::ostream* out = nullptr;  ///< never null when a sink is made
  bool ordered = false;  ///< whether results arrive in source order
  /// The files the source reads (its `path` parameter; `/dev/stdin` for "-"), so
  /// that a sink that writes a file can refuse to overwrite its own input.
  std::vector<std::string> inputs;
};

/// A registered source type.
struct source_info {
  std::string name;                ///< what a spec's `source.type` names
  std::string help;                ///< one line for `flowpool kernels`
  std::vector<param_info> params;  ///< its parameters, validated and defaulted before `make` runs
  /// Builds the source from its complete parameters; may throw flowpool::error (errc::io).
  std::function<std::unique_ptr<source>(const nlohmann::json& params)> make;
};

/// A registered kernel.
struct kernel_info {
  std::string name;                ///< what a stage's `kernel` names
  std::string help;                ///< one line for `flowpool kernels`
  std::vector<param_info> params;  ///< its parameters, validated and defaulted before `make` runs
  /// Builds the kernel from its complete parameters, once per stage and run.
  std::function<kernel_fn(const nlohmann::json& params)> make;
};

/// A registered sink type.
struct sink_info {
  std::string name;                ///< what a spec's `sink.type` names
  std::string help;                ///< one line for `flowpool kernels`
  std::vector<param_info> params;  ///< its parameters, validated and defaulted before `make` runs
  /// Builds the sink from its complete parameters; may throw flowpool::error (errc::io).
  std::function<std::unique_ptr<sink>(const nlohmann::json& params, const sink_env& env)> make;
  bool forces_order = false;  ///< the sink needs results in source order
};

/// The table of sources, kernels and sinks that specs can name. `registry::global()`
/// holds the built-ins; add your own before running a spec.
///
/// Thread-safety: register everything before running graphs; lookups are then
/// safe from any thread. Registration itself is not synchronized.
///
/// @code
///   flowpool::registry::global().add_kernel({
///       "upper", "upper-cases the input", {},
///       [](const nlohmann::json&) {
///         return [](flowpool::item& it, flowpool::job_context&) {
///           it.value = it.input;
///           for (auto& c : it.value) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
///         };
///       }});
/// @endcode
class FLOWPOOL_API registry {
 public:
  /// The process-wide registry, with every built-in registered (on first use,
  /// thread-safely).
  static registry& global();

  /// Registers a source type. @throws flowpool::error (invalid_argument)
  /// if the name is empty, already taken, or `make` is empty. Not synchronized.
  void add_source(source_info info);
  /// Registers a kernel (see the class example). @throws flowpool::error (invalid_argument)
  /// if the name is empty, already taken, or `make` is empty. Not synchronized.
  void add_kernel(kernel_info info);
  /// Registers a sink type. @throws flowpool::error (invalid_argument)
  /// if the name is empty, already taken, or `make` is empty. Not synchronized.
  void add_sink(sink_info info);

  /// Looks a source type up; nullptr if unknown. Never throws.
  [[nodiscard]] const source_info* find_source(const std::string& name) const;
  /// Looks a kernel up; nullptr if unknown. Never throws.
  ///
  /// @code
  ///   if (flowpool::registry::global().find_kernel("sha256") == nullptr) { /* older flowpool */ }
  /// @endcode
  [[nodiscard]] const kernel_info* find_kernel(const std::string& name) const;
  /// Looks a sink type up; nullptr if unknown. Never throws.
  [[nodiscard]] const sink_info* find_sink(const std::string& name) const;

  /// Every registered source type, by name (what `flowpool kernels` lists).
  [[nodiscard]] const std::map<std::string, source_info>& sources() const { return sources_; }
  /// Every registered kernel, by name.
  [[nodiscard]] const std::map<std::string, kernel_info>& kernels() const { return kernels_; }
  /// Every registered sink type, by name.
  [[nodiscard]] const std::map<std::string, sink_info>& sinks() const { return sinks_; }

 private:
  std::map<std::string, source_info> sources_;
  std::map<std::string, kernel_info> kernels_;
  std::map<std::string, sink_info> sinks_;
};

/// A short name for a parameter type ("integer", "duration", ...). Thread-safe.
FLOWPOOL_API std::string to_string(param_type t);

}  // namespace flowpool
