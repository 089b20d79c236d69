// Core pool properties: concurrency limits, the serial aggregator, ordering, misuse.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;

namespace {
flowpool::pool_options make_opts(int workers, std::ptrdiff_t capacity) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = capacity;
  return o;
}
}  // namespace

TEST_CASE("peak concurrency never exceeds N and reaches N when jobs block", "[pool][concurrency]") {
  const int n = GENERATE(1, 2, 3, 8);
  CAPTURE(n);
  fp_test::peak_tracker workers;
  std::atomic<int> bad_worker_ids{0};
  std::vector<int> seen;  // touched only by the aggregator: TSan proves it is serial
  {
    flowpool::pool<int, int> pool(
        make_opts(n, 16),
        [&](const int& j, flowpool::job_context& ctx) {
          const fp_test::peak_tracker::scope in(workers);
          if (ctx.worker() < 1 || ctx.worker() > n) bad_worker_ids.fetch_add(1);
          if (j < n) {
            // The first N jobs block until all N are inside at once (bounded wait):
            // N must hold for blocking jobs even when N exceeds the core count.
            const auto give_up = std::chrono::steady_clock::now() + 10s;
            while (workers.inside() < n && std::chrono::steady_clock::now() < give_up) {
              std::this_thread::sleep_for(100us);
            }
          } else {
            std::this_thread::sleep_for(1ms);
          }
          return j;
        },
        [&](int&& r) { seen.push_back(r); });
    for (int i = 0; i < 8 * n + 5; ++i) REQUIRE(pool.submit(i));
    pool.close();
    const auto r = pool.wait();
    REQUIRE(r.status == flowpool::run_status::ok);
    REQUIRE(r.succeeded == static_cast<std::uint64_t>(8 * n + 5));
  }
  CHECK(bad_worker_ids.load() == 0);
  CHECK(workers.peak() <= n);
  CHECK(workers.peak() == n);  // blocking jobs: all N run at once even with N > cores
  std::sort(seen.begin(), seen.end());
  for (int i = 0; i < 8 * n + 5; ++i) REQUIRE(seen[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("N=1 runs jobs one at a time, in submission order", "[pool][concurrency]") {
  fp_test::peak_tracker workers;
  std::vector<std::uint64_t> run_order;  // only one worker: no lock needed, TSan checks it
  flowpool::pool<int, int> pool(
      make_opts(1, 8),
      [&](const int& j, flowpool::job_context& ctx) {
        const fp_test::peak_tracker::scope in(workers);
        run_order.push_back(ctx.id());
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 200; ++i) REQUIRE(pool.submit(i));
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.succeeded == 200);
  CHECK(workers.peak() == 1);
  REQUIRE(run_order.size() == 200);
  for (std::size_t i = 0; i < run_order.size(); ++i) REQUIRE(run_order[i] == i + 1);
}

TEST_CASE("the aggregator never overlaps itself", "[pool][concurrency]") {
  const int n = GENERATE(1, 2, 4, 8);
  CAPTURE(n);
  fp_test::peak_tracker agg;
  std::uint64_t sum = 0;  // plain, non-atomic: only safe because the aggregator is serial
  std::uint64_t calls = 0;
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      make_opts(n, 64), [](const std::uint64_t& j, flowpool::job_context&) { return j; },
      [&](std::uint64_t&& r) {
        const fp_test::peak_tracker::scope in(agg);
        sum += r;
        ++calls;
      });
  std::atomic<int> rejected{0};
  fp_test::run_on_threads(3, [&](int t) {
    for (std::uint64_t i = 1; i <= 3000; ++i) {
      if (!pool.submit(static_cast<std::uint64_t>(t) * 3000 + i)) rejected.fetch_add(1);
    }
  });
  REQUIRE(rejected.load() == 0);
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.succeeded == 9000);
  CHECK(agg.peak() == 1);
  CHECK(calls == 9000);
  CHECK(sum == 9000ULL * 9001ULL / 2);
}

TEST_CASE("job ids are submission sequence numbers, each delivered once", "[pool]") {
  std::set<std::uint64_t> ids;
  int duplicates = 0;
  flowpool::pool<int, std::uint64_t> pool(
      make_opts(4, 32), [](const int&, flowpool::job_context& ctx) { return ctx.id(); },
      [&](std::uint64_t&& id) { duplicates += ids.insert(id).second ? 0 : 1; });
  for (int i = 0; i < 1000; ++i) REQUIRE(pool.submit(i));
  pool.close();
  (void)pool.wait();
  REQUIRE(duplicates == 0);
  REQUIRE(ids.size() == 1000);
  CHECK(*ids.begin() == 1);
  CHECK(*ids.rbegin() == 1000);
}

TEST_CASE("ordered mode delivers results in submission order", "[pool][ordered]") {
  const int n = GENERATE(1, 2, 4, 8);
  const std::size_t window = GENERATE(std::size_t{0}, std::size_t{3});
  CAPTURE(n, window);
  auto opts = make_opts(n, 16);
  opts.ordered = true;
  opts.reorder_window = window;
  std::vector<int> got;
  std::atomic<std::uint64_t> delivered_max{0};
  flowpool::pool<int, int> pool(
      opts,
      [](const int& j, flowpool::job_context&) {
        // Later jobs often finish first: make the reorder buffer work.
        fp_test::spin(static_cast<std::uint64_t>((j * 7919) % 13) * 2000);
        if (j % 97 == 13) throw std::runtime_error("gap");
        return j;
      },
      [&](int&& r) {
        got.push_back(r);
        delivered_max = static_cast<std::uint64_t>(r);
      });
  for (int i = 0; i < 2000; ++i) REQUIRE(pool.submit(i));
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.failed > 0);  // the gaps
  REQUIRE(r.succeeded + r.failed == 2000);
  REQUIRE(got.size() == r.succeeded);
  CHECK(std::is_sorted(got.begin(), got.end()));
  for (int v : got) REQUIRE(v % 97 != 13);
}

