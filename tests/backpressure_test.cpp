// Bounded ingress: blocking submit, try_submit, submit_for, and wake-up on cancel.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;

namespace {

// A pool with one worker stuck on a gate, so the queue fills deterministically.
struct gated_pool {
  std::atomic<bool> open{false};
  flowpool::pool<int, int> pool;

  explicit gated_pool(std::ptrdiff_t capacity)
      : pool(
            [capacity] {
              flowpool::pool_options o;
              o.workers = 1;
              o.capacity = capacity;
              return o;
            }(),
            [this](const int& j, flowpool::job_context& ctx) {
              while (!open.load() && !ctx.stop_requested()) std::this_thread::sleep_for(200us);
              return j;
            },
            [](int&&) {}) {}

  // Waits until the worker holds one job and `depth` jobs wait.
  void wait_for_state(std::size_t depth) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto s = pool.snapshot();
      if (s.busy_workers == 1 && s.queue_depth == depth) return;
      std::this_thread::sleep_for(200us);
    }
    FAIL("pool never reached busy=1, depth=" << depth);
  }
};

}  // namespace

TEST_CASE("a producer blocks at capacity and the depth never exceeds it", "[backpressure]") {
  const std::ptrdiff_t cap = GENERATE(1, 4, 16);
  CAPTURE(cap);
  gated_pool g(cap);
  std::atomic<int> accepted{0};
  std::thread producer([&] {
    for (int i = 0; i < static_cast<int>(cap) + 10; ++i) {
      if (!g.pool.submit(i)) return;  // never expected: checked through `accepted` below
      accepted.fetch_add(1);
    }
  });
  g.wait_for_state(static_cast<std::size_t>(cap));
  std::this_thread::sleep_for(50ms);
  // One job running, `cap` waiting, the producer blocked on the next.
  CHECK(accepted.load() == static_cast<int>(cap) + 1);
  CHECK(g.pool.snapshot().queue_depth == static_cast<std::size_t>(cap));
  g.open = true;
  producer.join();
  CHECK(accepted.load() == static_cast<int>(cap) + 10);
  g.pool.close();
  const auto r = g.pool.wait();
  CHECK(r.succeeded == static_cast<std::uint64_t>(cap) + 10);
  CHECK(r.max_queue_depth <= static_cast<std::size_t>(cap));
  CHECK(r.max_queue_depth == static_cast<std::size_t>(cap));
}

TEST_CASE("try_submit returns false when full; submit_for times out then succeeds", "[backpressure]") {
  gated_pool g(2);
  REQUIRE(g.pool.submit(0));
  g.wait_for_state(0);
  REQUIRE(g.pool.try_submit(1));
  REQUIRE(g.pool.try_submit(2));
  CHECK_FALSE(g.pool.try_submit(3));  // full
  CHECK_FALSE(g.pool.cancelled());

  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(g.pool.submit_for(3, 30ms));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 25ms);  // it really waited (no upper bound: noisy machine)

  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    g.open = true;
  });
  CHECK(g.pool.submit_for(3, 10s));  // room appears once the gate opens
  opener.join();
  g.pool.close();
  const auto r = g.pool.wait();
  CHECK(r.succeeded == 4);
  CHECK(r.max_queue_depth <= 2);
}

TEST_CASE("producers blocked in submit wake up on cancel with a clear answer", "[backpressure][cancel]") {
  const int producers = GENERATE(1, 3);
  CAPTURE(producers);
  gated_pool g(2);
  std::vector<std::future<bool>> results;
  REQUIRE(g.pool.submit(0));
  g.wait_for_state(0);
  REQUIRE(g.pool.submit(1));
  REQUIRE(g.pool.submit(2));
  for (int p = 0; p < producers; ++p) {
    results.push_back(std::async(std::launch::async, [&g] { return g.pool.submit(99); }));
  }
  std::this_thread::sleep_for(30ms);
  for (auto& f : results) REQUIRE(f.wait_for(0ms) == std::future_status::timeout);  // all blocked
  g.pool.cancel();
  for (auto& f : results) {
    REQUIRE(f.wait_for(5s) == std::future_status::ready);  // woke up, did not hang
    CHECK_FALSE(f.get());                                   // and said "not accepted"
  }
  CHECK(g.pool.cancelled());
  CHECK_FALSE(g.pool.try_submit(5));  // after cancel: false, never blocks
  const auto r = g.pool.wait();
  CHECK(r.status == flowpool::run_status::cancelled);
  CHECK(r.submitted == 3);
  CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
  CHECK(r.cancelled >= 2);  // the two queued jobs never started
}

TEST_CASE("a producer blocked in submit wakes on close with errc::closed", "[backpressure]") {
  gated_pool g(1);
  REQUIRE(g.pool.submit(0));
  g.wait_for_state(0);
  REQUIRE(g.pool.submit(1));
  auto blocked = std::async(std::launch::async, [&g] {
    try {
      (void)g.pool.submit(2);
      return flowpool::errc::internal;
    } catch (const flowpool::error& e) {
      return e.code();
    }
  });
  std::this_thread::sleep_for(20ms);
  g.pool.close();
  REQUIRE(blocked.wait_for(5s) == std::future_status::ready);
  CHECK(blocked.get() == flowpool::errc::closed);
  g.open = true;
  const auto r = g.pool.wait();
  CHECK(r.succeeded == 2);
}

TEST_CASE("a blocked producer gets in once one slot frees, even if workers then stall", "[backpressure]") {
  // Regression: producers are woken in bulk at a low watermark; with capacity 8
  // one freed slot leaves the depth above it. The producer must still proceed.
  std::atomic<int> permits{0};
  flowpool::pool_options o;
  o.workers = 1;
  o.capacity = 8;
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        while (permits.load() <= 0 && !ctx.stop_requested()) std::this_thread::sleep_for(100us);
        permits.fetch_sub(1);
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 9; ++i) REQUIRE(pool.submit(i));  // 1 running (stalled) + 8 queued
  auto blocked = std::async(std::launch::async, [&pool] { return pool.submit(100); });
  std::this_thread::sleep_for(20ms);
  REQUIRE(blocked.wait_for(0ms) == std::future_status::timeout);  // full: it must block
  permits = 1;  // exactly one job finishes, the next one stalls again
  REQUIRE(blocked.wait_for(5s) == std::future_status::ready);
  CHECK(blocked.get());
  permits = 1000;
  pool.close();
  const auto r = pool.wait();
  CHECK(r.succeeded == 10);
  CHECK(r.max_queue_depth == 8);
}
