// Engine defects found by trying to break the pool (issue 13): hangs of outside
// entries, ordered delivery after a cancel, the worker limit, durations at their
// maximum, exit() and wait() inside a job, and the reorder window's memory.
#include <oneapi/tbb/global_control.h>
#include <catch2/catch.hpp>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

// splitmix64: a deterministic coin per (seed, id).
std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Resident set size of this process, in bytes (/proc/self/statm, second field).
std::size_t statm_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

flowpool::pool_options opts(int workers, std::ptrdiff_t capacity) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = capacity;
  return o;
}

}  // namespace

// Stage 1 (2 workers, sleep 0) feeds stage 2 (2 or 1 workers, half the jobs fail
// their first attempt and retry after 1 ms) from its serial aggregator with a
// blocking submit, capacity 3 each: the CLI's multi-stage shape. Stage 2's worker
// tokens are put by threads outside its arena (stage 1's aggregator, the retry
// timer), and stage 1's aggregator thread, blocked in submit(), still counts as a
// busy oneTBB worker: stage 2 must get its own workers all the same. A hang shows
// as a run that ends by its deadline (timed_out) instead of ok.
TEST_CASE("two chained pools with retries in the second never hang", "[engine][retry][hang]") {
  const std::uint64_t seed = fp_test::base_seed();
  CAPTURE(seed);
  for (int rep = 0; rep < 12; ++rep) {
    CAPTURE(rep);
    flowpool::pool_options o2;
    o2.workers = 2;
    o2.capacity = 3;
    o2.retry.max_attempts = 2;
    o2.retry.backoff_base = 1ms;
    o2.retry.backoff_cap = 1ms;
    o2.timeout = 30s;  // a hang ends here, as a timed_out run
    std::atomic<std::uint64_t> sunk{0};
    flowpool::pool<int, int> second(
        o2,
        [&](const int& j, flowpool::job_context& ctx) {
          if (ctx.attempt() == 1 &&
              (mix(seed + static_cast<std::uint64_t>(rep) * 1000 + static_cast<std::uint64_t>(j)) & 1U)) {
            throw std::runtime_error("transient");
          }
          return j;
        },
        [&](int&&) { sunk.fetch_add(1); });
    flowpool::pool_options o1 = o2;
    o1.workers = 2;
    o1.retry = {};
    flowpool::pool<int, int> first(
        o1,
        [](const int& j, flowpool::job_context&) {
          std::this_thread::sleep_for(0ms);
          return j;
        },
        [&](int&& v) { (void)second.submit(v); });
    for (int i = 0; i < 200; ++i) REQUIRE(first.submit(i));
    first.close();
    const auto r1 = first.wait();
    second.close();
    const auto r2 = second.wait();
    REQUIRE(r1.status == flowpool::run_status::ok);
    REQUIRE(r2.status == flowpool::run_status::ok);
    REQUIRE(r2.succeeded == 200);
    REQUIRE(sunk.load() == 200);
  }
}

