// flowpool/detail/saturating.hpp - time arithmetic that saturates instead of overflowing.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <chrono>

namespace flowpool::detail {

/// `t + d`, saturated: `time_point::max()` ("no deadline") when the sum would not
/// fit, and `t` for a duration <= 0. Any duration type, without overflow in its
/// conversion (anything beyond about 146 years from `t` counts as "never").
template <class Clock, class Rep, class Period>
[[nodiscard]] typename Clock::time_point saturating_add(typename Clock::time_point t,
                                                        std::chrono::duration<Rep, Period> d) noexcept {
  using time_point = typename Clock::time_point;
  if (!(d > std::chrono::duration<Rep, Period>::zero())) return t;
  const auto room = time_point::max() - t;  // >= 0
  // Compared in floating point first: the conversion of a huge `d` to the
  // clock's ticks would overflow. Half the room leaves a margin for its rounding.
  if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(room) / 2) return time_point::max();
  return t + std::chrono::duration_cast<typename Clock::duration>(d);
}

/// `d` in `To`'s units, saturated at `To::max()` (and `To::zero()` below zero).
template <class To, class Rep, class Period>
[[nodiscard]] To saturating_duration(std::chrono::duration<Rep, Period> d) noexcept {
  if (!(d > std::chrono::duration<Rep, Period>::zero())) return To::zero();
  if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(To::max()) / 2) return To::max();
  return std::chrono::duration_cast<To>(d);
}

/// `d * 2`, saturated at `duration::max()`.
template <class Rep, class Period>
[[nodiscard]] std::chrono::duration<Rep, Period> saturating_double(std::chrono::duration<Rep, Period> d) noexcept {
  using duration = std::chrono::duration<Rep, Period>;
  return d > duration::max() / 2 ? duration::max() : d * 2;
}

}  // namespace flowpool::detail
