// flowpool/detail/wait_hold.hpp - RAII over a flow graph's wait count.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <oneapi/tbb/flow_graph.h>

#include <atomic>
#include <cstddef>
#include <utility>

namespace flowpool::detail {

/// Reservations of a flow graph's wait count: while any is held, `wait_for_all()`
/// on that graph does not return, even with no task in flight. The engine holds one
/// for each thing that is not a task but will still make work: a worker token on its
/// way in, a job waiting out a retry backoff, a stalled hand-off, a wake-up on its
/// way to the serial node. Taken by the constructor (`graph.reserve_wait()` per
/// reservation), given back one at a time by `release_one()` and the rest by the
/// destructor, so none is ever forgotten on an early return or an exception.
///
/// Thread-safety: one object is used by one thread at a time (it may be moved to
/// another thread, for example into a task); different objects on the same graph
/// may be used concurrently (the graph's count is atomic).
///
/// @code
///   wait_holds tokens(graph, 2);   // two tokens decided under a lock
///   lock.unlock();
///   for (int i = 0; i < 2; ++i) { node.try_put(token{}); tokens.release_one(); }
/// @endcode
class wait_holds {
 public:
  wait_holds() noexcept = default;
  /// Takes `count` reservations on `g`.
  wait_holds(tbb::flow::graph& g, std::size_t count) : g_(&g), count_(count) {
    for (std::size_t i = 0; i < count; ++i) g.reserve_wait();
  }
  wait_holds(wait_holds&& o) noexcept : g_(o.g_), count_(std::exchange(o.count_, 0)) {}
  wait_holds& operator=(wait_holds&& o) noexcept {
    if (this != &o) {
      reset();
      g_ = o.g_;
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  wait_holds(const wait_holds&) = delete;
  wait_holds& operator=(const wait_holds&) = delete;
  ~wait_holds() { reset(); }

  /// Takes over `o`'s reservations (on the same graph).
  void merge(wait_holds&& o) noexcept {
    if (o.count_ == 0) return;
    if (count_ == 0) g_ = o.g_;
    count_ += std::exchange(o.count_, 0);
  }
  /// Gives one reservation back; one must be held.
  void release_one() noexcept {
    --count_;
    g_->release_wait();
  }
  /// Gives every reservation back.
  void reset() noexcept {
    for (; count_ > 0; --count_) g_->release_wait();
  }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }

 private:
  tbb::flow::graph* g_ = nullptr;
  std::size_t count_ = 0;
};

/// One reservation that any of several threads may give back, and only the first
/// one's call counts: a pool's input reservation, released by close(), by cancel()
/// or by the destructor, whichever comes first.
///
/// Thread-safety: release() is safe from any thread, concurrently.
///
/// @code
///   once_hold input(graph);   // wait() blocks until...
///   input.release();          // ...close() or cancel() lets it return
/// @endcode
class once_hold {
 public:
  /// Holds nothing (already released).
  once_hold() noexcept { released_.store(true, std::memory_order_relaxed); }
  /// Takes one reservation on `g`.
  explicit once_hold(tbb::flow::graph& g) : g_(&g) { g.reserve_wait(); }
  once_hold(const once_hold&) = delete;
  once_hold& operator=(const once_hold&) = delete;
  ~once_hold() { release(); }

  /// Gives the reservation back, unless it was already. Returns whether this call did.
  bool release() noexcept {
    if (released_.exchange(true, std::memory_order_acq_rel)) return false;
    g_->release_wait();
    return true;
  }

 private:
  tbb::flow::graph* g_ = nullptr;
  std::atomic<bool> released_{false};
};

}  // namespace flowpool::detail
