// detail::reorder_window alone: order, growth, memory bound, and the turn it publishes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "flowpool/detail/reorder_window.hpp"
#include "support/concurrency_kit.hpp"

namespace {
struct entry {
  std::uint64_t id = 0;
  std::string payload;  // not trivially copyable: moved in and out
};

// Delivers whatever is in turn; returns the ids delivered.
std::vector<std::uint64_t> drain(flowpool::detail::reorder_window<entry>& w) {
  std::vector<std::uint64_t> out;
  while (auto* e = w.front()) {
    CHECK(e->payload == "p" + std::to_string(e->id));
    out.push_back(e->id);
    w.pop_front();
  }
  return out;
}
}  // namespace

TEST_CASE("reorder_window delivers in id order whatever order values arrive in", "[reorder]") {
  const std::uint64_t seed = fp_test::base_seed() + 17;
  INFO("seed " << seed << " (FLOWPOOL_TEST_SEED=" << fp_test::base_seed() << ")");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    const std::uint64_t n = 1 + rng() % 2000;
    const std::uint64_t span = 1 + rng() % 300;  // how far ahead of the turn an id may arrive
    CAPTURE(round, n, span);
    std::vector<std::uint64_t> ids(n);
    std::iota(ids.begin(), ids.end(), 1);
    // Shuffle within blocks of `span`, so no id arrives more than `span` ahead.
    for (std::uint64_t b = 0; b < n; b += span) {
      std::shuffle(ids.begin() + static_cast<std::ptrdiff_t>(b),
                   ids.begin() + static_cast<std::ptrdiff_t>(std::min(n, b + span)), rng);
    }
    flowpool::detail::reorder_window<entry> w;
    CHECK(w.capacity() == 0);  // nothing allocated before the first park
    std::vector<std::uint64_t> delivered;
    for (const auto id : ids) {
      w.park(entry{id, "p" + std::to_string(id)});
      const auto d = drain(w);
      delivered.insert(delivered.end(), d.begin(), d.end());
      // Grows only as far as the span in flight needs: at most twice it, and 64 at least.
      REQUIRE(w.capacity() <= std::max<std::size_t>(64, 2 * span));
    }
    REQUIRE(delivered.size() == n);
    for (std::uint64_t i = 0; i < n; ++i) REQUIRE(delivered[i] == i + 1);
    CHECK(w.next() == n + 1);
    CHECK(w.front() == nullptr);
  }
}

TEST_CASE("reorder_window keeps parked values when it grows, and finds and erases by id", "[reorder]") {
  flowpool::detail::reorder_window<entry> w;
  // Ids 2..1000 arrive before 1: the ring grows from 64 to 1024 with all of them kept.
  for (std::uint64_t id = 1000; id >= 2; --id) w.park(entry{id, "p" + std::to_string(id)});
  CHECK(w.capacity() == 1024);
  CHECK(w.front() == nullptr);  // 1 has not come
  REQUIRE(w.find(500) != nullptr);
  CHECK(w.find(500)->payload == "p500");
  CHECK(w.find(1001) == nullptr);
  w.erase(500);
  CHECK(w.find(500) == nullptr);
  w.park(entry{1, "p1"});
  const auto d = drain(w);
  REQUIRE(d.size() == 499);  // 1..499: 500 was erased, so the turn stops there
  CHECK(d.back() == 499);
  CHECK(w.next() == 500);
  w.pop_front();  // moves past the erased id
  CHECK(drain(w).size() == 500);
  CHECK(w.next() == 1001);
}

TEST_CASE("reorder_window ids far from 1 and ring wrap-around", "[reorder]") {
  flowpool::detail::reorder_window<entry> w;
  // A long run delivered in order wraps the 64-slot ring many times without growing.
  for (std::uint64_t id = 1; id <= 100000; ++id) {
    w.park(entry{id, "p" + std::to_string(id)});
    REQUIRE(drain(w).size() == 1);
  }
  CHECK(w.capacity() == 64);
  // Two ahead, then the one in turn: all three come out.
  w.park(entry{100003, "p100003"});
  w.park(entry{100002, "p100002"});
  CHECK(w.front() == nullptr);
  w.park(entry{100001, "p100001"});
  CHECK(drain(w) == std::vector<std::uint64_t>{100001, 100002, 100003});
}
