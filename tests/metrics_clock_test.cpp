// detail::metrics_clock alone: tick differences against steady_clock, clamping, and no overflow.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <thread>

#include "flowpool/detail/metrics_clock.hpp"

using namespace std::chrono_literals;

namespace {
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

TEST_CASE("metrics_clock: a tick read maps onto steady_clock between the reads around it", "[metrics]") {
  const flowpool::detail::metrics_clock mc;
  for (int i = 0; i < 100; ++i) {
    const std::int64_t before = steady_ns();
    const std::uint64_t t = mc.ticks();
    const std::int64_t after = steady_ns();
    // A preemption only widens [before, after]; 1 ms covers the anchor's and the
    // rate's error over this short test.
    CAPTURE(i, before, after, mc.ns_at(t));
    CHECK(mc.ns_at(t) >= before - 1'000'000);
    CHECK(mc.ns_at(t) <= after + 1'000'000);
  }
}

TEST_CASE("metrics_clock: tick differences measure what steady_clock measures", "[metrics]") {
  const flowpool::detail::metrics_clock mc;
  const std::int64_t s0_outer = steady_ns();
  const std::uint64_t t0 = mc.ticks();
  const std::int64_t s0_inner = steady_ns();
  std::this_thread::sleep_for(20ms);
  const std::int64_t s1_inner = steady_ns();
  const std::uint64_t t1 = mc.ticks();
  const std::int64_t s1_outer = steady_ns();
  const std::int64_t ticks_ns = mc.ns_between(t0, t1);
  CAPTURE(ticks_ns, s1_inner - s0_inner, s1_outer - s0_outer);
  // The interval lies between the inner and the outer steady_clock intervals, up to
  // the rate's calibration error (2% is far above it) and 1 ms.
  CHECK(static_cast<double>(ticks_ns) >= 0.98 * static_cast<double>(s1_inner - s0_inner) - 1e6);
  CHECK(static_cast<double>(ticks_ns) <= 1.02 * static_cast<double>(s1_outer - s0_outer) + 1e6);
}

TEST_CASE("metrics_clock: differences clamp at 0, never wrap, and ticks_in saturates", "[metrics]") {
  const flowpool::detail::metrics_clock mc;
  const std::uint64_t t = mc.ticks();
  CHECK(mc.ns_between(t, t) == 0);
  CHECK(mc.ns_between(t + 5, t) == 0);  // another core's tick a little ahead: waited 0
  // Differences of 2^61 and 2^62 ticks (years) stay positive and ordered: no overflow.
  const std::int64_t a = mc.ns_between(0, std::uint64_t{1} << 61);
  const std::int64_t b = mc.ns_between(0, std::uint64_t{1} << 62);
  CHECK(a > 0);
  CHECK(b > a);
  // The tick 10 ms from now, bracketed by two reads.
  const std::uint64_t before = mc.ticks();
  const std::uint64_t due = mc.ticks_in(10ms);
  const std::uint64_t after = mc.ticks();
  CHECK(static_cast<double>(mc.ns_between(before, due)) >= 0.98 * 10e6);
  CHECK(static_cast<double>(mc.ns_between(after, due)) <= 1.02 * 10e6);
  CHECK(mc.ticks_in(-5ms) >= before);  // a negative delay is now
  CHECK(mc.ticks_in(std::chrono::nanoseconds::max()) > after);
}
