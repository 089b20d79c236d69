// flowpool/pool.hpp - the bounded worker pool: N workers, a bounded queue, one serial aggregator.
#pragma once

#include <chrono>
#include <concepts>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

#include "flowpool/detail/engine.hpp"
#include "flowpool/error.hpp"
#include "flowpool/job_context.hpp"
#include "flowpool/metrics.hpp"
#include "flowpool/options.hpp"
#include "flowpool/report.hpp"

namespace flowpool {

/// A callable that turns a `const Job&` into a `Result`, given the job's context.
template <class F, class Job, class Result>
concept worker_for = std::invocable<F&, const Job&, job_context&> &&
    std::convertible_to<std::invoke_result_t<F&, const Job&, job_context&>, Result>;

/// A callable that consumes one `Result&&`: the serial fold of a run.
template <class F, class Result>
concept aggregator_for = std::invocable<F&, Result&&>;

/// A bounded worker pool on a oneTBB flow graph: the Go worker-pool pattern.
///
/// Jobs are submitted into a bounded queue of capacity C. At most N workers
/// (a `function_node` with concurrency N, in a `task_arena` sized for N)
/// run them, and every result goes to one serial aggregator node that never runs
/// concurrently with itself, so it needs no lock. `cancel()` (or the run
/// deadline) cancels the run's `task_group_context`: jobs not started never
/// start and are counted as cancelled; running jobs see
/// `job_context::stop_requested()`.
///
/// Failures: a job's exception is caught and recorded with its id. With a
/// `retry_policy` the attempt is retried after an exponential backoff during
/// which it holds no worker slot; `error_policy::fail_fast` or `max_failures`
/// cancel the run at the first (or K-th) final failure and name it in
/// `report::cause`; `job_timeout` gives every attempt a cooperative deadline.
///
/// Lifecycle: construct, `submit()` from any number of threads, `close()`, then
/// `wait()` once for the `report`. A pool destroyed before `wait()` cancels its
/// run if input was still open (or lets queued jobs finish if `close()` was
/// called), then waits; it never leaks a thread, task or job.
///
/// Thread-safety: `submit`, `try_submit`, `submit_for`, `close`, `cancel`,
/// `snapshot` and `cancelled` may be called concurrently from any threads, and
/// from the pool's own jobs and aggregator. `wait` must be called once, not from
/// inside a job or the aggregator (there it throws instead of waiting for itself).
///
/// Workers: N means N concurrent jobs, even blocking ones, up to 4096 per pool.
/// oneTBB fixes its worker limit when its thread pool is created, at its first use
/// in the process; flowpool raises that limit while a pool's arena is created, so
/// build the first pool (or a `tbb::global_control(max_allowed_parallelism, ...)`)
/// before any other use of oneTBB. Where oneTBB cannot run the N workers of the
/// live pools at once (a smaller `global_control` is active, or oneTBB was used
/// first), the constructor throws instead of running fewer.
///
/// `std::exit()` inside a job or the aggregator ends the process with its status:
/// flowpool flushes the C and C++ standard streams and calls `_exit`, because
/// oneTBB's own exit handlers crash on one of its worker threads. Handlers
/// registered with `atexit` before the first pool was built, and destructors of
/// static objects built before it, do not run then. Return from the job (or
/// cancel the run) instead when they matter.
///
/// Not copyable or movable: workers and the aggregator hold its address, and
/// producers on other threads may be blocked inside it. Hold it in a
/// `std::unique_ptr` to move ownership.
///
/// @code
///   flowpool::pool<int, std::string> pool(
///       {.workers = 3, .capacity = 10},
///       [](const int& job, flowpool::job_context& ctx) {
///         return "job=" + std::to_string(job) + " worker-" + std::to_string(ctx.worker()) + " done";
///       },
///       [](std::string&& line) { std::puts(line.c_str()); });   // serial: no lock needed
///   for (int i = 1; i <= 8; ++i) pool.submit(i);
///   pool.close();
///   flowpool::report r = pool.wait();   // r.succeeded == 8
/// @endcode
template <class Job, class Result>
class pool {
  static_assert(std::is_move_constructible_v<Job>, "flowpool::pool: Job must be move-constructible");
  static_assert(std::is_move_constructible_v<Result>, "flowpool::pool: Result must be move-constructible");
  static_assert(!std::is_reference_v<Job> && !std::is_reference_v<Result>,
                "flowpool::pool: Job and Result must be object types, not references");

 public:
  using job_type = Job;        ///< the type of a submitted job
  using result_type = Result;  ///< the type a worker returns and the aggregator consumes

  /// Builds the graph and starts the run.
  ///
  /// @param options  N, C, ordering, deadline; validated here.
  /// @param worker   `Result(const Job&, job_context&)`; runs on up to N threads at once.
  /// @param aggregator `void(Result&&)`; runs serially, never concurrently with itself.
  /// @throws flowpool::error (errc::invalid_argument) when an option is out of range,
  ///         e.g. "pool: workers must be >= 1, got 0", or when oneTBB cannot run
  ///         the workers of the live pools at once in this process.
  template <class Worker, class Aggregator>
  pool(pool_options options, Worker worker, Aggregator aggregator)
      : engine_(std::make_unique<detail::engine<Job, Result>>(std::move(options), check_worker(std::move(worker)),
                                                              check_aggregator(std::move(aggregator)))) {}

