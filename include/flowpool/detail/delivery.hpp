// flowpool/detail/delivery.hpp - the aggregator's side of a run: terminal outcomes
// folded into the counts and errors, handed to the aggregator or the next stage,
// in submission order when the run is ordered.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "flowpool/detail/reorder_window.hpp"
#include "flowpool/options.hpp"
#include "flowpool/report.hpp"

namespace flowpool::detail {

/// A message describing the exception currently being handled (call from a catch block).
FLOWPOOL_API std::string describe_current_exception();

/// One job's terminal state, on its way from a worker to the aggregator.
template <class Result>
struct outcome {
  std::uint64_t id = 0;   ///< submission order (the reorder window's index)
  std::uint64_t key = 0;  ///< the id it is reported under (the engine's set_key; else id)
  job_status status = job_status::succeeded;
  error_kind kind = error_kind::exception;
  int worker = 0;
  std::uint32_t attempts = 0;
  std::chrono::nanoseconds duration{0};
  std::optional<Result> value;  ///< set when succeeded
  std::string message;          ///< set when failed
};

/// The aggregator's state and rules: every terminal outcome is counted once
/// (succeeded, failed or cancelled), a failure's error is kept, a success's value
/// goes to the aggregator (or, for a stage before the last of a graph run, is
/// offered to the next stage), and the on_job_done hook sees every job. In ordered
/// mode outcomes wait in a reorder window until their turn. An aggregator or hook
/// that throws fails the run (through `on_failure`) and is not called again.
///
/// A hand-off to the next stage may be refused (no room there): the outcome then
/// stays here, *stalled*, in order, until `retry_stalled()` after the next stage's
/// wake-up. The engine keeps its workers from pulling while outcomes are stalled.
///
/// Thread-safety: one thread at a time (the engine's serial node, or wait() once
/// no task runs), except next() and the published counts, which any thread may read.
///
/// @code
///   delivery<int> d(/*ordered=*/true, [&](int&& v) { sum += v; }, nullptr, on_failure, stop);
///   std::vector<outcome<int>> batch = ...;   // from a worker, any order
///   d.fold(batch);                           // delivers the ones whose turn it is
///   d.flush(/*end=*/next_id, /*cancelled=*/false);  // at the end: whatever remains
/// @endcode
template <class Result>
class delivery {
 public:
  using outcome_t = outcome<Result>;
  using aggregate_fn = std::function<void(Result&&)>;
  /// `f(result, wake)` takes the result and returns true, or returns false (leaving
  /// it as it was) after arranging for `*wake` to be called once there is room. With
  /// a null `wake` it may block, and must take the result.
  using forward_fn = std::function<bool(Result&, const std::function<void()>*)>;
  using hook_fn = std::function<void(const job_record&)>;
  using failure_fn = std::function<void(job_error)>;

  /// `on_job_done`: the hook (may be empty), not copied: it must outlive this object
  /// (the engine passes its options' own, so the user's functor is the one called).
  /// `on_failure`: the aggregator or the hook threw (the job_error says which); the
  /// run must fail. `stop`: the run's cancellation, read in ordered mode.
  delivery(bool ordered, aggregate_fn aggregate, const hook_fn& on_job_done, failure_fn on_failure,
           std::stop_token stop)
      : ordered_(ordered),
        aggregate_(std::move(aggregate)),
        hook_(on_job_done),
        on_failure_(std::move(on_failure)),
        stop_(std::move(stop)) {}

  delivery(bool, aggregate_fn, hook_fn&&, failure_fn, std::stop_token) = delete;  // the hook must outlive it
  delivery(const delivery&) = delete;
  delivery& operator=(const delivery&) = delete;

  /// Hands successes to `f` instead of the aggregator; `wake` is what `f` is given
  /// to call back (it must outlive the run). Before the first fold.
  void set_forward(forward_fn f, const std::function<void()>* wake) {
    forward_ = std::move(f);
    wake_ = wake;
  }
  [[nodiscard]] bool forwards() const noexcept { return static_cast<bool>(forward_); }
  /// Whether delivery publishes its terminal counts too (metrics on), not only the completed count.
  void set_publish_counts(bool on) noexcept { publish_counts_ = on; }
  /// From now on hand-offs may block and are never refused (wait(), the owner's thread).
  void set_blocking() noexcept { blocking_ = true; }

