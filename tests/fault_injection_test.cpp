// Fault injection: randomized runs mixing throwing jobs (std and non-std), slow jobs past
// their deadline, retries, cancels at random moments, run deadlines, a throwing aggregator,
// fail-fast and max-failures policies, and several producers, some blocked in submit.
// Every run checks that nothing is lost: each submitted id ends in exactly one terminal
// state, the counts add up, retries are counted exactly, and no job starts after cancel().
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;

namespace {

struct fault_case {
  int workers = 1;
  std::ptrdiff_t capacity = 1;
  int producers = 1;
  int jobs_per_producer = 0;
  bool ordered = false;
  std::uint32_t max_attempts = 1;
  int backoff_us = 0;
  int job_timeout_ms = 0;  // 0: none
  int run_deadline_ms = 0;  // 0: none
  int cancel_after_us = -1;  // <0: no cancel
  int policy = 0;           // 0 collect, 1 fail_fast, 2 max_failures
  int throw_per_mille = 0;  // chance that an attempt throws
  int slow_per_mille = 0;   // chance that an attempt sleeps past its deadline
  int aggregator_throws_at = -1;  // value whose aggregation throws; <0: never
};

fault_case draw(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  fault_case c;
  c.workers = pick(1, 6);
  c.capacity = pick(1, 32);
  c.producers = pick(1, 3);
  c.jobs_per_producer = pick(0, 40);
  c.ordered = pick(0, 3) == 0;
  c.max_attempts = static_cast<std::uint32_t>(pick(1, 4));
  c.backoff_us = pick(0, 1500);
  c.job_timeout_ms = pick(0, 2) == 0 ? pick(1, 3) : 0;
  c.run_deadline_ms = pick(0, 4) == 0 ? pick(2, 30) : 0;
  c.cancel_after_us = pick(0, 2) == 0 ? pick(0, 20000) : -1;
  c.policy = pick(0, 5) == 0 ? pick(1, 2) : 0;
  c.throw_per_mille = pick(0, 400);
  c.slow_per_mille = c.job_timeout_ms > 0 ? pick(0, 200) : 0;
  c.aggregator_throws_at = pick(0, 9) == 0 ? pick(0, 40) : -1;
  return c;
}

std::string describe(std::uint64_t seed, const fault_case& c) {
  std::ostringstream s;
  s << "seed=" << seed << " (rerun: FLOWPOOL_TEST_SEED=" << seed << ") workers=" << c.workers
    << " capacity=" << c.capacity << " producers=" << c.producers << " jobs/producer=" << c.jobs_per_producer
    << " ordered=" << c.ordered << " attempts=" << c.max_attempts << " backoff_us=" << c.backoff_us
    << " job_timeout_ms=" << c.job_timeout_ms << " run_deadline_ms=" << c.run_deadline_ms
    << " cancel_after_us=" << c.cancel_after_us << " policy=" << c.policy << " throw=" << c.throw_per_mille
    << " slow=" << c.slow_per_mille << " agg_throws_at=" << c.aggregator_throws_at;
  return s.str();
}

// Deterministic per (job, attempt) coin, independent of scheduling.
int coin(std::uint64_t seed, std::uint64_t job, std::uint32_t attempt) {
  std::uint64_t z = seed ^ (job * 0x9e3779b97f4a7c15ULL) ^ (std::uint64_t{attempt} << 40);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<int>((z ^ (z >> 31)) % 1000);
}

void run_fault_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const fault_case c = draw(rng);
  const std::string what = describe(seed, c);
  INFO(what);
  const fp_test::watchdog dog(60s, what);

  const std::size_t max_jobs = static_cast<std::size_t>(c.producers * c.jobs_per_producer);
  fp_test::terminal_ledger ledger(max_jobs);
  std::uint64_t last_delivered = 0;
  bool order_ok = true;
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> started_after_cancel{0};
  std::atomic<int> wrong_attempt{0};