// The graph runner's shape: stages linked by engine::offer (set_forward), which never
// blocks a TBB thread. Four stages at capacity 1, two of them retrying half their jobs
// once, ordered and not, sweeping the worker counts: every item reaches the sink once,
// in order when ordered, no stage runs more than its N at once, the sink never runs
// concurrently with itself, and no queue between stages ever holds more than C.
TEST_CASE("stages linked by non-blocking hand-offs never hang and keep their bounds", "[engine][retry][hang]") {
  using engine_t = flowpool::detail::engine<int, int>;
  const std::uint64_t seed = fp_test::base_seed();
  const bool ordered = GENERATE(false, true);
  const int n = GENERATE(1, 2, 3);
  CAPTURE(seed, ordered, n);
  constexpr int stages = 4;
  constexpr int items = 300;
  for (int rep = 0; rep < 3; ++rep) {
    CAPTURE(rep);
    std::vector<std::unique_ptr<fp_test::peak_tracker>> peaks;
    std::vector<std::unique_ptr<engine_t>> e;
    fp_test::peak_tracker sink_overlap;  // the serial sink: never more than 1 inside
    std::vector<int> sunk;               // written by the serial sink only
    for (int k = 0; k < stages; ++k) {
      flowpool::pool_options o;
      o.workers = k == 1 ? 1 : n;
      o.capacity = 1;
      o.ordered = ordered;
      o.timeout = 60s;  // a hang ends here, as a timed_out run
      const bool flaky = k == 0 || k == 2;
      if (flaky) {
        o.retry.max_attempts = 2;
        o.retry.backoff_base = 1ms;
        o.retry.backoff_cap = 1ms;
      }
      peaks.push_back(std::make_unique<fp_test::peak_tracker>());
      auto* peak = peaks.back().get();
      const std::uint64_t salt = seed + static_cast<std::uint64_t>(rep * 100 + k);
      e.push_back(std::make_unique<engine_t>(
          o,
          [peak, flaky, salt](const int& j, flowpool::job_context& ctx) {
            const fp_test::peak_tracker::scope in(*peak);
            if (flaky && ctx.attempt() == 1 && (mix(salt + static_cast<std::uint64_t>(j)) & 1U)) {
              throw std::runtime_error("transient");
            }
            return j;
          },
          [&sunk, &sink_overlap](int&& v) {
            const fp_test::peak_tracker::scope in(sink_overlap);
            sunk.push_back(v);
          }));
    }
    for (int k = 0; k + 1 < stages; ++k) {
      engine_t& next = *e[static_cast<std::size_t>(k + 1)];
      e[static_cast<std::size_t>(k)]->set_forward([&next](int& v, const std::function<void()>* wake) {
        const auto r =
            wake != nullptr ? next.offer(v, *wake) : next.push(std::move(v), nullptr, engine_t::when_full::block);
        return r != engine_t::push_result::full;
      });
    }
    for (int i = 0; i < items; ++i)
      REQUIRE(e[0]->push(int{i}, nullptr, engine_t::when_full::block) == engine_t::push_result::accepted);
    for (auto& s : e) {
      s->close();
      const auto r = s->wait();
      REQUIRE(r.status == flowpool::run_status::ok);
      REQUIRE(r.succeeded == items);
      REQUIRE(r.max_queue_depth <= 1);
    }
    for (int k = 0; k < stages; ++k) REQUIRE(peaks[static_cast<std::size_t>(k)]->peak() <= (k == 1 ? 1 : n));
    REQUIRE(sink_overlap.peak() == 1);
    REQUIRE(sunk.size() == static_cast<std::size_t>(items));
    if (ordered) {
      for (int i = 0; i < items; ++i) REQUIRE(sunk[static_cast<std::size_t>(i)] == i);
    } else {
      std::vector<int> sorted = sunk;
      std::sort(sorted.begin(), sorted.end());
      for (int i = 0; i < items; ++i) REQUIRE(sorted[static_cast<std::size_t>(i)] == i);
    }
  }
}

// Ordered delivery after a cancel: outcomes behind an undelivered position are not
// delivered as succeeded; they end cancelled, so what was delivered is a prefix.
TEST_CASE("ordered delivery after a cancel is exactly a prefix", "[engine][ordered][cancel]") {
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 64;
  o.ordered = true;
  o.max_batch = 1;  // one job per pull: no job waits behind job 5 inside its micro-batch
  fp_test::terminal_ledger ledger(20);
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
  std::atomic<int> finished{0};
  std::vector<int> delivered;
  flowpool::pool<int, int> p(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        if (j == 5) {  // slow: runs until the cancel, then stops as cancelled
          const auto until = clk::now() + 30s;
          while (!ctx.stop_requested() && clk::now() < until) std::this_thread::sleep_for(1ms);
          ctx.throw_if_stop_requested();
        }
        finished.fetch_add(1);
        return j;
      },
      [&](int&& v) { delivered.push_back(v); });
  for (int i = 1; i <= 20; ++i) REQUIRE(p.submit(i));
  const auto until = clk::now() + 30s;
  while (finished.load() < 19 && clk::now() < until) std::this_thread::sleep_for(1ms);
  REQUIRE(finished.load() == 19);  // every job but 5 is done and parked behind it
  p.cancel();
  p.close();
  const auto r = p.wait();
  CHECK(r.status == flowpool::run_status::cancelled);
  CHECK(ledger.check(r).empty());
  CHECK(delivered == std::vector<int>{1, 2, 3, 4});
  CHECK(r.succeeded == 4);
  CHECK(r.cancelled == 16);
  for (std::uint64_t id = 5; id <= 20; ++id) {
    CAPTURE(id);
    CHECK(ledger[id].status == flowpool::job_status::cancelled);
  }
}