  /// Builds the graph and starts the run, with metrics (and optionally a trace) on.
  ///
  /// @param options  N, C, ordering, deadline; validated here.
  /// @param worker   `Result(const Job&, job_context&)`; runs on up to N threads at once.
  /// @param aggregator `void(Result&&)`; runs serially, never concurrently with itself.
  /// @param metrics  what to collect: see `metrics_options`. With it default
  ///                 (everything off) this is the three-argument constructor.
  /// @throws flowpool::error (errc::invalid_argument) when an option is out of range,
  ///         e.g. "metrics_options: interval must be > 0 when on_snapshot is set, got 0 ms",
  ///         or when oneTBB cannot run the workers of the live pools at once.
  ///
  /// @code
  ///   flowpool::metrics_options m;
  ///   m.enabled = true;
  ///   flowpool::pool<int, int> p({.workers = 4}, work, agg, m);
  ///   ...
  ///   std::printf("saturation %.2f\n", p.metrics().saturation());
  /// @endcode
  template <class Worker, class Aggregator>
  pool(pool_options options, Worker worker, Aggregator aggregator, metrics_options metrics)
      : engine_(std::make_unique<detail::engine<Job, Result>>(std::move(options), check_worker(std::move(worker)),
                                                              check_aggregator(std::move(aggregator)),
                                                              std::move(metrics))) {}

  /// Cancels the run if input is still open (else lets queued jobs finish), then waits.
  /// Never throws.
  ~pool() = default;

  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;

  /// Submits a job, blocking while C jobs are waiting (backpressure).
  ///
  /// @returns true when the job was accepted (it will reach exactly one terminal
  ///          state); false when the run is cancelled, including while this call
  ///          was blocked: a blocked producer always wakes up on cancel.
  /// @throws flowpool::error (errc::closed) after `close()`.
  /// Thread-safe. Do not call the blocking form from inside a job: if the queue
  /// is full and every worker blocks in submit, nothing drains it (use try_submit).
  ///
  /// @code
  ///   if (!pool.submit(job)) return;   // run was cancelled
  /// @endcode
  bool submit(Job job) { return accepted(engine_->push(std::move(job), nullptr, engine_type::when_full::block)); }

  /// Like `submit(job)`, with a retry policy for this job only (it replaces the
  /// pool's `options.retry` for this job).
  /// @throws flowpool::error (errc::invalid_argument) if the policy is invalid,
  ///         (errc::closed) after close(). Thread-safe.
  ///
  /// @code
  ///   flowpool::retry_policy flaky;
  ///   flaky.max_attempts = 5;
  ///   pool.submit(download_job, flaky);
  /// @endcode
  bool submit(Job job, retry_policy policy) {
    return accepted(engine_->push(std::move(job), std::make_shared<const retry_policy>(std::move(policy)),
                                  engine_type::when_full::block));
  }

  /// Submits every job of `jobs`, in order, blocking while the queue is full (like
  /// submit()), and takes the queue's lock once per run of jobs that fits instead of
  /// once per job: for a producer that has several jobs at hand. Moves from each job
  /// it accepts. Returns how many it accepted: `jobs.size()`, or fewer once the run
  /// is cancelled (the jobs after that count are left as they were). Jobs get ids in
  /// order, as if submitted one by one. Thread-safe: a concurrent submit() may
  /// come between two runs of jobs, never inside one.
  /// @throws flowpool::error (errc::closed) after close(); std::bad_alloc when there
  ///         is no memory to queue a job: the jobs before it were accepted.
  ///
  /// @code
  ///   std::vector<int> jobs{1, 2, 3, 4};
  ///   pool.submit_batch(jobs);  // 4, unless the pool was cancelled meanwhile
  /// @endcode
  std::size_t submit_batch(std::span<Job> jobs) { return engine_->push_batch(jobs); }

  /// Submits without blocking. @returns false if the queue is full or the run
  /// is cancelled (`cancelled()` tells which). @throws flowpool::error after close().
  /// Thread-safe.
  ///
  /// @code
  ///   while (!pool.try_submit(job) && !pool.cancelled()) do_something_else();
  /// @endcode
  [[nodiscard]] bool try_submit(Job job) {
    return accepted(engine_->push(std::move(job), nullptr, engine_type::when_full::fail));
  }

  /// Submits, waiting at most `timeout` for room in the queue. A timeout too long
  /// to represent on the steady clock (e.g. `seconds::max()`) waits without limit.
  /// @returns false on timeout or cancellation. @throws flowpool::error after close().
  /// Thread-safe.
  ///
  /// @code
  ///   if (!pool.submit_for(job, std::chrono::milliseconds(100))) log("queue still full");
  /// @endcode
  template <class Rep, class Period>
  [[nodiscard]] bool submit_for(Job job, std::chrono::duration<Rep, Period> timeout) {
    // Saturated: a timeout too long to represent (seconds::max()) waits without limit.
    const auto until = detail::saturating_add<std::chrono::steady_clock>(std::chrono::steady_clock::now(), timeout);
    return accepted(engine_->push(std::move(job), nullptr, engine_type::when_full::until, until));
  }

