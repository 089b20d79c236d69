// flowpool/options.hpp - how a pool is configured.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string_view>
#include <thread>

#include "flowpool/report.hpp"

namespace flowpool {

/// What a retry predicate is told about a failed attempt.
struct failure_info {
  error_kind kind = error_kind::exception;  ///< `exception` or `timeout` (cancellations are never retried)
  std::string_view message;                 ///< the exception's `what()`, or a description
  std::exception_ptr exception;             ///< the exception itself (null for a timeout)
  std::uint32_t attempt = 1;                ///< the attempt that just failed (1-based)
  std::uint64_t job = 0;                    ///< the job's id
};

/// How failed attempts are retried: up to `max_attempts` tries in all, with
/// exponential backoff `min(cap, base * 2^(attempt-1))`, reduced by up to
/// `jitter` (a fraction in [0, 1]) using a deterministic generator seeded by
/// `seed` and the job id, so runs are reproducible.
///
/// A job waiting out its backoff holds no worker slot: it re-enters the pool
/// through a timer while the N workers run other jobs.
///
/// Contract: a retried job runs again from scratch. Its work must be
/// idempotent, or use `job_context::id()` as an idempotency key.
/// `flowpool::permanent_error` and cancellation are never retried.
///
/// @code
///   flowpool::retry_policy r;
///   r.max_attempts = 4;                                   // 1 try + 3 retries
///   r.backoff_base = std::chrono::milliseconds(20);
///   r.retryable = [](const flowpool::failure_info& f) {   // only retry timeouts and I/O errors
///     return f.kind == flowpool::error_kind::timeout || f.message.find("EAGAIN") != std::string_view::npos;
///   };
///   opts.retry = r;
/// @endcode
struct retry_policy {
  std::uint32_t max_attempts = 1;  ///< total tries, >= 1; 1 means "never retry"
  std::chrono::nanoseconds backoff_base = std::chrono::milliseconds(10);  ///< delay before the 2nd attempt
  /// The longest delay. A delay too long to represent from now (e.g.
  /// `nanoseconds::max()`) waits until the run is cancelled.
  std::chrono::nanoseconds backoff_cap = std::chrono::seconds(1);
  double jitter = 0.0;     ///< in [0, 1]: each delay is reduced by a random fraction up to this
  std::uint64_t seed = 0;  ///< jitter seed; the same seed gives the same delays
  /// Decides whether a failed attempt is retried; empty means "retry every
  /// exception and timeout". Called on the worker's thread; must be thread-safe.
  std::function<bool(const failure_info&)> retryable;
};

/// What the run does when a job fails for good (after its retries).
///
/// @code
///   opts.on_error = flowpool::error_policy::fail_fast;   // like errgroup
///   auto r = pool.wait();
///   if (r.cause) std::cerr << "stopped by job " << r.cause->job << ": " << r.cause->message << '\n';
/// @endcode
enum class error_policy : std::uint8_t {
  collect,    ///< keep going; report every failure (the default)
  fail_fast,  ///< cancel the run at the first final failure, which the report names as `cause`
};

/// The number of hardware threads (at least 1): the default worker count.
[[nodiscard]] inline int hardware_workers() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

/// Configuration of a `flowpool::pool`. Plain data: copy it, tweak it, pass it.
/// Every field is validated by the pool constructor, which throws
/// `flowpool::error(errc::invalid_argument)` naming the bad field.
///
/// @code
///   flowpool::pool_options opts;
///   opts.workers = 3;      // N: at most 3 jobs run at once, even if they block
///   opts.capacity = 10;    // C: submit() blocks while 10 jobs are waiting
///   opts.ordered = true;   // the aggregator sees results in submission order
/// @endcode
struct pool_options {
  /// N, the most jobs that run at once. Must be >= 1. N holds even when jobs
  /// block (sleep, I/O): the pool sizes its own TBB arena for N.
  int workers = hardware_workers();

  /// C, the most jobs waiting for a worker. Must be >= 1. `submit()` blocks
  /// while C jobs wait; `try_submit()` returns false instead. Jobs waiting out
  /// a retry backoff are not in this queue: at most max(C, N * max_batch) of
  /// them wait at once, and past that the workers run only retries that are due.
  std::ptrdiff_t capacity = 1024;

  /// Deliver results to the aggregator in submission order. Jobs that fail or
  /// are cancelled leave a gap that is skipped. Once the run is cancelled,
  /// delivery stops at the first job that did not succeed, and every result
  /// behind it ends cancelled: what was delivered is a prefix of the submissions.
  bool ordered = false;

  /// Ordered mode only: how far ahead of the oldest undelivered job workers may
  /// run. Bounds the reorder buffer, which is allocated as it fills (it never
  /// exceeds twice the span of jobs in flight). 0 means "same as capacity".
  std::size_t reorder_window = 0;

  /// Run deadline, measured from construction: when it passes the run is
  /// cancelled and the report's status is `timed_out`. 0 means no deadline, and
  /// so does a deadline too far away to represent (e.g. `nanoseconds::max()`).
  std::chrono::nanoseconds timeout{0};

  /// Retry policy for every job (a submit may override it). Default: no retries.
  retry_policy retry;

  /// What a final failure does to the run. `fail_fast` is `max_failures = 1`.
  error_policy on_error = error_policy::collect;

  /// Cancel the run once this many jobs have failed for good, like GNU
  /// parallel's `--halt soon,fail=K`. 0 means no limit.
  /// @code
  ///   opts.max_failures = 10;   // give up after ten broken inputs
  /// @endcode
  std::uint64_t max_failures = 0;

  /// Deadline of each attempt, from its start. `job_context::stop_requested()`
  /// turns true when it passes, and an attempt that runs past it is a `timeout`
  /// failure (retryable). In-process timeouts are cooperative: C++ cannot
  /// pre-empt a running function. 0 means none, and so does a value too large to
  /// represent (e.g. `nanoseconds::max()`).
  /// @code
  ///   opts.job_timeout = std::chrono::milliseconds(250);
  ///   // in the worker:
  ///   while (more_work()) { ctx.throw_if_stop_requested(); step(); }   // a timeout failure once 250 ms pass
  /// @endcode
  std::chrono::nanoseconds job_timeout{0};

  /// Upper bound of the adaptive micro-batch: when the queue is deep a worker
  /// takes up to this many jobs under one lock; when it is shallow it takes one.
  /// Must be >= 1. Semantics (ids, errors, cancel) are per job either way.
  std::size_t max_batch = 64;

  /// Called once per job with its terminal record, serially (never concurrently
  /// with itself or with the aggregator). Jobs cancelled while still queued are
  /// reported from `wait()`. Keep it cheap: it runs on the aggregator's thread.
  std::function<void(const job_record&)> on_job_done;
};

}  // namespace flowpool