// Ordered delivery when the run fails fast: nothing behind the failed job is delivered.
TEST_CASE("ordered fail-fast delivers nothing behind the failure", "[engine][ordered][cancel]") {
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 64;
  o.ordered = true;
  o.max_batch = 1;  // one job per pull: no job waits behind job 5 inside its micro-batch
  o.on_error = flowpool::error_policy::fail_fast;
  fp_test::terminal_ledger ledger(20);
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
  std::atomic<int> finished{0};
  std::vector<int> delivered;
  flowpool::pool<int, int> p(
      o,
      [&](const int& j, flowpool::job_context&) {
        if (j == 5) {
          const auto until = clk::now() + 30s;
          while (finished.load() < 19 && clk::now() < until) std::this_thread::sleep_for(1ms);
          throw std::runtime_error("five fails last");
        }
        finished.fetch_add(1);
        return j;
      },
      [&](int&& v) { delivered.push_back(v); });
  for (int i = 1; i <= 20; ++i) REQUIRE(p.submit(i));
  p.close();
  const auto r = p.wait();
  CHECK(r.status == flowpool::run_status::failed);
  CHECK(ledger.check(r).empty());
  CHECK(delivered == std::vector<int>{1, 2, 3, 4});
  CHECK(ledger[5].status == flowpool::job_status::failed);
  for (std::uint64_t id = 6; id <= 20; ++id) CHECK(ledger[id].status == flowpool::job_status::cancelled);
}

