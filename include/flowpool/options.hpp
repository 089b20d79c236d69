// flowpool/options.hpp - how a pool is configured.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <thread>

#include "flowpool/report.hpp"

namespace flowpool {

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
  /// while C jobs wait; `try_submit()` returns false instead.
  std::ptrdiff_t capacity = 1024;

  /// Deliver results to the aggregator in submission order. Jobs that fail or
  /// are cancelled leave a gap that is skipped.
  bool ordered = false;

  /// Ordered mode only: how far ahead of the oldest undelivered job workers may
  /// run. Bounds the reorder buffer. 0 means "same as capacity".
  std::size_t reorder_window = 0;

  /// Run deadline, measured from construction: when it passes the run is
  /// cancelled and the report's status is `timed_out`. 0 means no deadline.
  std::chrono::nanoseconds timeout{0};

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