TEST_CASE("ordered mode keeps the reorder buffer bounded by the window", "[pool][ordered]") {
  auto opts = make_opts(4, 8);
  opts.ordered = true;
  opts.reorder_window = 5;
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> max_ahead{0};
  flowpool::pool<int, int> pool(
      opts,
      [&](const int& j, flowpool::job_context& ctx) {
        const std::uint64_t ahead = ctx.id() - delivered.load();
        std::uint64_t prev = max_ahead.load();
        while (ahead > prev && !max_ahead.compare_exchange_weak(prev, ahead)) {
        }
        if (ctx.id() == 3) std::this_thread::sleep_for(30ms);  // head-of-line blocker
        return j;
      },
      [&](int&&) { delivered.fetch_add(1); });
  for (int i = 0; i < 200; ++i) REQUIRE(pool.submit(i));
  pool.close();
  (void)pool.wait();
  // A job may start only if its id is within `window` of the next undelivered one.
  CHECK(max_ahead.load() <= 5);
}

TEST_CASE("option validation names the bad field", "[pool][errors]") {
  auto work = [](const int& j, flowpool::job_context&) { return j; };
  auto agg = [](int&&) {};
  auto expect = [&](flowpool::pool_options o, const std::string& fragment) {
    try {
      flowpool::pool<int, int> p(o, work, agg);
      FAIL("expected flowpool::error containing: " << fragment);
    } catch (const flowpool::error& e) {
      CHECK(e.code() == flowpool::errc::invalid_argument);
      CHECK_THAT(e.what(), Catch::Contains(fragment));
    }
  };
  expect(make_opts(0, 4), "workers must be >= 1, got 0");
  expect(make_opts(-3, 4), "workers must be >= 1, got -3");
  expect(make_opts(2, 0), "capacity must be >= 1, got 0");
  expect(make_opts(2, -1), "capacity must be >= 1, got -1");
  auto o = make_opts(2, 4);
  o.max_batch = 0;
  expect(o, "max_batch");
}

