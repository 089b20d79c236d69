// flowpool/detail/engine.hpp - the machinery behind flowpool::pool.
// Not part of the public API: names and signatures may change in any release.
//
// Shape (see docs/architecture.md):
//
//   producers --submit--> [bounded FIFO, C] --pull--> workers: function_node, concurrency N
//   timer ----retry due--> [ready retries] ---pull-->    |  edge: one micro-batch of outcomes
//                                                        v
//                                                 aggregator: function_node, serial
//
// Jobs never sit inside TBB buffers. The worker node receives only *tokens*
// (at most N in flight); each invocation pulls one micro-batch (ready retries
// first, then the bounded FIFO), runs it, re-dispatches itself if work remains,
// and returns the batch's outcomes as its output message. oneTBB hands that
// message to the serial aggregator by task bypass, so the aggregator normally
// runs on the same thread right after the batch. A pool's own arena has N + 1
// worker slots (the spare, see arena_) and one reserved for the thread in wait();
// the worker node's concurrency keeps jobs at N. The stages of a graph run share
// one graph in one arena instead (shared_graph): sum of N_k workers, one reserved
// slot, and a pool is the one-stage case of the same engine.
//
// A failed attempt that the retry policy retries leaves the worker: it waits out
// its backoff in a delay heap, and the pool's timer thread moves it to the ready
// list when it is due. No worker slot is held during a backoff.
//
// Memory stays bounded: C jobs in the FIFO, N batches running, outcome batches
// in flight capped (workers stop pulling while the aggregator is behind), jobs in
// backoff capped at C (workers stop pulling new jobs past that), and in ordered
// mode a reorder window. Cancellation is exact: a job never pulled is still in
// our FIFO or retry lists and is counted as cancelled; an outcome batch a
// cancelled task dropped is still in our registry and is folded by wait().
#pragma once

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <pthread.h>
#endif

#include "flowpool/detail/delivery.hpp"
#include "flowpool/detail/retry_queue.hpp"
#include "flowpool/detail/run_metrics.hpp"
#include "flowpool/detail/runtime.hpp"
#include "flowpool/detail/saturating.hpp"
#include "flowpool/detail/thread_annotations.hpp"
#include "flowpool/detail/wait_hold.hpp"
#include "flowpool/error.hpp"
#include "flowpool/job_context.hpp"
#include "flowpool/metrics.hpp"
#include "flowpool/options.hpp"
#include "flowpool/report.hpp"

namespace flowpool::detail {

/// Why a run was cancelled; decides the report's status.
enum class cancel_cause : std::uint8_t { none, user, deadline, failure };

/// Validates options; throws errc::invalid_argument naming the bad field.
FLOWPOOL_API void validate(const pool_options& opts);
FLOWPOOL_API void validate(const retry_policy& policy);

/// The backoff before attempt `failed_attempt + 1` of job `job` (deterministic).
FLOWPOOL_API std::chrono::nanoseconds backoff_delay(const retry_policy& r, std::uint64_t job,
                                                    std::uint32_t failed_attempt);

// The one oneTBB flow graph of a graph run, in the one task_arena its stages share:
// one worker slot per concurrent job of every stage (sum of N_k) and one reserved
// for the owner's thread in wait(). Every stage builds its worker and serial nodes in
// this graph, so stage k's tokens and wake-ups of stage k's serial node, spawned from
// stage k-1's serial node, land in the same arena, no stage waits for oneTBB to move
// a thread over from another arena, and N_k blocking jobs per stage still run at once.
// One wait_for_all() covers the whole run: the graph is idle only when no stage has a
// task in flight, a retry in backoff or a stalled hand-off (each of those holds a
// wait reservation). Outlives the engines built on it: ~graph waits for every task.
class shared_graph {
 public:
  explicit shared_graph(int workers)
      : lease_(workers), arena_(workers + 1, 1), ctx_(tbb::task_group_context::isolated) {
    arena_.initialize();  // may create oneTBB's thread pool: the lease covers that
    lease_.confirm();
    arena_.execute([this] { graph_.emplace(ctx_); });  // the graph binds to the arena it is built in
  }
  shared_graph(const shared_graph&) = delete;
  shared_graph& operator=(const shared_graph&) = delete;
  [[nodiscard]] tbb::task_arena& arena() noexcept { return arena_; }
  [[nodiscard]] tbb::flow::graph& graph() noexcept { return *graph_; }

 private:
  thread_lease lease_;
  tbb::task_arena arena_;
  tbb::task_group_context ctx_;
  std::optional<tbb::flow::graph> graph_;  // declared last: destroyed (and waited for) first
};

template <class Job, class Result>
class engine {
 public:
  // The job is passed mutable so that a caller that knows an attempt is the last one
  // (graph stages: no retry left) may move from it; pool<Job, Result> passes it on
  // as const, and a job that may still be retried must be left as it was.
  using worker_fn = std::function<Result(Job&, job_context&)>;
  using aggregator_fn = std::function<void(Result&&)>;
  using clock = std::chrono::steady_clock;
  using policy_ptr = std::shared_ptr<const retry_policy>;

