// detail::run_metrics and its pieces alone (id_ring, atomic_histogram): no engine, no TBB.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "flowpool/detail/run_metrics.hpp"
#include "support/concurrency_kit.hpp"

using flowpool::attempt_event;
using flowpool::attempt_status;
using flowpool::metrics_options;
using flowpool::metrics_snapshot;
using flowpool::detail::attempt_span;
using flowpool::detail::id_ring;
using flowpool::detail::run_metrics;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

TEST_CASE("id_ring: a value per queued id survives growth and wrap-around", "[metrics]") {
  const std::uint64_t seed = fp_test::base_seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  id_ring ring;
  std::deque<std::uint64_t> queued;  // ids in the FIFO, oldest first
  std::uint64_t next_id = 1;
  std::size_t deepest = 0;
  for (int step = 0; step < 200'000; ++step) {
    // Random bursts in and out, so the depth (and the ring) grows and shrinks.
    const bool in = queued.empty() || rng() % 100 < (step < 100'000 ? 55U : 45U);
    if (in) {
      const std::uint64_t oldest = queued.empty() ? next_id : queued.front();
      ring.put(next_id, next_id * 7919, oldest);
      queued.push_back(next_id++);
      deepest = std::max(deepest, queued.size());
    } else {
      REQUIRE(ring.at(queued.front()) == queued.front() * 7919);
      queued.pop_front();
    }
  }
  for (const std::uint64_t id : queued) REQUIRE(ring.at(id) == id * 7919);
  // It grew to the deepest queue seen, rounded up to a power of two, and no further.
  CHECK(ring.capacity() >= deepest);
  CHECK(ring.capacity() < 2 * std::max<std::size_t>(deepest, 64));
}

TEST_CASE("atomic_histogram: the same buckets, count, sum and max as a plain histogram", "[metrics]") {
  std::mt19937_64 rng(fp_test::base_seed());
  flowpool::detail::atomic_histogram a;
  flowpool::histogram plain;
  for (int i = 0; i < 10'000; ++i) {
    const auto ns = static_cast<std::int64_t>(rng() >> (rng() % 64));
    a.add(ns);
    plain.record(std::chrono::nanoseconds(ns));
  }
  a.add(-5);  // a negative sample (two cores' clocks) counts as 0
  plain.record(std::chrono::nanoseconds(0));
  flowpool::histogram read;
  a.read_into(read);
  CHECK(read.buckets == plain.buckets);
  CHECK(read.count == plain.count);
  CHECK(read.sum_ns == plain.sum_ns);
  CHECK(read.max_ns == plain.max_ns);
}

TEST_CASE("run_metrics: off measures nothing and reads nothing", "[metrics]") {
  const run_metrics m(metrics_options{}, 4, clk::now());
  CHECK_FALSE(m.on());
  CHECK(m.ticks() == 0);
  CHECK(m.first_due() == clk::time_point::max());
  metrics_snapshot s;
  m.read_into(s, false);
  CHECK(s.started == 0);
  CHECK(s.busy_time.count() == 0);
  CHECK(s.queue_wait.count == 0);
}

TEST_CASE("run_metrics: bad intervals are rejected with the option's name", "[metrics]") {
  metrics_options o;
  o.on_snapshot = [](const metrics_snapshot&) {};
  o.interval = 0ms;
  CHECK_THROWS_WITH(run_metrics(o, 1, clk::now()), Catch::Contains("interval must be > 0"));
  metrics_options t;
  t.trace_limit = 100;
  t.sample_period = 0ms;
  CHECK_THROWS_WITH(run_metrics(t, 1, clk::now()), Catch::Contains("sample_period must be > 0"));
}

TEST_CASE("run_metrics: batches add up per worker: started, busy time, waits and run times", "[metrics]") {
  metrics_options o;
  o.enabled = true;
  run_metrics m(o, 3, clk::now());
  REQUIRE(m.on());
  const auto& mc = m.tick_clock();
  std::int64_t batches_ns = 0;
  std::uint64_t attempts = 0;
  for (int round = 0; round < 50; ++round) {
    for (int wid = 1; wid <= 3; ++wid) {
      const std::uint64_t ready = mc.ticks();
      const std::uint64_t t0 = m.begin_batch(wid);
      for (int k = 0; k < wid; ++k) {
        attempt_span span;
        span.start = mc.ticks();
        span.end = mc.ticks();
        span.ns = mc.ns_between(span.start, span.end);
        m.attempt(wid, ready, span);
        ++attempts;
      }
      batches_ns += m.end_batch(wid, t0, static_cast<std::uint64_t>(wid));
    }
  }
  metrics_snapshot s;
  m.read_into(s, true);
  CHECK(s.started == attempts);
  CHECK(s.queue_wait.count == attempts);
  CHECK(s.run_time.count == attempts);
  CHECK(s.busy_time.count() == batches_ns);  // final: no running batch is added
}

TEST_CASE("run_metrics: busy time read during batches never goes back and is never torn", "[metrics]") {
  metrics_options o;
  o.enabled = true;
  run_metrics m(o, 1, clk::now());
  std::atomic<bool> done{false};
  std::int64_t total = 0;
  std::thread writer([&] {
    for (int i = 0; i < 20'000; ++i) {
      const std::uint64_t t0 = m.begin_batch(1);
      total += m.end_batch(1, t0, 1);
    }
    done.store(true);
  });
  std::int64_t last = 0;
  int reads = 0;
  while (!done.load() || reads < 10) {
    metrics_snapshot s;
    m.read_into(s, false);
    REQUIRE(s.busy_time.count() >= last);
    last = s.busy_time.count();
    ++reads;
  }
  writer.join();
  metrics_snapshot s;
  m.read_into(s, true);
  // Live reads may have counted a running batch up to their own clock read: the
  // final figure is the larger of that and the batches' sum, never less than either.
  CHECK(s.busy_time.count() >= total);
  CHECK(s.busy_time.count() >= last);
  CHECK(s.started == 20'000);
}

TEST_CASE("run_metrics: the trace keeps the first attempts up to its share and counts the rest", "[metrics]") {
  metrics_options o;
  o.trace_limit = 160;  // samples may take 160 / 16 = 10, so attempts get 160 - 2 * 10 = 140
  const auto start = clk::now();
  run_metrics m(o, 2, start);
  REQUIRE(m.tracing());
  const auto& mc = m.tick_clock();
  for (std::uint64_t id = 1; id <= 300; ++id) {
    const int wid = static_cast<int>(id % 2) + 1;
    const std::uint64_t t0 = m.begin_batch(wid);
    attempt_span span;
    span.start = mc.ticks();
    span.end = span.start;
    m.attempt(wid, t0, span);
    m.trace(wid, span, attempt_event{id, 1, wid, attempt_status::succeeded, 0, 0});
    m.end_batch(wid, t0, 1);
  }
  m.add_final_sample();
  flowpool::trace_data t;
  m.trace_into(t);
  REQUIRE(t.attempts.size() == 140);
  for (std::size_t i = 0; i < t.attempts.size(); ++i) {
    CHECK(t.attempts[i].job <= 140);  // the first ones offered are the ones kept
    if (i > 0) CHECK(t.attempts[i - 1].start_ns <= t.attempts[i].start_ns);
  }
  CHECK(t.samples.size() == 2);  // the start and the final sample
  CHECK(t.dropped == 160);
}

TEST_CASE("run_metrics: gauge samples thin out to stay within their share and cover the run", "[metrics]") {
  metrics_options o;
  o.trace_limit = 16 * 8;  // room for 8 samples
  o.sample_period = 1ms;
  const auto start = clk::now();
  run_metrics m(o, 1, start);
  auto now = start;
  REQUIRE(m.first_due() == start + 1ms);
  std::size_t calls = 0;
  while (now < start + 1s) {
    now = std::max(now + 1ms, m.first_due());
    const auto next = m.on_timer(now, calls, 1, [] { return metrics_snapshot{}; });
    REQUIRE(next > now);
    ++calls;
  }
  m.add_final_sample();
  flowpool::trace_data t;
  m.trace_into(t);
  CAPTURE(calls);
  CHECK(t.samples.size() <= 8);
  CHECK(t.samples.size() >= 4);
  CHECK(t.dropped % 2 == 0);  // two events per dropped sample
  CHECK(t.dropped > 0);
  // The samples are in time order and still span the run: the first one is the start.
  CHECK(t.samples.front().t_ns ==
        std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count());
  for (std::size_t i = 1; i < t.samples.size(); ++i) CHECK(t.samples[i - 1].t_ns <= t.samples[i].t_ns);
}

TEST_CASE("run_metrics: the snapshot callback runs every interval, and never again once it threw", "[metrics]") {
  int calls = 0;
  metrics_options o;
  o.interval = 10ms;
  o.on_snapshot = [&](const metrics_snapshot& s) {
    ++calls;
    if (s.submitted == 3) throw std::runtime_error("broken exporter");
  };
  const auto start = clk::now();
  run_metrics m(o, 1, start);
  REQUIRE(m.first_due() == start + 10ms);
  std::uint64_t n = 0;
  auto now = start;
  for (int i = 0; i < 10; ++i) {
    now = m.first_due();
    if (now == clk::time_point::max()) break;
    (void)m.on_timer(now, 0, 0, [&] {
      metrics_snapshot s;
      s.submitted = ++n;
      return s;
    });
  }
  CHECK(calls == 3);
  CHECK(m.first_due() == clk::time_point::max());
}
