// flowpool/detail/reorder_window.hpp - the ordered mode's reorder window.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace flowpool::detail {

/// Holds the values that arrived ahead of their turn until every earlier id has
/// been delivered, so they can be delivered in id order. `T` has a member
/// `std::uint64_t id`; ids start at 1 and each is parked at most once.
///
/// A ring indexed by `id & (size - 1)` that holds ids [next(), next() + size). It is
/// allocated as it is used: empty until the first park, 64 slots then, doubling when
/// an id lands past its end, so it never grows beyond twice the span of ids in
/// flight (which the engine bounds by its window).
///
/// Thread-safety: one thread at a time uses it (the engine's serial node, or
/// finish() after quiescence), except next(), which any thread may read: the
/// engine's workers use it to stay inside the window.
///
/// @code
///   reorder_window<outcome> w;
///   w.park(std::move(o3));                       // id 3 came first: it waits
///   w.park(std::move(o1));
///   while (auto* o = w.front()) { deliver(*o); w.pop_front(); }  // delivers 1, then stops (2 is missing)
/// @endcode
template <class T>
class reorder_window {
 public:
  /// Parks `v`, whose id must be at least next() and not parked yet.
  void park(T&& v) {
    const std::uint64_t base = next_.load(std::memory_order_relaxed);
    if (v.id - base >= ring_.size()) grow(v.id - base);
    ring_[index(v.id)].emplace(std::move(v));
  }

  /// The parked value with id `id`, or null.
  [[nodiscard]] T* find(std::uint64_t id) {
    if (ring_.empty()) return nullptr;
    auto& slot = ring_[index(id)];
    return slot && slot->id == id ? &*slot : nullptr;
  }
  /// The value whose turn it is (id next()), or null when it has not arrived.
  [[nodiscard]] T* front() { return find(next_.load(std::memory_order_relaxed)); }

  /// Frees the front value's slot and moves the turn on to the next id.
  void pop_front() {
    const std::uint64_t id = next_.load(std::memory_order_relaxed);
    if (find(id) != nullptr) ring_[index(id)].reset();
    next_.store(id + 1, std::memory_order_release);
  }
  /// Frees the slot of `id` (parked or not) without moving the turn on.
  void erase(std::uint64_t id) {
    if (find(id) != nullptr) ring_[index(id)].reset();
  }

  /// The id whose turn it is: every id before it was delivered. Any thread.
  [[nodiscard]] std::uint64_t next() const noexcept { return next_.load(std::memory_order_acquire); }
  /// Slots allocated (0 until the first park; a power of two after).
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }

 private:
  [[nodiscard]] std::size_t index(std::uint64_t id) const noexcept {
    return static_cast<std::size_t>(id & (ring_.size() - 1));
  }
  // Grows to hold an id `span` past next(). Every parked id is in [next(), next() +
  // old size), so no two collide in the larger ring.
  void grow(std::uint64_t span) {
    std::size_t size = ring_.empty() ? 64 : ring_.size();
    while (size <= span) size *= 2;
    std::vector<std::optional<T>> bigger(size);
    for (auto& slot : ring_) {
      if (slot) bigger[static_cast<std::size_t>(slot->id & (size - 1))] = std::move(slot);
    }
    ring_.swap(bigger);
  }

  std::vector<std::optional<T>> ring_;  // a power-of-two ring, or empty
  std::atomic<std::uint64_t> next_{1};
};

}  // namespace flowpool::detail
