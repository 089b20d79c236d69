// flowpool/detail/retry_queue.hpp - jobs waiting out a retry backoff, and retries due.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <utility>
#include <vector>

namespace flowpool::detail {

/// The retry side of the engine's ingress: jobs in backoff, ordered by when they
/// are due (first in, first out among equal times), and the retries that are due
/// and wait for a worker, oldest first. A job in backoff holds no worker.
///
/// Thread-safety: none of its own; the engine calls it with its ingress lock held.
///
/// @code
///   retry_queue<work_item> q;
///   q.schedule(clock::now() + 50ms, std::make_shared<work_item>(...));
///   q.move_due(clock::now());            // on the timer thread: due ones become ready
///   if (q.has_ready()) run(q.pop_ready());
/// @endcode
template <class Item>
class retry_queue {
 public:
  using clock = std::chrono::steady_clock;
  using item_ptr = std::shared_ptr<Item>;

  /// Puts `item` in backoff until `due`.
  void schedule(clock::time_point due, item_ptr item) { backoff_.push(entry{due, seq_++, std::move(item)}); }

  /// Moves every job due at `now` (due <= now) to the ready list, earliest first.
  /// Returns how many it moved.
  std::size_t move_due(clock::time_point now) {
    std::size_t moved = 0;
    while (!backoff_.empty() && backoff_.top().due <= now) {
      ready_.push_back(backoff_.top().item);
      backoff_.pop();
      ++moved;
    }
    return moved;
  }

  /// When the earliest job in backoff is due; time_point::max() when none is.
  [[nodiscard]] clock::time_point next_due() const {
    return backoff_.empty() ? clock::time_point::max() : backoff_.top().due;
  }

  [[nodiscard]] bool has_ready() const noexcept { return !ready_.empty(); }
  /// The oldest due retry; has_ready() must be true.
  item_ptr pop_ready() {
    item_ptr p = std::move(ready_.front());
    ready_.pop_front();
    return p;
  }

  [[nodiscard]] std::size_t in_backoff() const noexcept { return backoff_.size(); }
  [[nodiscard]] std::size_t ready() const noexcept { return ready_.size(); }
  /// Jobs in backoff plus retries due.
  [[nodiscard]] std::size_t size() const noexcept { return backoff_.size() + ready_.size(); }
  [[nodiscard]] bool empty() const noexcept { return backoff_.empty() && ready_.empty(); }

  /// Empties the queue into `out` (a cancel): the jobs in backoff in due order, then
  /// the ready ones. Returns how many were in backoff.
  std::size_t take_all(std::vector<item_ptr>& out) {
    const std::size_t in_backoff = backoff_.size();
    while (!backoff_.empty()) {
      out.push_back(backoff_.top().item);
      backoff_.pop();
    }
    for (auto& r : ready_) out.push_back(std::move(r));
    ready_.clear();
    return in_backoff;
  }

 private:
  struct entry {
    clock::time_point due;
    std::uint64_t seq;  // first in, first out among equal due times
    item_ptr item;
    bool operator>(const entry& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };
  std::priority_queue<entry, std::vector<entry>, std::greater<>> backoff_;
  std::deque<item_ptr> ready_;
  std::uint64_t seq_ = 0;
};

}  // namespace flowpool::detail
