// Failure handling: retries with backoff, permanent errors, job deadlines, fail-fast, max failures.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {
flowpool::pool_options opts_with(int workers, std::uint32_t attempts, std::chrono::nanoseconds base = 1ms) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = 64;
  o.retry.max_attempts = attempts;
  o.retry.backoff_base = base;
  o.retry.backoff_cap = 50ms;
  return o;
}
}  // namespace

TEST_CASE("a job that fails twice then succeeds counts once as succeeded", "[retry]") {
  auto o = opts_with(2, 5);
  std::map<std::uint64_t, std::uint32_t> final_attempts;  // from the serial hook
  o.on_job_done = [&](const flowpool::job_record& r) { final_attempts[r.job] = r.attempts; };
  std::atomic<int> bad_attempt_numbers{0};
  std::vector<std::atomic<std::uint32_t>> seen(21);
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        if (ctx.attempt() != seen[static_cast<std::size_t>(j)].fetch_add(1) + 1) bad_attempt_numbers.fetch_add(1);
        if (j % 2 == 0 && ctx.attempt() <= 2) throw std::runtime_error("transient " + std::to_string(j));
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 20; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  CHECK(bad_attempt_numbers.load() == 0);  // attempt() counts 1, 2, 3 in order
  CHECK(r.status == flowpool::run_status::ok);
  CHECK(r.succeeded == 20);
  CHECK(r.failed == 0);
  CHECK(r.retried == 20);  // 10 even jobs x 2 retries
  CHECK(r.errors.empty());
  std::uint64_t sum = 0;
  for (auto& [id, attempts] : final_attempts) sum += attempts - 1;
  CHECK(sum == r.retried);
  CHECK(final_attempts[2] == 3);
  CHECK(final_attempts[1] == 1);
}

TEST_CASE("retries stop at max_attempts and the last error is reported", "[retry]") {
  auto o = opts_with(3, 3);
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context& ctx) -> int {
        if (j == 7) throw std::runtime_error("attempt " + std::to_string(ctx.attempt()) + " failed");
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 10; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  CHECK(r.succeeded == 9);
  CHECK(r.failed == 1);
  CHECK(r.retried == 2);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].job == 7);
  CHECK(r.errors[0].attempts == 3);
  CHECK(r.errors[0].kind == flowpool::error_kind::exception);
  CHECK(r.errors[0].message == "attempt 3 failed");
}

TEST_CASE("permanent_error and the retryable predicate stop retries", "[retry]") {
  auto o = opts_with(2, 4);
  o.retry.retryable = [](const flowpool::failure_info& f) {
    try {
      std::rethrow_exception(f.exception);
    } catch (const std::logic_error&) {
      return false;  // a bug, not a transient failure
    } catch (...) {
      return true;
    }
  };
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) -> int {
        if (j == 1) throw flowpool::permanent_error("no such file");
        if (j == 2) throw std::logic_error("bad input");
        if (j == 3) throw std::runtime_error("flaky");
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 4; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  CHECK(r.failed == 3);
  CHECK(r.retried == 3);  // only job 3 was retried (attempts 2, 3, 4)
  for (const auto& e : r.errors) {
    if (e.job == 1) CHECK(e.attempts == 1);
    if (e.job == 2) CHECK(e.attempts == 1);
    if (e.job == 3) CHECK(e.attempts == 4);
  }
}

TEST_CASE("a per-submit retry policy overrides the pool's", "[retry]") {
  auto o = opts_with(1, 1);  // the pool never retries
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context& ctx) -> int {
        if (ctx.attempt() < 3) throw std::runtime_error("not yet");
        return j;
      },
      [](int&&) {});
  flowpool::retry_policy three;
  three.max_attempts = 3;
  three.backoff_base = 1ms;
  REQUIRE(pool.submit(1, three));
  REQUIRE(pool.submit(2));
  flowpool::retry_policy bad;
  bad.max_attempts = 0;
  CHECK_THROWS_AS(pool.submit(3, bad), flowpool::error);
  pool.close();
  const auto r = pool.wait();
  CHECK(r.succeeded == 1);
  CHECK(r.failed == 1);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].job == 2);
}

