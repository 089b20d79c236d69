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

/// One background thread that calls `on_wake` whenever the earliest armed time
/// passes. `on_wake` returns the next time it wants to be woken (or
/// `time_point::max()`). Serves the run deadline and the retry backoff queue of
/// one pool; it is started lazily, so pools without either have no such thread.
class FLOWPOOL_API wakeup_timer {
 public:
  using clock = std::chrono::steady_clock;

  wakeup_timer() = default;
  ~wakeup_timer();
  wakeup_timer(const wakeup_timer&) = delete;
  wakeup_timer& operator=(const wakeup_timer&) = delete;

  /// Sets the callback and starts the thread if it is not running yet.
  /// Call only with no other call to this timer in progress.
  void start(std::function<clock::time_point()> on_wake);
  [[nodiscard]] bool started() const noexcept { return thread_.joinable(); }
  /// Makes sure the callback runs at or soon after `when`. Thread-safe.
  void arm(clock::time_point when);
  /// Stops and joins the thread. Idempotent; never throws. Not from on_wake.
  void stop() noexcept;

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  clock::time_point next_ = clock::time_point::max();
  bool changed_ = false;
  bool stopping_ = false;
  std::function<clock::time_point()> on_wake_;
  std::thread thread_;
};

}  // namespace flowpool::detail