  /// Ends the input: no more submits (they throw errc::closed); producers
  /// blocked in submit() throw too. Idempotent.
  /// @throws flowpool::error (errc::finished) after wait() returned. Thread-safe.
  void close() { engine_->close(); }

  /// Cancels the run through its task_group_context. Jobs not yet started never
  /// start (they are reported cancelled), running jobs see stop_requested(),
  /// blocked producers return false, and wait() returns promptly. Idempotent
  /// while the run is live. In ordered mode, delivery stops at the first job that
  /// did not succeed: every result behind it ends cancelled, even one that had
  /// finished, so the results delivered are a prefix of the submissions.
  /// @throws flowpool::error (errc::finished) after wait() returned. Thread-safe,
  /// callable from jobs, the aggregator, or any other thread.
  void cancel() { engine_->cancel(); }

  /// Blocks until input is closed (or the run cancelled) and every accepted job
  /// has reached a terminal state, then returns the report.
  /// @throws flowpool::error (errc::already_waited) on a second call;
  ///         (errc::invalid_argument) when called from inside one of the pool's own
  ///         jobs or its aggregator, which would wait for itself (that call does not
  ///         count as the one wait()).
  /// Call once, from outside the pool's own jobs.
  ///
  /// @code
  ///   pool.close();
  ///   auto r = pool.wait();
  ///   for (const auto& e : r.errors) std::cerr << "job " << e.job << ": " << e.message << '\n';
  /// @endcode
  [[nodiscard]] report wait() { return engine_->wait(); }

  /// True once the run is cancelled (by cancel(), the deadline, or a failure policy).
  /// Thread-safe, lock-free.
  [[nodiscard]] bool cancelled() const noexcept { return engine_->cancelled(); }

  /// Live counters: queue depth, busy workers, submitted, completed.
  /// Thread-safe and lock-free; cheap enough to poll from a progress thread.
  [[nodiscard]] flowpool::snapshot snapshot() const noexcept { return engine_->snap(); }

  /// The run's metrics: counters, queue depth, busy workers, busy time,
  /// saturation, throughput and the queue-wait and run-time histograms.
  /// During the run it is a live view; after `wait()` it is final.
  /// Without `metrics_options` only the counters `snapshot()` has, the terminal
  /// counts and `wall` are filled in; succeeded and failed only after `wait()`,
  /// cancelled only after it too, except the jobs a cancel took from the queue,
  /// which count from the cancel on.
  /// Thread-safe and lock-free: call it from any thread, at any time. It reads
  /// every worker's counters, so poll it at human rates (ms), not per job.
  ///
  /// @code
  ///   auto m = pool.metrics();
  ///   std::printf("%llu done, p99 %lld us\n", static_cast<unsigned long long>(m.succeeded),
  ///               static_cast<long long>(m.run_time.percentile(0.99).count() / 1000));
  /// @endcode
  [[nodiscard]] metrics_snapshot metrics() const { return engine_->metrics(); }

  /// The trace recorded with `metrics_options::trace_limit > 0`: the job attempts
  /// and gauge samples kept, at most `trace_limit` events (an attempt is one, a
  /// sample two; `trace_data::dropped` counts the events not kept). Empty when
  /// tracing is off.
  /// Call it after `wait()` returned (before, it returns an empty trace).
  /// @throws std::bad_alloc only. Thread-safe after wait().
  ///
  /// @code
  ///   (void)pool.wait();
  ///   std::ofstream f("trace.json");
  ///   flowpool::write_chrome_trace(f, {{"work", pool.trace()}}, pool.trace().start_ns);
  /// @endcode
  [[nodiscard]] trace_data trace() const { return engine_->trace(); }

  /// The options this pool was built with.
  [[nodiscard]] const pool_options& options() const noexcept { return engine_->options(); }

 private:
  using engine_type = detail::engine<Job, Result>;

  template <class Worker>
  static typename engine_type::worker_fn check_worker(Worker&& w) {
    static_assert(worker_for<std::decay_t<Worker>, Job, Result>,
                  "flowpool::pool: the worker must be callable as Result(const Job&, flowpool::job_context&)");
    // The engine passes the job mutable; a pool's worker sees it as const (it is
    // retried as it was).
    return typename engine_type::worker_fn([w = std::forward<Worker>(w)](Job& job, job_context& ctx) mutable -> Result {
      return w(std::as_const(job), ctx);
    });
  }
  template <class Aggregator>
  static typename engine_type::aggregator_fn check_aggregator(Aggregator&& a) {
    static_assert(aggregator_for<std::decay_t<Aggregator>, Result>,
                  "flowpool::pool: the aggregator must be callable as void(Result&&)");
    return typename engine_type::aggregator_fn(std::forward<Aggregator>(a));
  }
  static bool accepted(typename engine_type::push_result r) noexcept { return r == engine_type::push_result::accepted; }

  std::unique_ptr<engine_type> engine_;
};

}  // namespace flowpool
