// Cancellation, exceptions and destruction: every job ends in exactly one terminal state.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;

TEST_CASE("exceptions from jobs are captured with the job id, std and non-std", "[pool][errors]") {
  flowpool::pool_options o;
  o.workers = 3;
  o.capacity = 8;
  std::atomic<int> aggregated{0};
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) -> int {
        if (j == 3) throw std::runtime_error("boom on three");
        if (j == 5) throw 42;  // not a std::exception
        if (j == 7) throw flowpool::error(flowpool::errc::io, "cannot read input 7");
        return j;
      },
      [&](int&&) { aggregated.fetch_add(1); });
  for (int i = 1; i <= 10; ++i) REQUIRE(pool.submit(i));
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::failed);
  CHECK(r.succeeded == 7);
  CHECK(r.failed == 3);
  CHECK(aggregated.load() == 7);
  REQUIRE(r.errors.size() == 3);
  bool saw3 = false, saw5 = false, saw7 = false;
  for (const auto& e : r.errors) {
    CHECK(e.kind == flowpool::error_kind::exception);
    CHECK(e.attempts == 1);
    if (e.job == 3) saw3 = e.message == "boom on three";
    if (e.job == 5) saw5 = e.message.find("not derived from std::exception") != std::string::npos;
    if (e.job == 7) saw7 = e.message == "cannot read input 7";
  }
  CHECK(saw3);
  CHECK(saw5);
  CHECK(saw7);
}

TEST_CASE("a running job sees cancellation and can stop early as cancelled", "[cancel]") {
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 100;
  std::atomic<int> started{0};
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        started.fetch_add(1);
        while (true) {
          ctx.throw_if_stop_requested();  // cooperative stop
          std::this_thread::sleep_for(100us);
        }
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 50; ++i) REQUIRE(pool.submit(i));
  while (started.load() < 2) std::this_thread::sleep_for(100us);
  const auto t0 = std::chrono::steady_clock::now();
  pool.cancel();
  const auto r = pool.wait();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 2s);  // promptly (generous: shared machine)
  CHECK(r.status == flowpool::run_status::cancelled);
  CHECK(r.submitted == 50);
  CHECK(r.cancelled == 50);  // 2 stopped themselves, 48 never started
  CHECK(r.failed == 0);
  CHECK(started.load() == 2);
}

TEST_CASE("the std::stop_token fires on cancel", "[cancel]") {
  flowpool::pool_options o;
  o.workers = 1;
  o.capacity = 4;
  std::atomic<bool> in_job{false};
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lk(m);
        in_job = true;
        cv.wait(lk, ctx.stop_token(), [] { return false; });  // wakes only on stop
        return j;
      },
      [](int&&) {});
  REQUIRE(pool.submit(1));
  while (!in_job.load()) std::this_thread::sleep_for(100us);
  pool.cancel();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::cancelled);
  CHECK(r.succeeded == 1);  // it returned normally: its result counts and is aggregated
}

TEST_CASE("a pool destroyed without close() cancels itself, waits, and accounts every job", "[cancel]") {
  std::vector<int> terminal(1001, 0);
  std::atomic<int> running{0};
  {
    flowpool::pool_options o;
    o.workers = 4;
    o.capacity = 1000;
    o.on_job_done = [&](const flowpool::job_record& rec) { ++terminal[rec.job]; };
    flowpool::pool<int, int> pool(
        o,
        [&](const int& j, flowpool::job_context& ctx) {
          running.fetch_add(1);
          std::this_thread::sleep_for(1ms);
          running.fetch_sub(1);
          (void)ctx;
          return j;
        },
        [](int&&) {});
    for (int i = 0; i < 1000; ++i) REQUIRE(pool.submit(i));
    std::this_thread::sleep_for(5ms);
  }  // ~pool: no close(), no wait()
  CHECK(running.load() == 0);  // nothing still runs after the destructor
  for (int id = 1; id <= 1000; ++id) REQUIRE(terminal[static_cast<std::size_t>(id)] == 1);
}

TEST_CASE("a closed but unwaited pool finishes its queued jobs on destruction", "[cancel]") {
  std::atomic<int> done{0};
  {
    flowpool::pool_options o;
    o.workers = 2;
    o.capacity = 64;
    flowpool::pool<int, int> pool(
        o, [](const int& j, flowpool::job_context&) { return j; }, [&](int&&) { done.fetch_add(1); });
    for (int i = 0; i < 64; ++i) REQUIRE(pool.submit(i));
    pool.close();
  }
  CHECK(done.load() == 64);
}

TEST_CASE("the run deadline cancels the run and reports timed_out", "[cancel][deadline]") {
  // Jobs block until the run is cancelled, so only N can ever run: whatever the machine's
  // speed (sanitizers included), the deadline must end the run, and every other accepted
  // job must end cancelled.
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 100;
  o.timeout = 300ms;
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context& ctx) {
        while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
        return j;  // returns normally after the stop: counts as succeeded
      },
      [](int&&) {});
  for (int i = 0; i < 50; ++i) {
    if (!pool.submit(i)) break;
  }
  const auto r = pool.wait();  // no close(): only the deadline can end this run
  CHECK(r.status == flowpool::run_status::timed_out);
  REQUIRE(r.submitted >= 1);
  CHECK(r.succeeded <= 2);
  CHECK(r.failed == 0);
  CHECK(r.cancelled + r.succeeded == r.submitted);
  CHECK(r.wall >= 290ms);
}