  /// `shared`: build this engine's nodes in that graph (a graph run's stages) instead
  /// of a graph and arena of its own.
  engine(pool_options opts, worker_fn work, aggregator_fn aggregate, metrics_options mopts = {},
         shared_graph* shared = nullptr)
      : opts_((validate(opts), std::move(opts))),
        n_(opts_.workers),
        capacity_(static_cast<std::size_t>(opts_.capacity)),
        window_(opts_.reorder_window == 0 ? capacity_ : opts_.reorder_window),
        outcome_limit_(std::max<std::size_t>(capacity_, static_cast<std::size_t>(n_) * opts_.max_batch)),
        low_water_(capacity_ - std::max<std::size_t>(1, capacity_ / 4)),
        max_failures_(opts_.on_error == error_policy::fail_fast ? 1 : opts_.max_failures),
        work_(std::move(work)),
        start_(clock::now()),
        run_deadline_(opts_.timeout.count() > 0 ? saturating_add<clock>(start_, opts_.timeout)
                                                : clock::time_point::max()),
        metrics_(std::move(mopts), opts_.workers, start_),
        delivery_(
            opts_.ordered, std::move(aggregate), opts_.on_job_done, [this](job_error e) { late_failure(std::move(e)); },
            stop_.get_token()),
        // N workers, and spare ones (see arena_): one, plus one for each pool already
        // live in the process.
        lease_(shared != nullptr ? 0 : n_, shared != nullptr ? 0 : 1 + thread_lease::live()),
        // N + spare worker slots, plus one reserved for the thread in wait(). The
        // waiter joins the arena instead of handing its wait to a worker as a task
        // (which would hold one of the workers). The spare worker slots: oneTBB asks
        // its thread pool for the sum of the arenas' demands, and counts a worker
        // blocked inside a task of another arena (a pool's aggregator in a blocking
        // submit() into this pool, as the graph runner chains its stages) as one of
        // them, so with a demand of exactly N this pool could get no worker at all.
        // Every pool live before this one may have its aggregator blocked like that,
        // so each of them adds a spare: with one spare, a 4-stage graph built first
        // to last hung; with one per earlier pool it did not (issue 13, item 1).
        // The worker node's concurrency keeps running jobs at N; the spares run the
        // aggregator or nothing. A run that is one flow graph needs none of this.
        own_arena_(shared != nullptr ? std::nullopt : std::make_optional<tbb::task_arena>(n_ + lease_.spare() + 1, 1)),
        arena_(shared != nullptr ? &shared->arena() : &*own_arena_),
        ctx_(tbb::task_group_context::isolated),
        graph_(shared != nullptr ? &shared->graph() : nullptr) {
    delivery_.set_publish_counts(metrics_.on());
    free_ids_.reserve(static_cast<std::size_t>(n_));
    for (int id = n_; id >= 1; --id) free_ids_.push_back(id);
    batches_.resize(static_cast<std::size_t>(n_));
    job_cost_ns_ = std::make_unique<padded_cost[]>(static_cast<std::size_t>(n_));
    // The arena's creation may create oneTBB's thread pool, which fixes its worker
    // limit: the lease covers that, then checks this pool can have its N.
    arena_->initialize();
    lease_.confirm();
    arena_->execute([this] {
      // The graph binds to the arena it is built in.
      if (graph_ == nullptr) graph_ = &own_graph_.emplace(ctx_);
      // No exception may reach TBB: it would cancel the context behind our back.
      // Job and aggregator exceptions are handled per job; anything else (an
      // allocation failure) ends the run as failed with an internal cause.
      workers_.emplace(*graph_, static_cast<std::size_t>(n_), [this](token_t) {
        const body_scope scope(this, arena_);
        try {
          return worker_body();
        } catch (...) {
          internal_failure("worker");
          return batch_msg{};
        }
      });
      aggregator_.emplace(*graph_, tbb::flow::serial, [this](batch_msg m) {
        const body_scope scope(this, arena_);
        try {
          aggregator_body(m);
        } catch (...) {
          internal_failure("aggregator");
        }
        return tbb::flow::continue_msg{};
      });
      tbb::flow::make_edge(*workers_, *aggregator_);
    });
    // A pool's own graph: the input reservation, held until close() or cancel(), so that
    // wait() blocks until then. A stage of a shared graph takes none: the runner waits
    // only after the stage's input is closed, and one reservation per stage would keep
    // the run's graph from going idle while a later stage is still open.
    if (owns_graph()) input_.emplace(*graph_);
    if (metrics_.first_due() != clock::time_point::max()) {  // gauge samples and the user's snapshot callback
      const scoped_lock lk(mu_);
      start_timer_locked();
      timer_.arm(metrics_.first_due());
    }
    if (run_deadline_ != clock::time_point::max()) {
      const scoped_lock lk(mu_);
      start_timer_locked();
      timer_.arm(run_deadline_);
    }
  }

  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  ~engine() {
    if (!waited_) {
      if (!closed_flag_.load(std::memory_order_acquire)) cancel_internal(cancel_cause::user);
      close_input();
      try {
        (void)finish();
      } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
      }
    }
    timer_.stop();
    // A producer woken by cancel may still be on its way out of submit().
    scoped_lock lk(mu_);
    while (waiting_producers_ != 0) producers_gone_.wait(lk);
  }

  // ---- producers -------------------------------------------------------------------------

  enum class push_result { accepted, full, cancelled };
  /// What a producer does when the queue is full.
  enum class when_full {
    fail,   ///< return push_result::full at once (try_submit)
    block,  ///< wait for room (submit)
    until,  ///< wait for room until a deadline (submit_for)
  };

  push_result push(Job&& job, policy_ptr policy, when_full mode, clock::time_point until = {}) {
    if (policy) validate(*policy);
    std::uint64_t enq = metrics_.ticks();  // read outside the lock; re-read below if we waited
    scoped_lock lk(mu_);
    bool waited = false;
    if (!wait_for_room(lk, mode, until, waited)) return push_result::full;
    if (cancelled_) return push_result::cancelled;
    if (waited) enq = metrics_.ticks();  // it entered the queue now
    wait_holds tokens = enqueue_locked(std::move(job), std::move(policy), enq);
    lk.unlock();
    spawn_workers(std::move(tokens));
    return push_result::accepted;
  }

  /// Pushes `jobs` in order, blocking while the queue is full, with one lock
  /// acquisition per run of jobs that fits instead of one per job: for a producer
  /// that has several jobs at hand (a graph run's source). Returns how many were
  /// accepted: all of them, or fewer once the run is cancelled (the rest stay in
  /// `jobs`, moved-from only up to the count returned). If there is no memory to
  /// queue one more, throws std::bad_alloc: the jobs before that one were accepted
  /// (and will run), that one and the rest are left as they were.
  std::size_t push_batch(std::span<Job> jobs) {
    std::size_t done = 0;
    while (done < jobs.size()) {
      std::uint64_t enq = metrics_.ticks();
      scoped_lock lk(mu_);
      bool waited = false;
      (void)wait_for_room(lk, when_full::block, {}, waited);
      if (cancelled_) return done;
      if (waited) enq = metrics_.ticks();
      wait_holds tokens;
      try {
        while (done < jobs.size() && queue_.size() < capacity_) {
          tokens.merge(enqueue_locked(std::move(jobs[done]), nullptr, enq));  // each dispatches what it may
          ++done;
        }
      } catch (...) {  // no memory for one more: the jobs already queued still get their workers
        lk.unlock();
        spawn_workers(std::move(tokens));
        throw;
      }
      lk.unlock();
      spawn_workers(std::move(tokens));
    }
    return done;
  }

  /// A hand-off that never blocks, for the serial node of the stage before this one
  /// in a graph run: takes the job (moving from it) if the queue has room, else
  /// leaves it as it was, returns full, and calls `wake` once, from another thread,
  /// when the queue has drained to its low watermark or the run is cancelled. `wake`
  /// must outlive this engine's run, and must not block.
  push_result offer(Job& job, const std::function<void()>& wake) {
    const std::uint64_t enq = metrics_.ticks();
    scoped_lock lk(mu_);
    if (cancelled_) return push_result::cancelled;
    if (closed_) throw_error(errc::closed, "pool: submit after close()");
    if (queue_.size() >= capacity_) {
      if (std::find(room_waiters_.begin(), room_waiters_.end(), &wake) == room_waiters_.end()) {
        room_waiters_.push_back(&wake);
      }
      return push_result::full;
    }
    wait_holds tokens = enqueue_locked(std::move(job), nullptr, enq);
    lk.unlock();
    spawn_workers(std::move(tokens));
    return push_result::accepted;
  }

  /// Makes this engine hand each succeeded result to `f` instead of the aggregator:
  /// `f(result, wake)` returns true once it took the result, or false (leaving it as
  /// it was) when the next stage has no room, after arranging for `wake` to be
  /// called. Called with a null `wake` (from wait(), on the owner's thread), `f` may
  /// block. Set before the first job is submitted.
  using forward_fn = typename delivery<Result>::forward_fn;
  void set_forward(forward_fn f) { delivery_.set_forward(std::move(f), &wake_); }

  /// Makes the ids this engine reports (job_record::job in on_job_done, job_error::job
  /// in errors and the cause) come from the job itself, `key(job)`, instead of the
  /// engine's own submission order. A graph run's items carry their id from the source
  /// through every stage, so no stage keeps a map from its own ids to theirs. The
  /// order of delivery (ordered mode) still follows submission. Set before the first
  /// job is submitted.
  using key_fn = std::uint64_t (*)(const Job&) noexcept;
  void set_key(key_fn key) noexcept { key_ = key; }

  /// Whether on_job_done's records carry the attempt's duration (default true). A
  /// caller that does not use it (a graph run with no joblog) saves two clock reads
  /// per job. Set before the first job is submitted.
  void set_hook_timing(bool on) noexcept { hook_timing_ = on; }

