// flowpool/job_context.hpp - what a running job knows about itself and its run.
#pragma once

/// @file
/// `flowpool::job_context`: a job's id, worker, attempt and deadline, and
/// cooperative cancellation (`stop_requested`, `throw_if_stop_requested`).

#include <chrono>
#include <cstdint>
#include <stop_token>

#include "flowpool/error.hpp"

namespace flowpool {

namespace detail {
/// Tag of job_context's borrowing constructor (engine use only).
struct borrow_stop_token_t {
  explicit borrow_stop_token_t() = default;
};
}  // namespace detail

/// Passed by reference to every job. It tells the job its id, which worker
/// runs it, which attempt this is, and whether the run is being cancelled.
///
/// Thread-safety: a context belongs to one running attempt; use it only from
/// the thread that runs the job. `stop_requested()` may be polled as often as
/// you like: it is one relaxed-cost atomic load (plus a clock read when the
/// attempt has a deadline).
///
/// @code
///   auto work = [](const std::string& path, flowpool::job_context& ctx) {
///     std::uint64_t sum = 0;
///     for (auto block : blocks_of(path)) {
///       ctx.throw_if_stop_requested();   // returns early on cancel: job counts as cancelled
///       sum += checksum(block);
///     }
///     return sum;
///   };
/// @endcode
class job_context {
 public:
  /// The clock of deadlines: monotonic, so wall-clock changes never fire one.
  using clock = std::chrono::steady_clock;

  /// Builds a context. flowpool does this for you; tests may build their own.
  job_context(std::uint64_t id, int worker, std::uint32_t attempt, std::stop_token stop,
              clock::time_point deadline = clock::time_point::max()) noexcept
      : id_(id), worker_(worker), attempt_(attempt), own_(std::move(stop)), deadline_(deadline) {}

  /// Builds a context that refers to `stop` instead of holding a copy: the engine
  /// uses it so that a job costs no reference-count traffic on the shared stop
  /// state. `stop` must outlive the context.
  job_context(detail::borrow_stop_token_t /*tag*/, std::uint64_t id, int worker, std::uint32_t attempt,
              const std::stop_token& stop, clock::time_point deadline = clock::time_point::max()) noexcept
      : id_(id), worker_(worker), attempt_(attempt), borrowed_(&stop), deadline_(deadline) {}

  /// The job's id: its 1-based submission sequence number, stable across retries.
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  /// Which worker (1..N) runs this attempt.
  [[nodiscard]] int worker() const noexcept { return worker_; }
  /// The attempt number, 1 for the first try.
  [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
  /// The deadline of this attempt (`time_point::max()` when none is set).
  [[nodiscard]] clock::time_point deadline() const noexcept { return deadline_; }

  /// True once the run is cancelled (cancel(), run deadline, fail-fast) or this
  /// attempt's deadline has passed. C++ cannot pre-empt a running function:
  /// a job that wants to stop early must poll this.
  [[nodiscard]] bool stop_requested() const noexcept {
    return token().stop_requested() ||
           (deadline_ != clock::time_point::max() && clock::now() >= deadline_);
  }
  /// A `std::stop_token` that fires on run cancellation (not on the attempt
  /// deadline), for APIs that take one, e.g. `std::condition_variable_any::wait`.
  [[nodiscard]] std::stop_token stop_token() const noexcept { return token(); }

  /// Throws `flowpool::error(errc::cancelled)` if `stop_requested()`. A job that
  /// lets this exception escape is recorded as cancelled (or as a timeout, if
  /// its own deadline passed), not as failed.
  void throw_if_stop_requested() const {
    if (stop_requested()) detail::throw_error(errc::cancelled, "job stopped: run cancelled or deadline passed");
  }

 private:
  [[nodiscard]] const std::stop_token& token() const noexcept { return borrowed_ != nullptr ? *borrowed_ : own_; }

  std::uint64_t id_;
  int worker_;
  std::uint32_t attempt_;
  std::stop_token own_;                        // the token given to the public constructor
  const std::stop_token* borrowed_ = nullptr;  // the engine's token, when it lends one
  clock::time_point deadline_;
};

}  // namespace flowpool