  /// Delivers a worker's batch of terminal outcomes (moving from them): in order
  /// of the batch when unordered (behind any stalled one), by id when ordered.
  void fold(std::vector<outcome_t>& batch) {
    if (!ordered_) {
      std::size_t i = 0;
      if (stalled_.empty()) {
        while (i < batch.size() && deliver(batch[i])) ++i;
      }
      for (; i < batch.size(); ++i) stalled_.push_back(std::move(batch[i]));  // behind the stalled one
    } else {
      for (auto& o : batch) window_.park(std::move(o));
      deliver_in_order();
    }
    publish();
  }

  /// Whether a refused hand-off waits here.
  [[nodiscard]] bool stalled() const noexcept { return !stalled_.empty() || stalled_ordered_; }
  /// Unordered: outcomes waiting here after a refused hand-off (they still count as
  /// pending for the engine's throttle). Ordered: 0 (they wait in the window).
  [[nodiscard]] std::size_t stalled_count() const noexcept { return stalled_.size(); }

  /// Offers the stalled outcomes again, in order, until one is refused.
  void retry_stalled() {
    if (ordered_) {
      deliver_in_order();
    } else {
      while (!stalled_.empty() && deliver(stalled_.front())) stalled_.pop_front();
    }
    publish();
  }

  /// At the end of the run (blocking hand-offs): ordered mode delivers what remains
  /// of ids [next(), end), skipping ids that never came, which after a cancel cut
  /// the order (nothing behind a gap is delivered as succeeded).
  void flush(std::uint64_t end, bool cancelled) {
    if (!ordered_) return;
    for (std::uint64_t id = window_.next(); id < end; ++id) {
      if (auto* o = window_.find(id)) {
        (void)deliver_ordered(*o);  // never refused: blocking
        window_.erase(id);
      } else if (cancelled) {
        cut_ = true;
      }
    }
    publish();
  }

  /// Calls the on_job_done hook for a job that never reached a worker (cancelled in the queue).
  void record_only(const job_record& rec) {
    if (hook_) call_hook(rec);
  }

  /// The id whose turn it is (ordered mode): every earlier one was delivered. Any thread.
  [[nodiscard]] std::uint64_t next() const noexcept { return window_.next(); }

  [[nodiscard]] std::uint64_t succeeded() const noexcept { return succeeded_; }
  [[nodiscard]] std::uint64_t failed() const noexcept { return failed_; }
  [[nodiscard]] std::uint64_t cancelled() const noexcept { return cancelled_; }
  /// The failed jobs' errors (and the aggregator's or hook's, if one threw), in delivery order.
  [[nodiscard]] std::vector<job_error> take_errors() noexcept { return std::move(errors_); }