namespace {

struct random_case {
  int workers;
  std::ptrdiff_t capacity;
  int producers;
  int jobs_per_producer;
  bool ordered;
  int cancel_after_us;  // <0: never cancel
  int work_kind;        // 0 empty, 1 spin, 2 sleep, 3 mix with throws
};

random_case draw(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> w(1, 8), c(1, 64), p(1, 3), j(0, 300), kind(0, 3), cut(-1, 3000);
  random_case rc{};
  rc.workers = w(rng);
  rc.capacity = c(rng);
  rc.producers = p(rng);
  rc.jobs_per_producer = j(rng);
  rc.ordered = (rng() % 4) == 0;
  rc.cancel_after_us = cut(rng) < 100 ? -1 : cut(rng);
  rc.work_kind = kind(rng);
  return rc;
}

std::string describe(std::uint64_t seed, const random_case& rc) {
  std::ostringstream s;
  s << "seed=" << seed << " (rerun with FLOWPOOL_TEST_SEED=" << seed << ") workers=" << rc.workers
    << " capacity=" << rc.capacity << " producers=" << rc.producers << " jobs/producer=" << rc.jobs_per_producer
    << " ordered=" << rc.ordered << " cancel_after_us=" << rc.cancel_after_us << " kind=" << rc.work_kind;
  return s.str();
}

void run_random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const random_case rc = draw(rng);
  const std::string what = describe(seed, rc);
  INFO(what);
  const fp_test::watchdog dog(30s, what);

  const int max_jobs = rc.producers * rc.jobs_per_producer;
  fp_test::terminal_ledger ledger(static_cast<std::size_t>(max_jobs));
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> started_after_cancel{0};
  std::uint64_t last_delivered = 0;
  bool order_ok = true;

  flowpool::pool_options o;
  o.workers = rc.workers;
  o.capacity = rc.capacity;
  o.ordered = rc.ordered;
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o,
      [&](const std::uint64_t& j, flowpool::job_context& ctx) -> std::uint64_t {
        if (cancel_returned.load()) started_after_cancel.fetch_add(1);
        switch (rc.work_kind) {
          case 1: fp_test::spin(j % 5000); break;
          case 2: std::this_thread::sleep_for(std::chrono::microseconds(j % 300)); break;
          case 3:
            if (j % 11 == 0) throw std::runtime_error("job " + std::to_string(j));
            if (j % 13 == 0) throw 7;
            if (j % 17 == 0) ctx.throw_if_stop_requested();
            fp_test::spin(j % 2000);
            break;
          default: break;
        }
        return ctx.id();
      },
      [&](std::uint64_t&& id) {
        if (rc.ordered && id <= last_delivered) order_ok = false;
        last_delivered = id;
      });

  std::atomic<std::uint64_t> accepted{0};
  std::atomic<bool> late_cancel_error{false};
  std::thread canceller;
  if (rc.cancel_after_us >= 0) {
    canceller = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(rc.cancel_after_us));
      try {
        pool.cancel();
        cancel_returned = true;
      } catch (const flowpool::error& e) {
        // The run may already have finished: that must be errc::finished, nothing else.
        if (e.code() != flowpool::errc::finished) late_cancel_error = true;
      }
    });
  }
  fp_test::run_on_threads(rc.producers, [&](int t) {
    for (int i = 0; i < rc.jobs_per_producer; ++i) {
      if (!pool.submit(static_cast<std::uint64_t>(t * 100000 + i))) break;
      accepted.fetch_add(1);
    }
  });
  pool.close();
  const auto r = pool.wait();
  if (canceller.joinable()) canceller.join();

  REQUIRE_FALSE(late_cancel_error.load());
  REQUIRE(r.submitted == accepted.load());
  REQUIRE(r.max_queue_depth <= static_cast<std::size_t>(rc.capacity));
  REQUIRE(r.errors.size() == r.failed);
  REQUIRE(ledger.check(r) == std::string());  // exactly one terminal state per id; counts match
  REQUIRE(order_ok);
  // Once cancel() returned, only jobs that had already passed the start check may run:
  // at most one per worker.
  REQUIRE(started_after_cancel.load() <= rc.workers);
  if (rc.cancel_after_us < 0) {
    REQUIRE(r.status != flowpool::run_status::cancelled);
  }
}

}  // namespace

TEST_CASE("randomized cancels: every job ends in exactly one terminal state", "[cancel][random]") {
  const std::uint64_t base = fp_test::base_seed();
  const int runs = fp_test::sanitized() ? 120 : 400;
  for (int i = 0; i < runs; ++i) run_random_case(base + static_cast<std::uint64_t>(i));
}

TEST_CASE("randomized cancels, long run", "[cancel][random][stress][.]") {
  const std::uint64_t base = fp_test::base_seed() ^ 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < 3000; ++i) run_random_case(base + static_cast<std::uint64_t>(i));
}
