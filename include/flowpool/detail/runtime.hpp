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
///
/// oneTBB also fixes a hard worker limit when its thread pool is created (at the
/// first arena of the process): max(256, 4 x cores, the control then active).
/// From construction until `confirm()` the lease holds the control at 4097 at
/// least (the most workers one pool may have, plus one), so a pool's arena that
/// creates the thread pool leaves room for any later pool. `confirm()` then lowers
/// the control to the sum of the live leases and checks that oneTBB really allows
/// it (`global_control::active_value`, which reflects both the hard limit and any
/// smaller control of the caller's).
class FLOWPOOL_API thread_lease {
 public:
  /// Adds `threads` workers to the process-wide budget, plus `spare` workers
  /// that the control allows for when it can but `confirm()` does not require.
  explicit thread_lease(int threads, int spare = 0);
  /// Gives the workers back; never throws.
  ~thread_lease();
  thread_lease(const thread_lease&) = delete;
  thread_lease& operator=(const thread_lease&) = delete;

  /// Call once the pool's arena is initialized. Lowers the control to what the
  /// live leases need, then throws flowpool::error (errc::invalid_argument) when
  /// oneTBB cannot run that many workers at once in this process.
  void confirm();

  /// The spare workers this lease asked for.
  [[nodiscard]] int spare() const noexcept { return spare_; }

  /// How many leases (pools) are live in the process right now.
  [[nodiscard]] static int live() noexcept;

 private:
  int threads_;
  int spare_;
  bool confirmed_ = false;
};

/// The engine whose job or aggregator body runs on this thread, or null.
/// Set by `body_scope`; read to detect calls that a pool's own jobs must not
/// make (wait()), and whether a caller is inside the pool's arena.
[[nodiscard]] FLOWPOOL_API const void* running_engine() noexcept;

/// The task_arena of the engine whose body runs on this thread, or null: a body
/// of one stage of a graph run can put tasks for another stage directly when both
/// share one arena.
[[nodiscard]] FLOWPOOL_API const void* running_arena() noexcept;

/// Marks the calling thread as running a job or the aggregator of `engine`
/// for the scope's lifetime; nests (restores the previous mark). The first
/// `thread_lease` of the process installs an exit handler: `std::exit()` called
/// inside a scope flushes the C and C++ standard streams and ends the process
/// with its status at once (`_exit`), since oneTBB's own exit handlers crash
/// when they run on one of its worker threads.
class FLOWPOOL_API body_scope {
 public:
  /// Marks this thread as running a body of `engine`, inside `arena`.
  body_scope(const void* engine, const void* arena) noexcept;
  /// Restores the previous mark.
  ~body_scope();
  body_scope(const body_scope&) = delete;
  body_scope& operator=(const body_scope&) = delete;

 private:
  const void* prev_;
  const void* prev_arena_;
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