  /// Called once, on the thread that cancels, right after this engine cancelled
  /// itself because of a failure (its failure policy, or a throwing aggregator or
  /// hook), with none of its locks held. A graph run cancels its other stages from
  /// here at once: a stage's own cancel also cancels its serial node's pending
  /// tasks, so on_job_done sees that failure only in wait(). Set before the first
  /// job is submitted; must not call wait().
  void set_on_failure(std::function<void()> f) { on_failure_ = std::move(f); }

 private:
  // Blocks a producer until the queue has room or the run is cancelled, as `mode`
  // says. Returns false when it gave up with the queue still full; `waited` says
  // whether it blocked at all. Throws once the input is closed (and not cancelled).
  bool wait_for_room(scoped_lock& lk, when_full mode, clock::time_point until, bool& waited) FLOWPOOL_REQUIRES(mu_) {
    if (closed_) throw_error(errc::closed, "pool: submit after close()");
    waited = false;
    if (queue_.size() < capacity_ || cancelled_) return true;
    if (mode == when_full::fail) return false;
    waited = true;
    ++waiting_producers_;
    bool ok = true;
    // Workers wake blocked producers only when the queue drains to the low
    // watermark (one wake-up refills many slots). A producer also re-checks for
    // room every producer_recheck, so it never stays blocked while there is room
    // for longer than that, even if workers stall above the watermark.
    while (queue_.size() >= capacity_ && !cancelled_ && !closed_) {
      auto wake_at = clock::now() + producer_recheck;
      if (mode == when_full::until) {
        if (clock::now() >= until) {
          ok = false;
          break;
        }
        wake_at = std::min(wake_at, until);
      }
      not_full_.wait_until(lk, wake_at);
    }
    --waiting_producers_;
    if (waiting_producers_ == 0) producers_gone_.notify_all();
    if (!ok) return false;
    if (closed_ && !cancelled_) throw_error(errc::closed, "pool: submit after close()");
    return true;
  }

  // Queues an accepted job; returns the worker tokens to put. Called with mu_ held.
  wait_holds enqueue_locked(Job&& job, policy_ptr policy, std::uint64_t enq) FLOWPOOL_REQUIRES(mu_) {
    // Beside the queue, not in its entries: with metrics off the entries stay one
    // Job wide (a cancel frees half the memory, and is twice as fast, with 1M queued).
    // Before the push: if the ring cannot grow (bad_alloc), the job is not queued.
    if (metrics_.on()) enqueued_at_.put(next_id_, enq, next_pop_id_);
    queue_.push_back(std::move(job));
    if (policy) {  // rare: keeps queue entries plain jobs
      policies_.emplace(next_id_, std::move(policy));
      has_policies_.store(true, std::memory_order_release);
    }
    ++next_id_;
    const std::size_t depth = queue_.size();
    if (depth > max_depth_) {
      max_depth_ = depth;
      max_depth_pub_.store(depth, std::memory_order_relaxed);
    }
    depth_pub_.store(depth, std::memory_order_relaxed);
    submitted_pub_.store(next_id_ - 1, std::memory_order_relaxed);
    return dispatch_locked();
  }

 public:
  // ---- owner -----------------------------------------------------------------------------

  void close() {
    const call_guard guard(*this);
    {
      const scoped_lock lk(mu_);
      if (finished_.load(std::memory_order_acquire)) {
        throw_error(errc::finished, "pool: close() after wait() returned");
      }
      if (closed_) return;
      closed_ = true;
      closed_flag_.store(true, std::memory_order_release);
    }
    not_full_.notify_all();
    release_input();
  }

  void cancel() {
    const call_guard guard(*this);
    if (finished_.load(std::memory_order_acquire)) {
      throw_error(errc::finished, "pool: cancel() after the run finished");
    }
    cancel_internal(cancel_cause::user);
  }

  report wait() {
    if (running_engine() == this) {  // it would wait for the job (or the aggregator) it is called from
      throw_error(errc::invalid_argument,
                  "pool: wait() called from inside one of the pool's own jobs or its aggregator, which would wait "
                  "for itself; call wait() from the thread that owns the pool");
    }
    {
      const scoped_lock lk(mu_);
      if (waited_) throw_error(errc::already_waited, "pool: wait() called twice");
      waited_ = true;
    }
    return finish();
  }

  [[nodiscard]] bool cancelled() const noexcept { return stop_.stop_requested(); }

  [[nodiscard]] snapshot snap() const noexcept {
    snapshot s;
    s.queue_depth = depth_pub_.load(std::memory_order_relaxed);
    s.max_queue_depth = max_depth_pub_.load(std::memory_order_relaxed);
    s.busy_workers = busy_.load(std::memory_order_relaxed);
    s.submitted = submitted_pub_.load(std::memory_order_relaxed);
    s.completed = delivery_.published_completed() + queued_cancelled_pub_.load(std::memory_order_relaxed);
    return s;
  }

  [[nodiscard]] const pool_options& options() const noexcept { return opts_; }

  [[nodiscard]] bool metrics_enabled() const noexcept { return metrics_.on(); }

  /// Live (or, after the run, final) metrics. Lock-free; any thread.
  [[nodiscard]] metrics_snapshot metrics() const {
    metrics_snapshot m;
    m.workers = n_;
    m.capacity = capacity_;
    m.submitted = submitted_pub_.load(std::memory_order_relaxed);
    m.retried = retried_.load(std::memory_order_relaxed);
    m.queue_depth = depth_pub_.load(std::memory_order_relaxed);
    m.max_queue_depth = max_depth_pub_.load(std::memory_order_relaxed);
    m.busy_workers = busy_.load(std::memory_order_relaxed);
    m.succeeded = delivery_.published_succeeded();
    m.failed = delivery_.published_failed();
    m.cancelled = delivery_.published_cancelled() + queued_cancelled_pub_.load(std::memory_order_relaxed);
    const std::int64_t end = end_ns_.load(std::memory_order_acquire);
    m.final = end != 0;
    const std::int64_t now = m.final ? end : ns_of(clock::now());
    m.wall = std::chrono::nanoseconds(now - ns_of(start_));
    metrics_.read_into(m, m.final);
    return m;
  }

  /// The recorded trace. Call only after wait() returned (empty before, or when tracing is off).
  [[nodiscard]] trace_data trace() const {
    trace_data t;
    t.workers = n_;
    t.start_ns = ns_of(start_);
    t.end_ns = end_ns_.load(std::memory_order_acquire);
    if (!metrics_.tracing() || t.end_ns == 0) return t;
    metrics_.trace_into(t);
    t.max_queue_depth = max_depth_pub_.load(std::memory_order_relaxed);
    return t;
  }