// "N means N" above oneTBB's default worker limit of 256, after a smaller pool
// already ran in this process (which creates oneTBB's thread pool).
TEST_CASE("300 workers run 300 blocking jobs at once after a 1-worker pool ran", "[engine][limits]") {
  {
    flowpool::pool<int, int> small(
        opts(1, 4), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
    for (int i = 0; i < 4; ++i) REQUIRE(small.submit(i));
    small.close();
    REQUIRE(small.wait().succeeded == 4);
  }
  constexpr int n = 300;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int inside = 0;
  int peak = 0;
  int timed_out = 0;
  const auto until = clk::now() + 20s;  // one deadline for all: a failing run ends in about 20 s
  flowpool::pool<int, int> big(
      opts(n, n),
      [&](const int& j, flowpool::job_context&) {
        std::unique_lock lk(mu);
        ++arrived;
        peak = std::max(peak, ++inside);
        cv.notify_all();
        if (!cv.wait_until(lk, until, [&] { return arrived >= n; })) ++timed_out;
        --inside;
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < n; ++i) REQUIRE(big.submit(i));
  big.close();
  const auto r = big.wait();
  CHECK(r.succeeded == static_cast<std::uint64_t>(n));
  CHECK(peak == n);  // all n were inside at once
  CHECK(timed_out == 0);
}

// A limit oneTBB cannot raise any more is an error at construction, never a silent cap.
TEST_CASE("a pool larger than a global_control allows is refused with a clear error", "[engine][limits]") {
  const tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 4);
  try {
    flowpool::pool<int, int> p(
        opts(8, 8), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
    FAIL("a pool of 8 workers was built under max_allowed_parallelism 4");
  } catch (const flowpool::error& e) {
    CHECK(e.code() == flowpool::errc::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("8 workers") && Catch::Contains("max_allowed_parallelism"));
  }
  // Within the limit it works.
  flowpool::pool<int, int> ok(
      opts(3, 8), [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  REQUIRE(ok.submit(1));
  ok.close();
  CHECK(ok.wait().succeeded == 1);
}

// Durations at their maximum mean "no deadline", never an overflow.
TEST_CASE("a run timeout of nanoseconds::max() is no deadline", "[engine][durations]") {
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 8;
  o.timeout = std::chrono::nanoseconds::max();
  flowpool::pool<int, int> p(
      o,
      [](const int& j, flowpool::job_context&) {
        std::this_thread::sleep_for(20ms);
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 4; ++i) REQUIRE(p.submit(i));
  p.close();
  const auto r = p.wait();
  CHECK(r.status == flowpool::run_status::ok);
  CHECK(r.succeeded == 4);
}

TEST_CASE("a job timeout of nanoseconds::max() never times an attempt out", "[engine][durations]") {
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 8;
  o.job_timeout = std::chrono::nanoseconds::max();
  std::atomic<int> stopped{0};
  flowpool::pool<int, int> p(
      o,
      [&](const int& j, flowpool::job_context& ctx) {
        if (ctx.stop_requested()) stopped.fetch_add(1);
        return j;
      },
      [](int&&) {});
  for (int i = 0; i < 4; ++i) REQUIRE(p.submit(i));
  p.close();
  const auto r = p.wait();
  CHECK(r.status == flowpool::run_status::ok);
  CHECK(r.succeeded == 4);
  CHECK(stopped.load() == 0);
}

TEST_CASE("submit_for with seconds::max() waits for room", "[engine][durations]") {
  fp_test::gate release;
  flowpool::pool<int, int> p(
      opts(1, 1),
      [&](const int& j, flowpool::job_context&) {
        release.wait();
        return j;
      },
      [](int&&) {});
  REQUIRE(p.submit(1));  // runs (and blocks)
  const auto t0 = clk::now();
  while (p.snapshot().busy_workers == 0 && clk::now() - t0 < 10s) std::this_thread::sleep_for(1ms);
  REQUIRE(p.submit(2));  // fills the queue
  std::thread opener([&] {
    std::this_thread::sleep_for(100ms);
    release.open();
  });
  CHECK(p.submit_for(3, std::chrono::seconds::max()));  // blocks until there is room, then accepts
  CHECK(p.submit_for(4, std::chrono::hours::max()));
  opener.join();
  p.close();
  CHECK(p.wait().succeeded == 4);
}

TEST_CASE("a backoff of nanoseconds::max() never retries before the run ends", "[engine][durations]") {
  flowpool::pool_options o;
  o.workers = 1;
  o.capacity = 4;
  o.retry.max_attempts = 3;
  o.retry.backoff_base = std::chrono::nanoseconds::max();
  o.retry.backoff_cap = std::chrono::nanoseconds::max();
  std::atomic<int> attempts{0};
  flowpool::pool<int, int> p(
      o,
      [&](const int&, flowpool::job_context&) -> int {
        attempts.fetch_add(1);
        throw std::runtime_error("always");
      },
      [](int&&) {});
  REQUIRE(p.submit(1));
  std::this_thread::sleep_for(300ms);
  CHECK(attempts.load() == 1);  // the retry waits out its (endless) backoff
  p.cancel();
  p.close();
  const auto r = p.wait();
  CHECK(r.cancelled == 1);
  CHECK(attempts.load() == 1);
}

// wait() from inside the pool's own job or aggregator would wait for itself.
TEST_CASE("wait() inside a job or the aggregator throws instead of hanging", "[engine][misuse]") {
  const fp_test::watchdog dog(60s, "wait() inside a job hung");
  std::unique_ptr<flowpool::pool<int, int>> p;
  std::atomic<int> job_code{0};
  std::atomic<int> agg_code{0};
  std::string job_message;
  p = std::make_unique<flowpool::pool<int, int>>(
      opts(2, 8),
      [&](const int& j, flowpool::job_context&) {
        if (j == 1) {
          try {
            (void)p->wait();
          } catch (const flowpool::error& e) {
            job_code = static_cast<int>(e.code());
            job_message = e.what();
          }
        }
        return j;
      },
      [&](int&& v) {
        if (v == 2) {
          try {
            (void)p->wait();
          } catch (const flowpool::error& e) {
            agg_code = static_cast<int>(e.code());
          }
        }
      });
  REQUIRE(p->submit(1));
  REQUIRE(p->submit(2));
  p->close();
  const auto r = p->wait();  // the refused calls did not count as "the" wait()
  CHECK(r.succeeded == 2);
  CHECK(job_code.load() == static_cast<int>(flowpool::errc::invalid_argument));
  CHECK(agg_code.load() == static_cast<int>(flowpool::errc::invalid_argument));
  CHECK_THAT(job_message, Catch::Contains("inside"));
}

TEST_CASE("close() and cancel() inside a job or the aggregator work", "[engine][misuse]") {
  const fp_test::watchdog dog(60s, "close() inside the aggregator hung");
  std::unique_ptr<flowpool::pool<int, int>> p;
  p = std::make_unique<flowpool::pool<int, int>>(
      opts(2, 8), [&](const int& j, flowpool::job_context&) { return j; },
      [&](int&& v) {
        if (v == 3) p->close();
      });
  for (int i = 1; i <= 3; ++i) REQUIRE(p->submit(i));
  const auto r = p->wait();  // closed by the aggregator
  CHECK(r.succeeded == 3);
  CHECK(r.status == flowpool::run_status::ok);

  std::unique_ptr<flowpool::pool<int, int>> q;
  q = std::make_unique<flowpool::pool<int, int>>(
      opts(2, 8),
      [&](const int& j, flowpool::job_context&) {
        if (j == 1) q->close();
        return j;
      },
      [](int&&) {});
  REQUIRE(q->submit(1));
  CHECK(q->wait().succeeded == 1);
}

#if defined(FLOWPOOL_EXIT_HELPER)
// std::exit() inside a job ends the process with that status (no crash in oneTBB's
// own exit handlers, which are not meant to run on one of its worker threads).
TEST_CASE("std::exit() inside a job or the aggregator keeps its exit status", "[engine][exit]") {
  for (const char* where : {"job", "aggregator"}) {
    CAPTURE(where);
    for (int rep = 0; rep < 3; ++rep) {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        execl(FLOWPOOL_EXIT_HELPER, FLOWPOOL_EXIT_HELPER, where, static_cast<char*>(nullptr));
        _exit(127);
      }
      int status = 0;
      REQUIRE(waitpid(pid, &status, 0) == pid);
      INFO("killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
      CHECK_FALSE(WIFSIGNALED(status));
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 42);
    }
  }
}
#endif

// The reorder window is allocated as it is used, not one slot per capacity up front.
TEST_CASE("an ordered pool with capacity 2^24 allocates its reorder window as used", "[engine][ordered][memory]") {
  const std::size_t before = statm_rss_bytes();
  std::vector<int> got;
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = std::ptrdiff_t{1} << 24;
  o.ordered = true;
  flowpool::pool<int, int> p(
      o,
      [](const int& j, flowpool::job_context&) {
        if (j % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        return j;
      },
      [&](int&& v) { got.push_back(v); });
  const std::size_t after = statm_rss_bytes();
  CHECK(after < before + (64U << 20));
  for (int i = 0; i < 5000; ++i) REQUIRE(p.submit(i));
  p.close();
  const auto r = p.wait();
  CHECK(r.succeeded == 5000);
  REQUIRE(got.size() == 5000);
  for (int i = 0; i < 5000; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("an ordered pool above 2^24 capacity does not name reorder_window", "[engine][ordered][memory]") {
  flowpool::pool_options o;
  o.workers = 1;
  o.capacity = (std::ptrdiff_t{1} << 24) + 1;
  o.ordered = true;
  try {
    flowpool::pool<int, int> p(
        o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
    REQUIRE(p.submit(1));
    p.close();
    CHECK(p.wait().succeeded == 1);
  } catch (const flowpool::error& e) {
    CHECK_THAT(e.what(), !Catch::Contains("reorder_window"));
  }
}