  /// The counts as last published (once per folded batch): any thread, relaxed.
  [[nodiscard]] std::uint64_t published_completed() const noexcept {
    return completed_pub_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t published_succeeded() const noexcept {
    return succeeded_pub_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t published_failed() const noexcept { return failed_pub_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t published_cancelled() const noexcept {
    return cancelled_pub_.load(std::memory_order_relaxed);
  }
  /// Publishes every count now, whatever set_publish_counts said (the final report).
  void publish_final() noexcept {
    publish_counts_ = true;
    publish();
  }

 private:
  // Ordered mode: delivers the parked outcomes whose turn it is.
  void deliver_in_order() {
    stalled_ordered_ = false;
    while (auto* o = window_.front()) {
      if (!deliver_ordered(*o)) {  // stays parked: the window stops here until a wake-up
        stalled_ordered_ = true;
        break;
      }
      window_.pop_front();
    }
  }

  // Ordered mode, once the run is cancelled: delivery stops at the first job that
  // did not succeed (or never came). Every outcome behind it ends cancelled, even
  // one that succeeded, so what was delivered is a prefix of the input and a rerun
  // of the jobs not succeeded (a resume) continues the output in order.
  bool deliver_ordered(outcome_t& o) {
    if (cut_) {
      o.value.reset();
      o.message.clear();
      o.status = job_status::cancelled;
      o.kind = error_kind::cancelled;
    } else if (o.status != job_status::succeeded && stop_.stop_requested()) {
      cut_ = true;
    }
    return deliver(o);
  }

  // Delivers one terminal outcome. Returns false only when a forward hand-off found
  // no room: then nothing changed, and the outcome must be delivered again later.
  bool deliver(outcome_t& o) {
    switch (o.status) {
      case job_status::succeeded:
        if (aggregator_failed_) {  // the fold is broken: account, do not feed it
          o.status = job_status::cancelled;
          ++cancelled_;
          break;
        }
        try {
          if (forward_) {
            if (!forward_(*o.value, blocking_ ? nullptr : wake_)) return false;
          } else {
            aggregate_(std::move(*o.value));
          }
          ++succeeded_;
        } catch (...) {
          o.status = job_status::failed;
          ++failed_;
          aggregator_failed_ = true;
          errors_.push_back(job_error{o.key, o.attempts, error_kind::aggregator,
                                      "aggregator threw on this job's result: " + describe_current_exception()});
          on_failure_(errors_.back());
        }
        break;
      case job_status::failed:
        ++failed_;
        errors_.push_back(job_error{o.key, o.attempts, o.kind, std::move(o.message)});
        break;
      case job_status::cancelled:
        ++cancelled_;
        break;
    }
    ++delivered_;
    if (hook_) call_hook(job_record{o.key, o.status, o.attempts, o.worker, o.duration});
    return true;
  }

  // The user's on_job_done hook. If it throws, the run fails with that as its
  // cause (the job's own terminal state stays as it was), and the hook is not
  // called again: it is as broken as an aggregator that threw.
  void call_hook(const job_record& rec) {
    if (hook_failed_) return;
    try {
      hook_(rec);
    } catch (...) {
      hook_failed_ = true;
      on_failure_(job_error{rec.job, rec.attempts, error_kind::aggregator,
                            "on_job_done threw on this job's record: " + describe_current_exception()});
    }
  }

  // Single writer, once per batch rather than per job.
  void publish() noexcept {
    completed_pub_.store(delivered_, std::memory_order_relaxed);
    if (!publish_counts_) return;
    succeeded_pub_.store(succeeded_, std::memory_order_relaxed);
    failed_pub_.store(failed_, std::memory_order_relaxed);
    cancelled_pub_.store(cancelled_, std::memory_order_relaxed);
  }

  const bool ordered_;
  aggregate_fn aggregate_;
  const hook_fn& hook_;
  failure_fn on_failure_;
  std::stop_token stop_;
  forward_fn forward_;
  const std::function<void()>* wake_ = nullptr;
  bool publish_counts_ = false;
  bool blocking_ = false;

  reorder_window<outcome_t> window_;  // ordered mode
  bool cut_ = false;                  // ordered mode, cancelled: outcomes from here on end cancelled
  std::deque<outcome_t> stalled_;     // unordered: outcomes waiting for room downstream, in order
  bool stalled_ordered_ = false;      // ordered: the window's head waits for room downstream
  std::uint64_t succeeded_ = 0;
  std::uint64_t failed_ = 0;
  std::uint64_t cancelled_ = 0;
  std::uint64_t delivered_ = 0;
  bool aggregator_failed_ = false;
  bool hook_failed_ = false;
  std::vector<job_error> errors_;

  alignas(64) std::atomic<std::uint64_t> completed_pub_{0};
  std::atomic<std::uint64_t> succeeded_pub_{0};
  std::atomic<std::uint64_t> failed_pub_{0};
  std::atomic<std::uint64_t> cancelled_pub_{0};
};

}  // namespace flowpool::detail