 private:
  static std::int64_t ns_of(clock::time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  // Counts close()/cancel() calls in progress on other threads: finish() waits
  // for them, so none touches the engine after wait() returns and it is freed.
  class call_guard {
   public:
    explicit call_guard(engine& e) : e_(e) {
      const scoped_lock lk(e_.mu_);
      ++e_.calls_in_progress_;
    }
    ~call_guard() {
      const scoped_lock lk(e_.mu_);
      if (--e_.calls_in_progress_ == 0) e_.producers_gone_.notify_all();
    }
    call_guard(const call_guard&) = delete;
    call_guard& operator=(const call_guard&) = delete;

   private:
    engine& e_;
  };

  struct token_t {};

  struct work_item {  // a job handed to a worker, or waiting out a backoff
    Job job;
    std::uint64_t id = 0;
    std::uint32_t attempt = 1;   // the attempt about to run
    std::uint64_t ready_at = 0;  // metrics: when it entered the queue (or its backoff ends), metrics_clock ticks
  };

  // A job waiting out its backoff, or due and waiting for a worker. It holds a wait
  // reservation until a worker takes it or a cancel ends it, so the graph is never
  // idle while a retry is still to run.
  struct retry_item {
    work_item item;
    wait_holds hold;
  };

  using outcome = detail::outcome<Result>;

  // A micro-batch of outcomes in flight from a worker to the aggregator. Owned by
  // the engine (batch_store_), so one dropped by a cancelled task is not lost.
  struct outcome_batch {
    std::vector<outcome> items;
    bool in_flight = false;
  };
  struct batch_msg {
    outcome_batch* batch = nullptr;  // null: the invocation produced nothing
  };
  using worker_node = tbb::flow::function_node<token_t, batch_msg>;
  using aggregator_node = tbb::flow::function_node<batch_msg, tbb::flow::continue_msg>;

  // ---- dispatch -------------------------------------------------------------------------

  // Jobs a worker could pull right now. Called with mu_ held.
  std::size_t pullable_locked() const FLOWPOOL_REQUIRES(mu_) {
    if (cancelled_) return 0;
    return retries_.ready() + (throttled_locked() ? 0 : queue_.size());
  }

  // The new worker tokens to dispatch now, each with a wait reservation: it keeps
  // the graph "busy" between deciding to dispatch and the token landing, so wait()
  // cannot see a quiescent graph with work still queued. Called with mu_ held.
  wait_holds dispatch_locked() FLOWPOOL_REQUIRES(mu_) {
    if (active_ >= n_) return {};  // every worker is out already (most submits of a busy pool)
    const std::size_t want = std::min<std::size_t>(pullable_locked(), static_cast<std::size_t>(n_ - active_));
    active_ += static_cast<int>(want);
    return {*graph_, want};
  }

  // Puts a worker token for each reservation that dispatch_locked() took. Inside this pool's arena (a worker or the
  // aggregator) a put spawns a task that this thread or another worker runs. A
  // put from any other thread (a producer, the timer, another pool's aggregator)
  // only runs if some thread waits in the arena, which nobody promises (oneTBB
  // queues it as "some thread will wait here"): there the tokens go through
  // task_arena::enqueue, which always gets a thread. The reservations keep the
  // graph busy until the tokens are in.
  void spawn_workers(wait_holds tokens) {
    if (tokens.empty()) return;
    // A body of this engine, or of another stage on the same shared arena.
    if (running_engine() == this || running_arena() == arena_) {
      put_tokens(tokens);
      return;
    }
    token_put put{this, std::move(tokens)};
    try {
      arena_->enqueue(std::move(put));
    } catch (...) {  // no task was made (no memory), so `put` was not moved from: put from here
      put();         // NOLINT(bugprone-use-after-move): enqueue moves only into a task it allocated
    }
  }

  // The task that puts tokens from inside the arena (task_arena::enqueue calls it as const).
  struct token_put {
    engine* self;
    mutable wait_holds tokens;
    void operator()() const noexcept { self->put_tokens(tokens); }
  };

  void put_tokens(wait_holds& tokens) noexcept {
    while (!tokens.empty()) {
      try {
        workers_->try_put(token_t{});
      } catch (...) {  // no memory for the task: this token is lost, and the run ends failed
        {
          const scoped_lock lk(mu_);
          --active_;
        }
        try {
          internal_failure("dispatch");
        } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more can be done
        }
      }
      tokens.release_one();
    }
  }

  // New jobs are not pulled from the FIFO while the aggregator is too far behind
  // (outcome memory), while max(C, N * max_batch) jobs wait out a backoff (retry
  // memory: the same bound as outcomes, so a few jobs in backoff never stop the
  // workers, even at C = 1), or, in ordered mode, when the next job is outside the
  // reorder window. Ready retries are always pulled: they are older than anything
  // in the FIFO.
  bool throttled_locked() const FLOWPOOL_REQUIRES(mu_) {
    if (retries_.size() >= outcome_limit_) return true;
    if (opts_.ordered) {
      return next_pop_id_ >= delivery_.next() + window_;
    }
    return pending_count_.load(std::memory_order_acquire) >= outcome_limit_;
  }

  std::size_t batch_size_locked(int wid) const FLOWPOOL_REQUIRES(mu_) {
    // Deep queue of short jobs: take a run so the lock and the hand-off are paid
    // once per run. Shallow queue, or jobs that take long: one at a time, so no
    // job waits behind another while a worker is idle (load balance, latency).
    std::size_t b = queue_.size() / (2 * static_cast<std::size_t>(n_));
    const std::uint64_t cost = job_cost_ns_[static_cast<std::size_t>(wid - 1)].ns;
    b = std::min<std::size_t>(b, cost == 0 ? 1 : static_cast<std::size_t>(batch_budget_ns / cost));
    b = std::clamp<std::size_t>(b, 1, opts_.max_batch);
    if (opts_.ordered) {
      const std::uint64_t limit = delivery_.next() + window_;
      b = std::min<std::size_t>(b, static_cast<std::size_t>(limit - next_pop_id_));
    }
    return std::min(b, queue_.size());
  }

  // ---- workers --------------------------------------------------------------------------

  // The body of the worker node. One invocation pulls one micro-batch, runs it,
  // re-dispatches itself while work remains, and returns the outcomes; the edge
  // to the serial aggregator delivers them (by task bypass, on this thread).
  batch_msg worker_body() {
    int wid = 0;
    bool wake_producers = false;
    std::vector<std::shared_ptr<retry_item>> retries;  // usually empty: no allocation
    waiter_list room;                                  // usually empty: no allocation
    {
      const scoped_lock lk(mu_);
      if (pullable_locked() == 0) {
        --active_;
        return {};
      }
      wid = free_ids_.back();
      free_ids_.pop_back();
      auto& batch = batches_[static_cast<std::size_t>(wid - 1)];
      if (retries_.has_ready()) {  // a retry that is due goes first
        retries.push_back(retries_.pop_ready());
      } else {
        const std::size_t count = batch_size_locked(wid);
        for (std::size_t i = 0; i < count; ++i) {
          batch.push_back(work_item{std::move(queue_.front()), next_pop_id_++, 1});
          queue_.pop_front();
          if (metrics_.on()) {
            batch.back().ready_at = enqueued_at_.at(batch.back().id);
          }
        }
        depth_pub_.store(queue_.size(), std::memory_order_relaxed);
        // Hysteresis: wake blocked producers once the queue has drained to the low
        // watermark, not on every pop, so one wake-up refills many slots instead of
        // the worker paying a futex wake per batch.
        wake_producers = waiting_producers_ > 0 && queue_.size() <= low_water_;
        if (!room_waiters_.empty() && queue_.size() <= low_water_) room.swap(room_waiters_);
      }
    }
    if (wake_producers) not_full_.notify_all();
    for (const auto* w : room) (*w)();
    auto& batch = batches_[static_cast<std::size_t>(wid - 1)];
    for (auto& r : retries) {
      batch.push_back(std::move(r->item));
      r->hold.reset();  // this task keeps the graph busy now
    }
    outcome_batch* out = acquire_batch();
    run_batch(wid, batch, out->items);
    batch.clear();
    pending_count_.fetch_add(out->items.size(), std::memory_order_acq_rel);
    wait_holds again;
    {
      const scoped_lock lk(mu_);
      free_ids_.push_back(wid);
      if (pullable_locked() > 0) {
        again = wait_holds(*graph_, 1);
      } else {
        --active_;
      }
    }
    put_tokens(again);  // this worker goes on: queued behind us, it runs once we return
    return batch_msg{out};
  }