TEST_CASE("misuse gets a flowpool::error, never a hang", "[pool][errors]") {
  flowpool::pool<int, int> pool(
      make_opts(2, 4), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  REQUIRE(pool.submit(1));
  pool.close();
  pool.close();  // idempotent
  try {
    (void)pool.submit(2);
    FAIL("submit after close must throw");
  } catch (const flowpool::error& e) {
    CHECK(e.code() == flowpool::errc::closed);
    CHECK_THAT(e.what(), Catch::Contains("submit after close"));
  }
  CHECK_THROWS_AS((void)pool.try_submit(3), flowpool::error);
  const auto r = pool.wait();
  CHECK(r.succeeded == 1);
  try {
    (void)pool.wait();
    FAIL("wait twice must throw");
  } catch (const flowpool::error& e) {
    CHECK(e.code() == flowpool::errc::already_waited);
  }
  try {
    pool.cancel();
    FAIL("cancel after finish must throw");
  } catch (const flowpool::error& e) {
    CHECK(e.code() == flowpool::errc::finished);
    CHECK_THAT(e.what(), Catch::Contains("after the run finished"));
  }
}

TEST_CASE("wait() blocks until another thread closes the input", "[pool]") {
  flowpool::pool<int, int> pool(
      make_opts(2, 4), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  std::atomic<int> rejected{0};
  std::thread producer([&] {
    for (int i = 0; i < 50; ++i) {
      if (!pool.submit(i)) rejected.fetch_add(1);
    }
    std::this_thread::sleep_for(20ms);
    pool.close();
  });
  const auto r = pool.wait();
  producer.join();
  CHECK(rejected.load() == 0);
  CHECK(r.succeeded == 50);
  CHECK(r.status == flowpool::run_status::ok);
}

TEST_CASE("an empty run reports zero jobs", "[pool]") {
  flowpool::pool<int, int> pool(
      make_opts(3, 4), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  pool.close();
  const auto r = pool.wait();
  CHECK(r.submitted == 0);
  CHECK(r.status == flowpool::run_status::ok);
}

TEST_CASE("snapshot is readable from another thread during the run", "[pool]") {
  std::atomic<bool> go{false};
  flowpool::pool<int, int> pool(
      make_opts(2, 8),
      [&](const int& j, flowpool::job_context&) {
        while (!go.load()) std::this_thread::sleep_for(1ms);
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 10; ++i) REQUIRE(pool.submit(i));
  // Two are running (blocked on `go`), eight wait.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  flowpool::snapshot s;
  do {
    s = pool.snapshot();
  } while ((s.busy_workers != 2 || s.queue_depth != 8) && std::chrono::steady_clock::now() < deadline);
  CHECK(s.busy_workers == 2);
  CHECK(s.queue_depth == 8);
  CHECK(s.submitted == 10);
  CHECK(s.completed == 0);
  go = true;
  pool.close();
  const auto r = pool.wait();
  CHECK(pool.snapshot().completed == 10);
  CHECK(r.max_queue_depth <= 8);
}

TEST_CASE("submit_batch queues every job in order and keeps N and the bound", "[pool][concurrency]") {
  const int n = GENERATE(1, 2, 4);
  const std::ptrdiff_t capacity = GENERATE(1, 7, 64);
  CAPTURE(n, capacity);
  fp_test::peak_tracker workers;
  fp_test::peak_tracker agg;
  std::vector<int> order;  // aggregator only (ordered): the results in submission order
  auto o = make_opts(n, capacity);
  o.ordered = true;
  constexpr int kJobs = 3000;
  std::vector<std::uint64_t> id_of(kJobs + 1, 0);  // job value -> id, written by the job with that value only
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        const fp_test::peak_tracker::scope in(workers);
        id_of[static_cast<std::size_t>(j)] = ctx.id();
        return j;
      },
      [&](int&& r) {
        const fp_test::peak_tracker::scope in(agg);
        order.push_back(r);
      });
  std::vector<int> jobs;
  int next = 1;
  // Runs of 1 to 100 jobs, larger and smaller than the capacity.
  for (int run = 1; next <= kJobs; run = run % 100 + 1) {
    jobs.clear();
    for (int i = 0; i < run && next <= kJobs; ++i) jobs.push_back(next++);
    REQUIRE(pool.submit_batch(jobs) == jobs.size());
  }
  pool.close();
  const auto r = pool.wait();
  REQUIRE(r.status == flowpool::run_status::ok);
  CHECK(r.succeeded == kJobs);
  CHECK(r.max_queue_depth <= static_cast<std::size_t>(capacity));
  CHECK(workers.peak() <= n);
  CHECK(agg.peak() == 1);
  REQUIRE(order.size() == kJobs);
  for (int i = 0; i < kJobs; ++i) {
    REQUIRE(order[static_cast<std::size_t>(i)] == i + 1);
    REQUIRE(id_of[static_cast<std::size_t>(i + 1)] == static_cast<std::uint64_t>(i + 1));  // ids in order
  }
}

TEST_CASE("submit_batch stops at a cancel and every job it accepted ends once", "[pool][cancel]") {
  const int n = GENERATE(1, 3);
  CAPTURE(n);
  constexpr std::size_t kJobs = 20000;
  fp_test::terminal_ledger ledger(kJobs);
  auto o = make_opts(n, 8);
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
  std::atomic<int> started{0};
  flowpool::pool<int, int> pool(
      o,
      [&](const int& j, flowpool::job_context&) {
        started.fetch_add(1);
        std::this_thread::sleep_for(20us);
        return j;
      },
      [](int&&) {});
  std::thread canceller([&] {
    while (started.load() < 200) std::this_thread::sleep_for(100us);
    pool.cancel();
  });
  std::vector<int> jobs(kJobs, 1);
  const std::size_t accepted = pool.submit_batch(jobs);
  canceller.join();
  CHECK(accepted < kJobs);
  CHECK(pool.submit_batch(jobs) == 0);  // cancelled: nothing more is taken
  pool.close();
  const auto r = pool.wait();
  CHECK(r.status == flowpool::run_status::cancelled);
  CHECK(r.submitted == accepted);
  const std::string problem = ledger.check(r);
  INFO(problem);
  CHECK(problem.empty());
}
