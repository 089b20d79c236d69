// flowpool/detail/runtime.hpp - non-template helpers the pool template needs.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "flowpool/export.hpp"

namespace flowpool::detail {

/// Reserves TBB worker threads for one pool for as long as it lives.
///
/// oneTBB's thread pool defaults to hardware_concurrency - 1 workers, so an
/// arena of N slots cannot run N blocking jobs at once on a small machine. The
/// lease raises `tbb::global_control::max_allowed_parallelism` to cover the sum
/// of all live leases (one process-wide control, because TBB applies the
/// *smallest* value among live controls), and never lowers it below TBB's default.
class FLOWPOOL_API thread_lease {
 public:
  explicit thread_lease(int threads);
  ~thread_lease();
  thread_lease(const thread_lease&) = delete;
  thread_lease& operator=(const thread_lease&) = delete;

 private:
  int threads_;
};

/// A single background thread that calls `fire` once at `when`, unless
/// `stop()` comes first. Used for the run deadline.
class FLOWPOOL_API deadline_timer {
 public:
  deadline_timer() = default;
  ~deadline_timer();
  deadline_timer(const deadline_timer&) = delete;
  deadline_timer& operator=(const deadline_timer&) = delete;

  /// Arms the timer. Call at most once.
  void start(std::chrono::steady_clock::time_point when, std::function<void()> fire);
  /// Disarms the timer and joins its thread. Idempotent; never throws.
  void stop() noexcept;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace flowpool::detail