  flowpool::pool_options o;
  o.workers = c.workers;
  o.capacity = c.capacity;
  o.ordered = c.ordered;
  o.retry.max_attempts = c.max_attempts;
  o.retry.backoff_base = std::chrono::microseconds(c.backoff_us);
  o.retry.backoff_cap = 2ms;
  o.retry.jitter = 0.5;
  o.retry.seed = seed;
  o.job_timeout = std::chrono::milliseconds(c.job_timeout_ms);
  o.timeout = std::chrono::milliseconds(c.run_deadline_ms);
  if (c.policy == 1) o.on_error = flowpool::error_policy::fail_fast;
  if (c.policy == 2) o.max_failures = 3;
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };

  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o,
      [&](const std::uint64_t&, flowpool::job_context& ctx) -> std::uint64_t {
        if (cancel_returned.load()) started_after_cancel.fetch_add(1);
        if (ctx.attempt() < 1 || ctx.attempt() > c.max_attempts) wrong_attempt.fetch_add(1);
        const int r = coin(seed, ctx.id(), ctx.attempt());
        if (r < c.throw_per_mille) {
          if (r % 3 == 0) throw 7;  // not a std::exception
          if (r % 3 == 1) throw flowpool::permanent_error("permanent " + std::to_string(ctx.id()));
          throw std::runtime_error("transient " + std::to_string(ctx.id()));
        }
        if (r < c.throw_per_mille + c.slow_per_mille) {
          std::this_thread::sleep_for(std::chrono::milliseconds(c.job_timeout_ms + 1));  // overruns
        } else if (r % 5 == 0) {
          ctx.throw_if_stop_requested();
          std::this_thread::sleep_for(std::chrono::microseconds(r % 300));
        }
        return ctx.id();
      },
      [&](std::uint64_t&& id) {
        if (c.ordered && id <= last_delivered) order_ok = false;
        last_delivered = id;
        if (c.aggregator_throws_at >= 0 && id == static_cast<std::uint64_t>(c.aggregator_throws_at)) {
          throw std::runtime_error("aggregator rejects " + std::to_string(id));
        }
      });

  std::atomic<bool> late_cancel_error{false};
  std::thread canceller;
  if (c.cancel_after_us >= 0) {
    canceller = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(c.cancel_after_us));
      try {
        pool.cancel();
        cancel_returned = true;
      } catch (const flowpool::error& e) {
        if (e.code() != flowpool::errc::finished) late_cancel_error = true;
      }
    });
  }
  std::atomic<std::uint64_t> accepted{0};
  fp_test::run_on_threads(c.producers, [&](int) {
    for (int i = 0; i < c.jobs_per_producer; ++i) {
      if (!pool.submit(std::uint64_t{0})) break;  // blocks at capacity; false once cancelled
      accepted.fetch_add(1);
    }
  });
  pool.close();
  const auto r = pool.wait();
  if (canceller.joinable()) canceller.join();

  REQUIRE_FALSE(late_cancel_error.load());
  REQUIRE(wrong_attempt.load() == 0);
  REQUIRE(r.submitted == accepted.load());
  REQUIRE(r.max_queue_depth <= static_cast<std::size_t>(c.capacity));
  REQUIRE(ledger.check(r) == std::string());  // exactly one terminal state per id; counts match
  std::uint64_t retries = 0;
  for (std::uint64_t id = 1; id <= r.submitted; ++id) {
    REQUIRE(ledger[id].attempts <= c.max_attempts);
    if (ledger[id].attempts > 0) retries += ledger[id].attempts - 1;
  }
  REQUIRE(retries == r.retried);  // exact: every retry is one more recorded attempt
  REQUIRE(r.errors.size() == r.failed);
  REQUIRE(order_ok);
  // After cancel() returned, only attempts that had already passed the start check may run.
  REQUIRE(started_after_cancel.load() <= c.workers);
  if (r.status == flowpool::run_status::failed && r.failed == 0) {
    REQUIRE(r.cause.has_value());  // a failed run always says why
  }
  // A failure policy that was triggered names its cause (unless a cancel or the
  // deadline had already ended the run, in which case the status says so).
  const std::uint64_t threshold = c.policy == 1 ? 1 : c.policy == 2 ? 3 : 0;
  if (threshold > 0 && r.failed >= threshold && r.status == flowpool::run_status::failed) {
    REQUIRE(r.cause.has_value());
  }
  if (r.cause && r.cause->kind != flowpool::error_kind::aggregator) {
    REQUIRE(threshold > 0);  // only a policy (or the aggregator) names a cause
    REQUIRE(r.status == flowpool::run_status::failed);
  }
}

}  // namespace

TEST_CASE("fault injection: 1000 seeded runs lose nothing", "[fault][random]") {
  const std::uint64_t base = fp_test::base_seed();  // FLOWPOOL_TEST_SEED=<printed seed> replays a case first
  const int runs = fp_test::sanitized() ? 300 : 1000;
  for (int i = 0; i < runs; ++i) run_fault_case(base + static_cast<std::uint64_t>(i));
}

TEST_CASE("fault injection, long run", "[fault][random][stress][.]") {
  const std::uint64_t base = fp_test::base_seed() + 1'000'000;
  for (int i = 0; i < 3000; ++i) run_fault_case(base + static_cast<std::uint64_t>(i));
}