TEST_CASE("a job waiting out its backoff does not hold a worker slot", "[retry][backoff]") {
  // N=1. Job 1 fails and backs off 300 ms; the other jobs must all run in that gap.
  auto o = opts_with(1, 2, 300ms);
  o.retry.backoff_cap = 300ms;
  std::mutex m;
  std::vector<std::pair<int, clk::time_point>> starts;  // (job, start) for every attempt
  clk::time_point first_failure;
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) -> int {
        {
          const std::lock_guard lk(m);
          starts.emplace_back(j, clk::now());
        }
        if (j == 1 && ctx.attempt() == 1) {
          const std::lock_guard lk(m);
          first_failure = clk::now();
          throw std::runtime_error("first attempt fails");
        }
        std::this_thread::sleep_for(5ms);
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 6; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.succeeded == 6);
  REQUIRE(starts.size() == 7);
  // The retry of job 1 is the last attempt to start: jobs 2..6 ran during its backoff.
  CHECK(starts.back().first == 1);
  for (std::size_t i = 1; i + 1 < starts.size(); ++i) CHECK(starts[i].first != 1);
  // ...and it did wait for its backoff (a lower bound only: safe on a noisy machine).
  CHECK(starts.back().second - first_failure >= 290ms);
}

TEST_CASE("a job in backoff does not stop the workers at capacity 1", "[retry][backoff]") {
  // C=1: job 1 fails and backs off 1 s. The workers keep pulling jobs 2..40 meanwhile
  // (jobs in backoff are bounded by max(C, N * max_batch), not by C), so the retry of
  // job 1 is the last attempt to start. It used to stop the stage for the whole backoff.
  const int n = GENERATE(1, 2);
  CAPTURE(n);
  auto o = opts_with(n, 2, 1s);
  o.capacity = 1;
  o.retry.backoff_cap = 1s;
  std::mutex m;
  std::vector<int> starts;  // the job of every attempt, in start order
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) -> int {
        {
          const std::lock_guard lk(m);
          starts.push_back(j);
        }
        if (j == 1 && ctx.attempt() == 1) throw std::runtime_error("first attempt fails");
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 40; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.succeeded == 40);
  REQUIRE(r.max_queue_depth <= 1);
  REQUIRE(starts.size() == 41);
  CHECK(starts.back() == 1);
}

TEST_CASE("backoff is exponential, capped, and its jitter is deterministic", "[retry][backoff]") {
  flowpool::retry_policy p;
  p.backoff_base = 10ms;
  p.backoff_cap = 70ms;
  CHECK(flowpool::detail::backoff_delay(p, 1, 1) == 10ms);
  CHECK(flowpool::detail::backoff_delay(p, 1, 2) == 20ms);
  CHECK(flowpool::detail::backoff_delay(p, 1, 3) == 40ms);
  CHECK(flowpool::detail::backoff_delay(p, 1, 4) == 70ms);
  CHECK(flowpool::detail::backoff_delay(p, 1, 60) == 70ms);  // no overflow
  p.jitter = 0.5;
  p.seed = 42;
  bool differs = false;
  for (std::uint64_t job = 1; job <= 50; ++job) {
    const auto d = flowpool::detail::backoff_delay(p, job, 2);
    CHECK(d <= 20ms);
    CHECK(d >= 10ms);  // reduced by at most half
    CHECK(d == flowpool::detail::backoff_delay(p, job, 2));  // same seed, same delay
    if (d != flowpool::detail::backoff_delay(p, 1, 2)) differs = true;
  }
  CHECK(differs);
  auto q = p;
  q.seed = 43;
  bool seed_matters = false;
  for (std::uint64_t job = 1; job <= 20; ++job) {
    if (flowpool::detail::backoff_delay(q, job, 2) != flowpool::detail::backoff_delay(p, job, 2)) seed_matters = true;
  }
  CHECK(seed_matters);
}