  outcome_batch* acquire_batch() {
    const scoped_lock lk(batch_mu_);
    outcome_batch* b = nullptr;
    if (free_batches_.empty()) {
      b = &batch_store_.emplace_back();
    } else {
      b = free_batches_.back();
      free_batches_.pop_back();
    }
    b->in_flight = true;
    return b;
  }

  void release_batch(outcome_batch* b) {
    b->items.clear();  // keeps its capacity: no allocation per job in steady state
    const scoped_lock lk(batch_mu_);
    b->in_flight = false;
    free_batches_.push_back(b);
  }

  void run_batch(int wid, std::vector<work_item>& batch, std::vector<outcome>& outs) {
    busy_.fetch_add(1, std::memory_order_relaxed);
    std::int64_t ns = 0;
    if (metrics_.on()) [[unlikely]] {
      ns = run_batch_measured(wid, batch, outs);
    } else {
      const auto t0 = clock::now();
      for (auto& item : batch) run_one(item, wid, outs);
      // One clock read per batch: the mean job cost steers the next batch size.
      ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count();
    }
    job_cost_ns_[static_cast<std::size_t>(wid - 1)].ns =
        std::max<std::uint64_t>(1, static_cast<std::uint64_t>(ns) / batch.size());
    busy_.fetch_sub(1, std::memory_order_relaxed);
  }

  // run_batch with metrics on: the attempt's own start and end, read around the
  // job's body (the same interval as job_record::duration), and counters and
  // histograms in this worker's own slot. Raw ticks on the hot path; only the
  // differences are converted, with a fixed-point multiply. Queue wait is each
  // attempt's start minus when it became ready, one histogram sample per attempt
  // (folding a batch's waits at their mean blurred jobs of one batch that came in
  // far apart, which the metrics tests catch). Returns the batch's ns.
  std::int64_t run_batch_measured(int wid, std::vector<work_item>& batch, std::vector<outcome>& outs) {
    const std::uint64_t t0 = metrics_.begin_batch(wid);
    const bool tracing = metrics_.tracing();
    std::uint64_t started = 0;
    for (auto& item : batch) {
      const std::size_t before = outs.size();
      attempt_span span;
      if (!run_one(item, wid, outs, &span)) continue;
      ++started;
      metrics_.attempt(wid, item.ready_at, span);
      if (tracing) [[unlikely]] {
        attempt_status st = attempt_status::retrying;  // no outcome: handed to the retry queue
        if (outs.size() > before) {
          switch (outs.back().status) {
            case job_status::succeeded:
              st = attempt_status::succeeded;
              break;
            case job_status::failed:
              st = attempt_status::failed;
              break;
            case job_status::cancelled:
              st = attempt_status::cancelled;
              break;
          }
        }
        metrics_.trace(wid, span, attempt_event{item.id, item.attempt, wid, st, 0, 0});
      }
    }
    return metrics_.end_batch(wid, t0, started);
  }

  // The retry policy of a job: its own if it was submitted with one, else the pool's.
  // Looked up only when an attempt fails; the map is empty unless submit(job, policy) is used.
  policy_ptr policy_of(const work_item& item) const {
    if (has_policies_.load(std::memory_order_acquire)) {
      const scoped_lock lk(mu_);
      if (auto it = policies_.find(item.id); it != policies_.end()) return it->second;
    }
    return nullptr;
  }
  const retry_policy& resolve(const policy_ptr& p) const { return p ? *p : opts_.retry; }
  void forget_policy(std::uint64_t id) {
    if (!has_policies_.load(std::memory_order_acquire)) return;
    const scoped_lock lk(mu_);
    policies_.erase(id);
  }

