// detail::retry_queue alone: due order, FIFO among equal times, ready order, cancel drain.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "flowpool/detail/retry_queue.hpp"
#include "support/concurrency_kit.hpp"

namespace {
using queue_t = flowpool::detail::retry_queue<int>;
using clk = queue_t::clock;
}  // namespace

TEST_CASE("retry_queue moves jobs to ready in due order, first in first out among equal times", "[retryq]") {
  const std::uint64_t seed = fp_test::base_seed() + 29;
  INFO("seed " << seed << " (FLOWPOOL_TEST_SEED=" << fp_test::base_seed() << ")");
  std::mt19937_64 rng(seed);
  const auto t0 = clk::now();
  queue_t q;
  CHECK(q.empty());
  CHECK(q.next_due() == clk::time_point::max());
  struct job {
    clk::time_point due;
    int n;
  };
  std::vector<job> jobs;
  for (int i = 0; i < 500; ++i) {
    const auto due = t0 + std::chrono::milliseconds(rng() % 20);  // many equal due times
    jobs.push_back({due, i});
    q.schedule(due, std::make_shared<int>(i));
  }
  CHECK(q.in_backoff() == 500);
  CHECK(q.size() == 500);
  // Expected: by due time, then by scheduling order.
  std::stable_sort(jobs.begin(), jobs.end(), [](const job& a, const job& b) { return a.due < b.due; });
  std::vector<int> got;
  for (int ms = 0; ms < 20; ++ms) {
    const auto now = t0 + std::chrono::milliseconds(ms);
    const std::size_t before = q.ready();
    const std::size_t moved = q.move_due(now);
    CHECK(q.ready() == before + moved);
    if (q.in_backoff() > 0) CHECK(q.next_due() > now);  // nothing due is left behind
    while (q.has_ready()) got.push_back(*q.pop_ready());
  }
  CHECK(q.empty());
  REQUIRE(got.size() == jobs.size());
  for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == jobs[i].n);
}

TEST_CASE("retry_queue take_all drains backoff then ready, and counts the backoff", "[retryq]") {
  const auto t0 = clk::now();
  queue_t q;
  q.schedule(t0 + std::chrono::seconds(5), std::make_shared<int>(1));
  q.schedule(t0 + std::chrono::seconds(1), std::make_shared<int>(2));
  q.schedule(t0, std::make_shared<int>(3));
  CHECK(q.move_due(t0) == 1);  // 3 is due now
  CHECK(q.next_due() == t0 + std::chrono::seconds(1));
  std::vector<std::shared_ptr<int>> out;
  CHECK(q.take_all(out) == 2);  // 2 and 1 were in backoff
  REQUIRE(out.size() == 3);
  CHECK(*out[0] == 2);
  CHECK(*out[1] == 1);
  CHECK(*out[2] == 3);
  CHECK(q.empty());
  CHECK(q.next_due() == clk::time_point::max());
}