TEST_CASE("job deadlines: stop_requested turns true, and overruns are timeout failures", "[retry][deadline]") {
  // 100 ms of headroom, so the two quick attempts cannot overrun on a slow sanitized run.
  auto o = opts_with(2, 2);
  o.job_timeout = 100ms;
  std::atomic<int> saw_deadline{0};
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) -> int {
        if (ctx.deadline() != flowpool::job_context::clock::time_point::max()) saw_deadline.fetch_add(1);
        if (j == 1) {  // cooperative: polls and returns early, but too late to count
          while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
          return -1;
        }
        if (j == 2) {  // cooperative, stops by throwing
          while (true) {
            ctx.throw_if_stop_requested();
            std::this_thread::sleep_for(1ms);
          }
        }
        if (j == 3 && ctx.attempt() == 1) {  // ignores the deadline on its first attempt
          std::this_thread::sleep_for(250ms);
          return 3;
        }
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 4; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  CHECK(saw_deadline.load() >= 4);
  CHECK(r.succeeded == 2);  // job 3 (second attempt) and job 4
  CHECK(r.failed == 2);
  CHECK(r.retried == 3);  // jobs 1, 2, 3 were each retried once (timeouts are retryable)
  for (const auto& e : r.errors) {
    CHECK(e.kind == flowpool::error_kind::timeout);
    CHECK(e.attempts == 2);
    CHECK_THAT(e.message, Catch::Contains("exceeded the job timeout of 100 ms"));
  }
}

TEST_CASE("fail_fast: the first final failure cancels the run and is named as the cause", "[policy]") {
  const int n = GENERATE(1, 2, 4);
  CAPTURE(n);
  auto o = opts_with(n, 2);
  o.capacity = 10'000;
  o.on_error = flowpool::error_policy::fail_fast;
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) -> int {
        if (j == 50) throw std::runtime_error("disk full while writing part 50");
        return j + static_cast<int>(fp_test::spin(20'000) & 1U);  // real work: ~10-40 us
      },
      [](int&&) {});
  for (int j = 1; j <= 10'000; ++j) {
    if (!pool.submit(j)) break;
  }
  pool.close();
  const auto r = pool.wait();
  INFO("succeeded=" << r.succeeded << " failed=" << r.failed << " cancelled=" << r.cancelled
                    << " wall_ms=" << std::chrono::duration_cast<std::chrono::milliseconds>(r.wall).count());
  CHECK(r.status == flowpool::run_status::failed);  // not buried under "cancelled"
  REQUIRE(r.cause.has_value());
  CHECK(r.cause->job == 50);
  CHECK(r.cause->attempts == 2);
  CHECK(r.cause->message == "disk full while writing part 50");
  CHECK(r.failed >= 1);
  CHECK(r.succeeded < 5000);  // the run stopped early: most jobs never ran (or were never accepted)
  CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
}

TEST_CASE("max_failures = K cancels once K jobs failed for good", "[policy]") {
  auto o = opts_with(1, 1);
  o.capacity = 1000;
  o.max_failures = 3;
  fp_test::gate all_submitted;  // the run must not stop before all 1000 are in
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context&) -> int {
        if (j == 1) all_submitted.wait();
        if (j % 10 == 0) throw std::runtime_error("bad " + std::to_string(j));
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 1000; ++j) REQUIRE(pool.submit(j));
  all_submitted.open();
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  CHECK(r.failed == 3);  // N=1: nothing else can fail after the third
  REQUIRE(r.cause.has_value());
  CHECK(r.cause->job == 30);
  CHECK(r.cancelled == 1000 - 30);
}

TEST_CASE("collect keeps going and reports every failure", "[policy]") {
  auto o = opts_with(2, 1);
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) -> int {
        if (j % 3 == 0) throw std::runtime_error("bad");
        return j;
      },
      [](int&&) {});
  for (int j = 1; j <= 30; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  CHECK(r.failed == 10);
  CHECK(r.succeeded == 20);
  CHECK(r.errors.size() == 10);
  CHECK_FALSE(r.cause.has_value());
}

