// flowpool/detail/metrics_clock.hpp - the clock the metrics read on the hot path.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

namespace flowpool::detail {

/// The clock metrics read on the hot path: the invariant TSC on x86 (a few ns per
/// read, against tens of ns for a vDSO steady_clock read under a hypervisor),
/// else steady_clock. The hot path reads raw ticks (`ticks()`: one `rdtsc`) and
/// converts only differences (`ns_between`, a fixed-point multiply); `now_ns()` and
/// `ns_at()` give steady_clock nanoseconds: the TSC rate is calibrated once per
/// process (about 2 ms, on the first pool with metrics on), and each pool anchors it
/// to steady_clock when it starts, so drift is limited to the rate error over one run.
class metrics_clock {
 public:
  metrics_clock() noexcept {
    const double rate = calibration();  // ns per tick, 0 when the TSC is not used
#if defined(__x86_64__) || defined(__i386__)
    if (rate > 0) {
      tsc_ = true;
      mult_ = static_cast<std::uint64_t>(rate * 4294967296.0);
      ticks_per_ns_ = 1.0 / rate;
      const auto [ns, tsc] = paired_read();
      anchor_ns_ = ns;
      anchor_ticks_ = tsc;
      return;
    }
#endif
    anchor_ns_ = steady_ns();
    anchor_ticks_ = static_cast<std::uint64_t>(anchor_ns_);
  }
  /// Now, in ticks: only differences and `ns_at` mean anything. Thread-safe, lock-free.
  [[nodiscard]] std::uint64_t ticks() const noexcept {
#if defined(__x86_64__) || defined(__i386__)
    if (tsc_) return __rdtsc();
#endif
    return static_cast<std::uint64_t>(steady_ns());
  }
  /// Nanoseconds from tick `from` to tick `to`; 0 when `to` is not later (two cores'
  /// TSCs may differ by a few ticks). Never throws.
  [[nodiscard]] std::int64_t ns_between(std::uint64_t from, std::uint64_t to) const noexcept {
    if (to <= from) return 0;
    __extension__ using u128 = unsigned __int128;
    return static_cast<std::int64_t>((static_cast<u128>(to - from) * mult_) >> 32);
  }
  /// Tick `t` in steady_clock nanoseconds (t at or after this clock's creation).
  [[nodiscard]] std::int64_t ns_at(std::uint64_t t) const noexcept {
    return anchor_ns_ + ns_between(anchor_ticks_, t);
  }
  /// Now, in steady_clock nanoseconds. Thread-safe, lock-free.
  [[nodiscard]] std::int64_t now_ns() const noexcept {
    return ns_at(ticks());
  }
  /// The tick `ns` nanoseconds from now (a retry's end of backoff). Never throws.
  [[nodiscard]] std::uint64_t ticks_in(std::chrono::nanoseconds ns) const noexcept {
    const double d = static_cast<double>(std::max<std::int64_t>(0, ns.count())) * ticks_per_ns_;
    return ticks() + (d >= 1.8e19 ? std::uint64_t{1} << 62 : static_cast<std::uint64_t>(d));
  }

 private:
  static std::int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
#if defined(__x86_64__) || defined(__i386__)
  // A steady_clock reading and the TSC at the same moment: the steady read between
  // two TSC reads, the tightest of 16 tries (a try preempted in the middle is
  // never the tightest), the TSC taken as the midpoint.
  static std::pair<std::int64_t, std::uint64_t> paired_read() noexcept {
    std::uint64_t best_gap = ~std::uint64_t{0};
    std::pair<std::int64_t, std::uint64_t> best{0, 0};
    for (int i = 0; i < 16; ++i) {
      const std::uint64_t a = __rdtsc();
      const std::int64_t s = steady_ns();
      const std::uint64_t b = __rdtsc();
      if (b >= a && b - a < best_gap) {
        best_gap = b - a;
        best = {s, a + (b - a) / 2};
      }
    }
    return best;
  }
#endif

  // ns per TSC tick, or 0 when the TSC is not usable (not x86, or not invariant).
  // Over about 2 ms between two paired reads, so a preemption cannot skew it.
  static double calibration() noexcept {
    static const double rate = [] {
#if defined(__x86_64__) || defined(__i386__)
      unsigned a = 0, b = 0, c = 0, d = 0;
      if (__get_cpuid(0x80000007U, &a, &b, &c, &d) == 0 || (d & (1U << 8)) == 0) return 0.0;  // invariant TSC
      const auto [s0, t0] = paired_read();
      while (steady_ns() - s0 < 2'000'000) {
      }
      const auto [s1, t1] = paired_read();
      if (t1 <= t0 || s1 <= s0) return 0.0;
      return static_cast<double>(s1 - s0) / static_cast<double>(t1 - t0);
#else
      return 0.0;
#endif
    }();
    return rate;
  }

  bool tsc_ = false;
  std::uint64_t mult_ = std::uint64_t{1} << 32;  // ns per tick, fixed point with 32 fraction bits
  double ticks_per_ns_ = 1.0;
  std::int64_t anchor_ns_ = 0;
  std::uint64_t anchor_ticks_ = 0;
};

}  // namespace flowpool::detail
