// flowpool/report.hpp - what a run reports: terminal states, errors, counts, live snapshots.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowpool/export.hpp"

namespace flowpool {

/// The one terminal state every submitted job ends in.
enum class job_status : std::uint8_t {
  succeeded,  ///< the worker returned and the aggregator consumed the result
  failed,     ///< the worker (or the aggregator, for its result) threw, retries exhausted
  cancelled,  ///< the run was cancelled before the job could finish
};

/// Why a job failed (or was cancelled), as recorded in `job_error::kind`.
enum class error_kind : std::uint8_t {
  exception,   ///< the worker threw (std or non-std exception)
  timeout,     ///< the attempt ran past its job deadline
  cancelled,   ///< the job stopped because the run was cancelled
  aggregator,  ///< the aggregator threw while consuming this job's result
};

/// How the run as a whole ended.
enum class run_status : std::uint8_t {
  ok,         ///< every submitted job succeeded
  failed,     ///< at least one job failed, or a failure policy stopped the run
  cancelled,  ///< cancel() was called
  timed_out,  ///< the run deadline passed
};

/// The stable lower-case name of a job status: "succeeded", "failed" or "cancelled".
/// Thread-safe; never throws. Example: `to_string(job_status::failed) == "failed"`.
FLOWPOOL_API std::string_view to_string(job_status s) noexcept;
/// The stable lower-case name of an error kind: "exception", "timeout", "aggregator", ...
/// Thread-safe; never throws. Example: `to_string(error_kind::timeout) == "timeout"`.
FLOWPOOL_API std::string_view to_string(error_kind k) noexcept;
/// The stable lower-case name of a run status: "ok", "failed", "cancelled" or "timed_out".
/// Thread-safe; never throws. Example: `to_string(r.status)` for a log line.
FLOWPOOL_API std::string_view to_string(run_status s) noexcept;

/// One failed (or failure-cancelled) job, as listed in `report::errors`.
struct job_error {
  std::uint64_t job = 0;       ///< the job's id (its 1-based submission sequence number)
  std::uint32_t attempts = 0;  ///< attempts made, including the last one
  error_kind kind = error_kind::exception;  ///< what ended the job: an exception, a timeout, ...
  std::string message;  ///< `what()` of the last exception, or a description
};

/// The terminal record of one job, handed to `pool_options::on_job_done`.
struct job_record {
  std::uint64_t job = 0;  ///< the job's id
  job_status status = job_status::succeeded;  ///< its one terminal state
  std::uint32_t attempts = 0;  ///< 0 when the job was cancelled before it ever started
  int worker = 0;              ///< 1..N of the worker that ran the last attempt; 0 if none
  std::chrono::nanoseconds duration{0};  ///< run time of the last attempt (with metrics on, the same interval its `run_time` histogram sample records)
};

/// The result of `pool::wait()`. Invariant (checked by the tests):
/// `submitted == succeeded + failed + cancelled`.
struct [[nodiscard]] report {
  run_status status = run_status::ok;  ///< how the run as a whole ended
  std::uint64_t submitted = 0;         ///< jobs accepted by submit()/try_submit()/submit_for()
  std::uint64_t succeeded = 0;         ///< jobs whose result reached the aggregator
  std::uint64_t failed = 0;            ///< jobs that failed for good (after their retries)
  std::uint64_t cancelled = 0;         ///< jobs ended by cancel, a deadline or a failure policy
  std::uint64_t retried = 0;  ///< attempts beyond the first, over all jobs
  std::chrono::nanoseconds wall{0};  ///< from pool construction to the end of wait()
  std::size_t max_queue_depth = 0;   ///< never exceeds the configured capacity
  std::vector<job_error> errors;     ///< every failure, in the order the aggregator saw them
  /// The failure that stopped the run (fail-fast, max-failures or an aggregator
  /// exception), if one did. Also listed in `errors`.
  std::optional<job_error> cause;
};

/// A cheap, lock-free view of a running pool (see `pool::snapshot()`).
/// Values are read with relaxed atomics: each is exact, but they are not one
/// consistent cut (completed may already include a job that busy_workers counts).
struct snapshot {
  std::size_t queue_depth = 0;      ///< jobs accepted and waiting for a worker
  std::size_t max_queue_depth = 0;  ///< the highest queue_depth so far
  int busy_workers = 0;             ///< workers executing a job right now
  std::uint64_t submitted = 0;      ///< jobs accepted so far
  /// Jobs in a terminal state so far: those the aggregator has folded (published
  /// once per micro-batch), plus, from a cancel on, the jobs it took from the queue.
  std::uint64_t completed = 0;
};

}  // namespace flowpool