  // Runs one attempt. Appends the job's outcome when it reached a terminal state;
  // appends nothing when the attempt failed and was handed to the retry queue.
  // Returns whether the attempt ran. With `span` (metrics on), the attempt is timed
  // on the metrics clock, and job_record::duration is that same interval.
  bool run_one(work_item& item, int wid, std::vector<outcome>& outs, attempt_span* span = nullptr) {
    outcome& out = outs.emplace_back();  // built in place: no per-job move
    out.id = item.id;
    out.key = key_ != nullptr ? key_(item.job) : item.id;  // before work_, which may move from the job
    out.worker = wid;
    out.attempts = item.attempt - 1;  // attempts completed before this one
    if (stop_.stop_requested()) {     // never start an attempt once cancellation is visible
      out.status = job_status::cancelled;
      out.kind = error_kind::cancelled;
      forget_policy(item.id);
      return false;
    }
    out.attempts = item.attempt;
    if (item.attempt > 1) retried_.fetch_add(1, std::memory_order_relaxed);
    const bool timed = opts_.job_timeout.count() > 0;
    const bool clocked = timed || (opts_.on_job_done && hook_timing_ && span == nullptr);
    const auto t0 = clocked ? clock::now() : clock::time_point{};
    const auto deadline = timed ? saturating_add<clock>(t0, opts_.job_timeout) : clock::time_point::max();
    job_context ctx(borrow_stop_token_t{}, item.id, wid, item.attempt, stop_token_, deadline);
    std::exception_ptr failure;
    if (span != nullptr) span->start = metrics_.tick_clock().ticks();
    try {
      out.value.emplace(work_(item.job, ctx));
      out.status = job_status::succeeded;
    } catch (const error& e) {
      if (e.code() == errc::cancelled && stop_.stop_requested()) {
        out.status = job_status::cancelled;
        out.kind = error_kind::cancelled;
      } else {
        out.status = job_status::failed;
        out.message = e.what();
        failure = std::current_exception();
      }
    } catch (...) {
      out.status = job_status::failed;
      out.message = describe_current_exception();
      failure = std::current_exception();
    }
    if (span != nullptr) {
      span->end = metrics_.tick_clock().ticks();
      span->ns = metrics_.tick_clock().ns_between(span->start, span->end);
      out.duration = std::chrono::nanoseconds(span->ns);
    } else if (clocked) {
      out.duration = clock::now() - t0;
    }
    // An attempt that ran past its own deadline is a timeout, whatever it returned.
    if (timed && out.status != job_status::cancelled && clock::now() >= deadline) {
      out.value.reset();
      out.status = job_status::failed;
      out.kind = error_kind::timeout;
      out.message = "attempt " + std::to_string(item.attempt) + " exceeded the job timeout of " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(opts_.job_timeout).count()) +
                    " ms";
      failure = nullptr;
    }
    if (out.status == job_status::failed) {
      const policy_ptr policy = policy_of(item);
      if (should_retry(resolve(policy), item, out, failure)) {
        outs.pop_back();  // not terminal yet
        schedule_retry(item, resolve(policy));
        return true;
      }
      on_final_failure(out);
    }
    forget_policy(item.id);
    return true;
  }

  bool should_retry(const retry_policy& p, const work_item& item, const outcome& out,
                    const std::exception_ptr& failure) const {
    if (item.attempt >= p.max_attempts || stop_.stop_requested()) return false;
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const permanent_error&) {
        return false;
      } catch (...) {  // NOLINT(bugprone-empty-catch): any other failure is a candidate
      }
    }
    if (!p.retryable) return true;
    const failure_info info{out.kind, out.message, failure, item.attempt, item.id};
    try {
      return p.retryable(info);
    } catch (...) {
      return false;  // a throwing predicate means "don't retry"
    }
  }

  void schedule_retry(work_item& item, const retry_policy& p) {
    const auto delay = backoff_delay(p, item.id, item.attempt);
    const auto due = saturating_add<clock>(clock::now(), delay);
    const std::uint64_t ready_at = metrics_.on() ? metrics_.tick_clock().ticks_in(delay) : 0;
    auto next = std::make_shared<retry_item>(
        retry_item{work_item{std::move(item.job), item.id, item.attempt + 1, ready_at}, wait_holds{}});
    const scoped_lock lk(mu_);
    if (cancelled_) {  // too late to retry: it ends cancelled in finish()
      retry_cancelled_.push_back(std::move(next));
      return;
    }
    // The job is not terminal yet: keep wait() from seeing a quiescent graph once
    // this worker's task ends.
    next->hold = wait_holds(*graph_, 1);
    retries_.schedule(due, std::move(next));
    start_timer_locked();
    timer_.arm(due);
  }

  void on_final_failure(const outcome& out) {
    if (max_failures_ == 0) return;
    const std::uint64_t n = final_failures_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (n >= max_failures_)
      cancel_internal(cancel_cause::failure, job_error{out.key, out.attempts, out.kind, out.message});
  }

  // ---- timer (run deadline, retry backoff) ----------------------------------------------

  void start_timer_locked() FLOWPOOL_REQUIRES(mu_) {
    if (!timer_.started()) timer_.start([this] { return on_timer(); });
  }

  // Called on the timer thread: fires the run deadline and moves due retries to
  // the ready list. Returns when it wants to be called next.
  clock::time_point on_timer() {
    const auto now = clock::now();
    if (now >= run_deadline_) cancel_internal(cancel_cause::deadline);
    wait_holds tokens;
    clock::time_point next = clock::time_point::max();
    {
      const scoped_lock lk(mu_);
      (void)retries_.move_due(now);  // each keeps its reservation until a worker takes it
      next = retries_.next_due();
      if (!deadline_fired_ && run_deadline_ != clock::time_point::max() && !cancelled_) {
        next = std::min(next, run_deadline_);
      }
      tokens = dispatch_locked();
    }
    spawn_workers(std::move(tokens));
    if (metrics_.on()) {
      next = std::min(next, metrics_.on_timer(now, depth_pub_.load(std::memory_order_relaxed),
                                              busy_.load(std::memory_order_relaxed), [this] { return metrics(); }));
    }
    return next;
  }

  // ---- aggregator -----------------------------------------------------------------------

  // The serial aggregator node's body: folds one micro-batch.
  // A null batch is a worker invocation that produced nothing, or the next stage's
  // wake-up after a stalled hand-off (see set_forward): either way, stalled outcomes
  // are offered again first.
  void aggregator_body(batch_msg m) {
    if (m.batch == nullptr && !delivery_.stalled()) return;
    const std::size_t stalled_before = delivery_.stalled_count();
    if (delivery_.stalled()) delivery_.retry_stalled();
    std::size_t n = 0;
    if (m.batch != nullptr) {
      delivery_.fold(m.batch->items);
      n = m.batch->items.size();
      release_batch(m.batch);
    }
    // Outcomes left stalled still count as pending, so the workers stop pulling
    // (throttled_locked) while the next stage has no room.
    pending_count_.fetch_sub(n + stalled_before - delivery_.stalled_count(), std::memory_order_acq_rel);
    if (delivery_.forwards())
      hold_while_stalled();  // only a linked stage ever stalls: no extra lock per batch otherwise
    // Workers stop pulling while we are behind (or outside the reorder window):
    // restart them now that we caught up.
    wait_holds tokens;
    {
      const scoped_lock lk(mu_);
      if (active_ < n_) tokens = dispatch_locked();
    }
    spawn_workers(std::move(tokens));
  }

  // ---- stalled hand-offs (a graph run's stages before the last) --------------------------
  //
  // A stage hands its results to the next one without ever blocking a TBB thread:
  // when the next stage's queue is full, the outcome stays in delivery_ (stalled, or
  // parked at the head of the reorder window), the workers stop pulling (throttled_locked),
  // and the next stage calls wake_ once it has room. A graph reservation is held
  // while stalled, so wait() cannot see an idle graph with results still to hand on.

  void hold_while_stalled() {
    const bool now_stalled = delivery_.stalled();
    wait_holds released;  // given back outside the lock
    const scoped_lock lk(mu_);
    if (now_stalled && stall_hold_.empty() && !cancelled_ && !finishing_) {
      stall_hold_ = wait_holds(*graph_, 1);
    } else if (!now_stalled) {
      released = std::move(stall_hold_);
    }
  }

  // wake_: called by the next stage (any thread, none of its locks held). Puts a null
  // batch to the serial node from inside this arena; the reservation keeps the graph
  // (and this engine) alive until it is in.
  void wake_aggregator() {
    wake_put put{this, {}};
    {
      const scoped_lock lk(mu_);
      if (finishing_) return;  // finish() hands on what is left itself
      put.hold = wait_holds(*graph_, 1);
    }
    try {
      arena_->enqueue(std::move(put));
    } catch (...) {  // no task was made (no memory), so `put` was not moved from
      internal_failure("wake-up");
      put.hold.reset();  // NOLINT(bugprone-use-after-move): last, as in wake_put: the engine may go once released
    }
  }

  // The task that wakes the serial node (task_arena::enqueue calls it as const).
  struct wake_put {
    engine* self;
    mutable wait_holds hold;
    void operator()() const noexcept {
      try {
        self->aggregator_->try_put(batch_msg{});
      } catch (...) {
        try {
          self->internal_failure("wake-up");
        } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more can be done
        }
      }
      hold.reset();  // the last use of `self`: the engine may be gone once the graph is idle
    }
  };

  // A failure of the serial stage (aggregator or hook): the run fails, even if it
  // was already cancelled or is finishing, and the report names it.
  // Any thread (an internal failure may come from a worker).
  void late_failure(job_error e) {
    {
      const scoped_lock lk(mu_);
      if (!late_cause_) late_cause_ = e;
    }
    cancel_internal(cancel_cause::failure, std::move(e));
  }

  void internal_failure(const char* where) {
    late_failure(job_error{0, 0, error_kind::exception,
                           std::string("internal error in the ") + where + " node: " + describe_current_exception()});
  }

  // ---- ending the run -------------------------------------------------------------------

  // A pool's own graph and arena, or a stage of a shared_graph (no input reservation,
  // no context cancel).
  [[nodiscard]] bool owns_graph() const noexcept { return own_arena_.has_value(); }

  void release_input() noexcept {
    if (input_) input_->release();
  }

  void close_input() {
    {
      const scoped_lock lk(mu_);
      closed_ = true;
      closed_flag_.store(true, std::memory_order_release);
    }
    not_full_.notify_all();
    release_input();
  }

  void cancel_internal(cancel_cause why, std::optional<job_error> cause = std::nullopt) {
    std::deque<Job> dropped;
    wait_holds released;  // the reservations of retries and of a stalled hand-off, given back outside the lock
    waiter_list room;
    {
      const scoped_lock lk(mu_);
      if (why == cancel_cause::deadline) deadline_fired_ = true;
      if (cancelled_ || finishing_) return;
      // A cancel or deadline that comes after every job finished changes nothing.
      if (why != cancel_cause::failure && closed_ && queue_.empty() && retries_.empty() && active_ == 0 &&
          pending_count_.load(std::memory_order_acquire) == 0) {
        return;
      }
      cancelled_ = true;
      cause_kind_ = why;
      cause_ = std::move(cause);
      stop_.request_stop();
      // Every job never pulled is cancelled: ids [next_pop_id_, next_id_).
      cancelled_from_ = next_pop_id_;
      dropped.swap(queue_);
      if (key_ != nullptr) {  // reported under their own ids (set_key): keep those, in queue order
        cancelled_keys_.reserve(dropped.size());
        for (const Job& j : dropped) cancelled_keys_.push_back(key_(j));
      }
      // They are terminal now: live counts include them from here on, not from wait().
      queued_cancelled_pub_.store(next_id_ - next_pop_id_, std::memory_order_relaxed);
      depth_pub_.store(0, std::memory_order_relaxed);
      // Jobs in backoff, or due and not yet pulled, end cancelled too.
      const std::size_t before = retry_cancelled_.size();
      (void)retries_.take_all(retry_cancelled_);
      for (std::size_t i = before; i < retry_cancelled_.size(); ++i)
        released.merge(std::move(retry_cancelled_[i]->hold));
      // An upstream stage waiting for room learns of the cancel (its hand-off now
      // says cancelled); a hand-off of ours that waits for room is finished by
      // finish(), after the graph went idle.
      room.swap(room_waiters_);
      released.merge(std::move(stall_hold_));
      // Under mu_: a live task or the input reservation exists here, so the graph
      // cannot go idle (and wait_for_all() reset the context) before this runs. A
      // stage of a shared graph cancels no context: it would cancel the other stages'
      // tasks too, and the graph may be idle (nothing would reset it). Its tokens in
      // flight find the FIFO empty, and no attempt starts once stop_ is set.
      if (owns_graph()) ctx_.cancel_group_execution();
    }
    not_full_.notify_all();
    released.reset();
    for (const auto* w : room) (*w)();
    release_input();
    if (why == cancel_cause::failure && on_failure_) on_failure_();
    // `dropped` is destroyed here, outside the lock.
  }

  // What finish() takes from the ingress once the graph is idle.
  struct ending {
    bool cancelled = false;
    cancel_cause why = cancel_cause::none;
    std::uint64_t cancelled_from = 0;  // the first id cancel() took from the FIFO
    std::uint64_t next_id = 1;         // one past the last accepted id
    std::uint64_t next_pop_id = 1;     // one past the last id a worker pulled
    std::size_t max_depth = 0;
    std::vector<std::uint64_t> cancelled_keys;  // set_key: the ids of the jobs cancel() took
    std::vector<std::shared_ptr<retry_item>> retry_cancelled;
  };

  report finish() {
    ending e = quiesce();
    drain(e);
    const std::uint64_t queued_cancelled = record_queued_cancelled(e);
    return make_report(e, queued_cancelled);
  }

  // Waits until no task runs and no reservation is held (input released, no token,
  // retry, stall or wake-up on its way), stops the timer, and takes the ingress's
  // final state. No job is accepted or pulled from here on.
  ending quiesce() {
    graph_->wait_for_all();  // returns once input is released and no task is in flight
    {
      const scoped_lock lk(mu_);
      finishing_ = true;  // no wake-up of the serial node from here on
    }
    graph_->wait_for_all();  // one that was already on its way is in
    timer_.stop();
    ending e;
    scoped_lock lk(mu_);
    // A close()/cancel() racing this wait() from another thread may still be on
    // its way out; a job or the aggregator cannot be (the graph is idle).
    while (calls_in_progress_ != 0) producers_gone_.wait(lk);
    e.cancelled = cancelled_;
    e.why = cause_kind_;
    e.cancelled_from = cancelled_from_;
    e.next_id = next_id_;
    e.next_pop_id = next_pop_id_;
    e.max_depth = max_depth_;
    e.cancelled_keys.swap(cancelled_keys_);
    e.retry_cancelled.swap(retry_cancelled_);
    return e;
  }

  // No TBB task runs now: folds every outcome batch a cancelled task dropped, hands
  // on what a cancel left stalled (blocking is allowed on this thread), ends the
  // retries a cancel cut, and (ordered) delivers what the window still holds.
  void drain(const ending& e) {
    delivery_.set_blocking();
    std::vector<outcome_batch*> dropped;
    {
      const scoped_lock lk(batch_mu_);
      for (auto& b : batch_store_) {
        if (b.in_flight) dropped.push_back(&b);
      }
    }
    for (auto* b : dropped) {
      delivery_.fold(b->items);
      release_batch(b);
    }
    delivery_.retry_stalled();
    pending_count_.store(0, std::memory_order_release);
    std::vector<outcome> tail;  // jobs cancelled while in backoff: their earlier attempts count
    for (const auto& r : e.retry_cancelled) {
      outcome& o = tail.emplace_back();
      o.id = r->item.id;
      o.key = key_ != nullptr ? key_(r->item.job) : r->item.id;
      o.status = job_status::cancelled;
      o.kind = error_kind::cancelled;
      o.attempts = r->item.attempt - 1;
    }
    delivery_.fold(tail);
    delivery_.flush(e.next_pop_id, e.cancelled);  // ordered: skipping ids that will never come
  }

  // The jobs cancel() took from the FIFO, ids [cancelled_from, next_id): each is
  // reported to on_job_done. Returns how many there were.
  std::uint64_t record_queued_cancelled(const ending& e) {
    if (!e.cancelled) return 0;
    for (std::uint64_t id = e.cancelled_from; id < e.next_id; ++id) {
      const std::uint64_t i = id - e.cancelled_from;
      const std::uint64_t key = i < e.cancelled_keys.size() ? e.cancelled_keys[i] : id;
      delivery_.record_only(job_record{key, job_status::cancelled, 0, 0, {}});
    }
    return e.next_id - e.cancelled_from;
  }

  report make_report(const ending& e, std::uint64_t queued_cancelled) {
    report r;
    r.submitted = e.next_id - 1;  // stable: no submit is accepted once closed or cancelled
    r.succeeded = delivery_.succeeded();
    r.failed = delivery_.failed();
    r.cancelled = delivery_.cancelled() + queued_cancelled;
    r.retried = retried_.load(std::memory_order_relaxed);
    r.max_queue_depth = e.max_depth;
    r.errors = delivery_.take_errors();
    cancel_cause why = e.why;
    std::optional<job_error> late_cause;
    {
      const scoped_lock lk(mu_);  // after every hook call above: one may have failed the run
      r.cause = cause_;
      late_cause = late_cause_;
    }
    const auto end = clock::now();
    r.wall = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start_);
    delivery_.publish_final();                         // metrics() adds the queued cancelled ones
    metrics_.add_final_sample();                       // the timer is stopped
    if (late_cause && why != cancel_cause::failure) {  // the serial stage failed after a cancel
      why = cancel_cause::failure;
      if (!r.cause) r.cause = late_cause;
    }
    switch (why) {
      case cancel_cause::user:
        r.status = run_status::cancelled;
        break;
      case cancel_cause::deadline:
        r.status = run_status::timed_out;
        break;
      case cancel_cause::failure:
        r.status = run_status::failed;
        break;
      case cancel_cause::none:
        r.status = r.failed > 0 ? run_status::failed : run_status::ok;
        break;
    }
    if (r.submitted != r.succeeded + r.failed + r.cancelled) {
      throw_error(errc::internal, "pool: accounting mismatch: submitted " + std::to_string(r.submitted) +
                                      " != succeeded + failed + cancelled");
    }
    end_ns_.store(ns_of(end), std::memory_order_release);
    finished_.store(true, std::memory_order_release);
    return r;
  }

  // ---- configuration (immutable) --------------------------------------------------------
  const pool_options opts_;
  const int n_;
  const std::size_t capacity_;
  const std::size_t window_;
  const std::size_t outcome_limit_;
  const std::size_t low_water_;  // blocked producers are woken at this depth
  const std::uint64_t max_failures_;
  worker_fn work_;
  const clock::time_point start_;
  const clock::time_point run_deadline_;
  static constexpr std::uint64_t batch_budget_ns = 20'000;  // a batch should take about this long
  static constexpr std::chrono::microseconds producer_recheck{1000};

  // ---- ingress and retries, guarded by mu_ ----------------------------------------------
  mutable fast_mutex mu_;
  std::condition_variable_any not_full_;
  std::condition_variable_any producers_gone_;  // waiting_producers_ or calls_in_progress_ reached 0
  std::deque<Job> queue_ FLOWPOOL_GUARDED_BY(mu_);
  // Per-submit retry policies, by job id.
  std::unordered_map<std::uint64_t, policy_ptr> policies_ FLOWPOOL_GUARDED_BY(mu_);
  std::uint64_t next_id_ FLOWPOOL_GUARDED_BY(mu_) = 1;      // id the next accepted job gets
  std::uint64_t next_pop_id_ FLOWPOOL_GUARDED_BY(mu_) = 1;  // id of queue_.front()
  std::uint64_t cancelled_from_ FLOWPOOL_GUARDED_BY(mu_) = 0;
  // set_key: the ids of the jobs cancel() took from the FIFO.
  std::vector<std::uint64_t> cancelled_keys_ FLOWPOOL_GUARDED_BY(mu_);
  int active_ FLOWPOOL_GUARDED_BY(mu_) = 0;  // worker tokens dispatched and not yet exited (<= N)
  int waiting_producers_ FLOWPOOL_GUARDED_BY(mu_) = 0;
  int calls_in_progress_ FLOWPOOL_GUARDED_BY(mu_) = 0;  // close()/cancel() running on some thread
  std::size_t max_depth_ FLOWPOOL_GUARDED_BY(mu_) = 0;
  bool closed_ FLOWPOOL_GUARDED_BY(mu_) = false;
  bool cancelled_ FLOWPOOL_GUARDED_BY(mu_) = false;
  bool waited_ FLOWPOOL_GUARDED_BY(mu_) = false;
  bool finishing_ FLOWPOOL_GUARDED_BY(mu_) = false;
  bool deadline_fired_ FLOWPOOL_GUARDED_BY(mu_) = false;
  cancel_cause cause_kind_ FLOWPOOL_GUARDED_BY(mu_) = cancel_cause::none;
  std::optional<job_error> cause_ FLOWPOOL_GUARDED_BY(mu_);
  // A failure of the serial stage (aggregator, hook), or an internal one.
  std::optional<job_error> late_cause_ FLOWPOOL_GUARDED_BY(mu_);
  std::vector<int> free_ids_ FLOWPOOL_GUARDED_BY(mu_);
  retry_queue<retry_item> retries_ FLOWPOOL_GUARDED_BY(mu_);  // jobs in backoff, and retries due
  std::vector<std::shared_ptr<retry_item>> retry_cancelled_ FLOWPOOL_GUARDED_BY(mu_);  // retries cut by cancel
  using waiter_list = std::vector<const std::function<void()>*>;
  waiter_list room_waiters_ FLOWPOOL_GUARDED_BY(mu_);  // upstream stages whose hand-off found the queue full
  wait_holds stall_hold_ FLOWPOOL_GUARDED_BY(mu_);     // held while our own hand-off is stalled

  // ---- per worker id (owned by whoever holds the id) --------------------------------------
  std::vector<std::vector<work_item>> batches_;  // reused: no allocation per job
  // Per worker id, the mean job time of its last batch (0 = unknown); written by the
  // id's holder once per batch, read under mu_. A line each: no false sharing.
  struct alignas(64) padded_cost {
    std::uint64_t ns = 0;
  };
  std::unique_ptr<padded_cost[]> job_cost_ns_;

  // ---- outcome batches in flight ---------------------------------------------------------
  fast_mutex batch_mu_;
  std::deque<outcome_batch> batch_store_ FLOWPOOL_GUARDED_BY(batch_mu_);  // stable addresses
  std::vector<outcome_batch*> free_batches_ FLOWPOOL_GUARDED_BY(batch_mu_);
  std::atomic<std::size_t> pending_count_{0};  // outcomes produced, not yet folded
  std::atomic<std::uint64_t> final_failures_{0};
  std::atomic<std::uint64_t> retried_{0};
  std::atomic<bool> has_policies_{false};  // set once a job is submitted with its own policy

  // ---- aggregator-only state (the serial node, or finish() after quiescence) ----------
  bool hook_timing_ = true;           // set_hook_timing
  std::function<void()> on_failure_;  // set_on_failure
  key_fn key_ = nullptr;              // set_key: the job's own id, reported instead of the submission order
  const std::function<void()> wake_ = [this] { wake_aggregator(); };  // handed to the next stage

  // ---- published for snapshot() (relaxed) -------------------------------------------------
  alignas(64) std::atomic<std::size_t> depth_pub_{0};
  std::atomic<std::size_t> max_depth_pub_{0};
  std::atomic<std::uint64_t> submitted_pub_{0};
  alignas(64) std::atomic<int> busy_{0};
  std::atomic<std::uint64_t> queued_cancelled_pub_{0};  // jobs cancel() took from the FIFO (set once)

  // ---- metrics (see flowpool/metrics.hpp); all unused when metrics are off --------------
  alignas(64) std::atomic<std::int64_t> end_ns_{0};  // 0 while the run is live
  id_ring enqueued_at_ FLOWPOOL_GUARDED_BY(mu_);     // metrics: when each queued job entered (ticks)
  run_metrics metrics_;                              // per-worker counters, histograms, trace, samples

  alignas(64) std::atomic<bool> closed_flag_{false};
  std::atomic<bool> finished_{false};
  std::stop_source stop_;
  const std::stop_token stop_token_ = stop_.get_token();  // lent to every job_context: no copy per job
  delivery<Result> delivery_;  // the aggregator's state: counts, errors, reorder window, stalled hand-offs

  // ---- TBB and the timer (declared last: destroyed first) ---------------------------------
  thread_lease lease_;
  std::optional<tbb::task_arena> own_arena_;  // unless built in a shared_graph
  tbb::task_arena* arena_;
  tbb::task_group_context ctx_;  // of the own graph only
  tbb::flow::graph* graph_;      // the shared graph, or own_graph_
  std::optional<tbb::flow::graph> own_graph_;
  std::optional<once_hold> input_;  // a pool's own graph: held until close() or cancel(), so wait() blocks
  std::optional<worker_node> workers_;
  std::optional<aggregator_node> aggregator_;
  wakeup_timer timer_;
};

}  // namespace flowpool::detail