TEST_CASE("a run deadline cancels jobs waiting out a backoff", "[retry][deadline]") {
  // Every attempt fails at once and backs off for 5 s; the 300 ms deadline comes first,
  // whatever the machine's speed, so no retry ever runs.
  auto o = opts_with(2, 5, 5s);
  o.retry.backoff_cap = 5s;
  o.timeout = 300ms;
  std::map<std::uint64_t, flowpool::job_record> recs;
  o.on_job_done = [&](const flowpool::job_record& rec) { recs[rec.job] = rec; };
  flowpool::pool<int, int> pool(
      o, [](const int&, flowpool::job_context&) -> int { throw std::runtime_error("always"); }, [](int&&) {});
  for (int j = 1; j <= 4; ++j) {
    if (!pool.submit(j)) break;
  }
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::timed_out);
  REQUIRE(r.submitted >= 1);
  CHECK(r.cancelled == r.submitted);
  CHECK(r.retried == 0);
  CHECK(r.wall < 4s);  // it did not wait out a backoff
  REQUIRE(recs.size() == r.submitted);
  std::uint32_t attempts = 0;
  for (auto& [id, rec] : recs) {
    CHECK(rec.status == flowpool::job_status::cancelled);
    CHECK(rec.attempts <= 1);  // its one real attempt still counts (0 if it never started)
    attempts += rec.attempts;
  }
  CHECK(attempts >= 1);  // at least one job did fail once and entered its backoff
}

TEST_CASE("an aggregator that throws fails the run and names the result", "[policy]") {
  auto o = opts_with(2, 1);
  int folded = 0;
  fp_test::gate all_submitted;  // the failing fold must not refuse later submits
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context&) {
        all_submitted.wait();
        return j;
      },
      [&](int&& v) {
        if (v == 13) throw std::runtime_error("cannot fold 13");
        ++folded;
      });
  for (int j = 1; j <= 40; ++j) REQUIRE(pool.submit(j));
  all_submitted.open();
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  REQUIRE(r.cause.has_value());
  CHECK(r.cause->job == 13);
  CHECK(r.cause->kind == flowpool::error_kind::aggregator);
  CHECK_THAT(r.cause->message, Catch::Contains("cannot fold 13"));
  CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
  CHECK(r.succeeded == static_cast<std::uint64_t>(folded));
}

TEST_CASE("an on_job_done hook that throws fails the run instead of hanging it", "[policy]") {
  auto o = opts_with(2, 1);
  o.capacity = 4;
  int calls = 0;
  o.on_job_done = [&](const flowpool::job_record&) {
    if (++calls == 3) throw std::runtime_error("joblog disk full");
  };
  flowpool::pool<int, int> pool(
      o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  auto producer = std::async(std::launch::async, [&] {
    int accepted = 0;
    for (int j = 0; j < 100; ++j) {
      if (!pool.submit(j)) break;
      ++accepted;
    }
    return accepted;
  });
  REQUIRE(producer.wait_for(10s) == std::future_status::ready);  // woke up: no hang
  (void)producer.get();
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  REQUIRE(r.cause.has_value());
  CHECK_THAT(r.cause->message, Catch::Contains("joblog disk full"));
  CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
}

TEST_CASE("cancel() racing wait() and destruction from another thread is safe", "[cancel]") {
  for (int i = 0; i < 200; ++i) {
    std::thread canceller;
    {
      flowpool::pool_options o;
      o.workers = 2;
      o.capacity = 64;
      auto pool = std::make_unique<flowpool::pool<int, int>>(
          o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
      for (int j = 0; j < 20; ++j) (void)pool->submit(j);
      std::atomic<bool> go{false};
      canceller = std::thread([&pool, &go] {
        while (!go.load()) {
        }
        try {
          pool->cancel();
        } catch (const flowpool::error&) {  // finished already: fine
        }
      });
      pool->close();
      go = true;
      const auto r = pool->wait();
      CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
      canceller.join();  // the pool outlives the canceller's call
    }
  }
}
