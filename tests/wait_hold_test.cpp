// detail::wait_holds and detail::once_hold alone, on a bare oneTBB flow graph.
#include <catch2/catch.hpp>

#include <oneapi/tbb/flow_graph.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "flowpool/detail/wait_hold.hpp"

using flowpool::detail::once_hold;
using flowpool::detail::wait_holds;
using namespace std::chrono_literals;

namespace {
// Whether g.wait_for_all() returns within `d` (on another thread). A "no" leaves
// the waiter running: the caller releases the graph and joins it with `finish`.
struct waiter {
  explicit waiter(tbb::flow::graph& g) : done(std::async(std::launch::async, [&g] { g.wait_for_all(); })) {}
  bool returns_within(std::chrono::milliseconds d) { return done.wait_for(d) == std::future_status::ready; }
  std::future<void> done;
};
}  // namespace

TEST_CASE("wait_holds: wait_for_all waits until every reservation is given back", "[wait_hold]") {
  tbb::flow::graph g;
  auto holds = std::make_unique<wait_holds>(g, 3);
  CHECK(holds->size() == 3);
  waiter w(g);
  CHECK_FALSE(w.returns_within(50ms));
  holds->release_one();
  holds->release_one();
  CHECK(holds->size() == 1);
  CHECK_FALSE(w.returns_within(50ms));
  holds.reset();  // the destructor gives back the last one
  CHECK(w.returns_within(10s));
}

TEST_CASE("wait_holds: moves and merges carry the reservations, never copy or drop them", "[wait_hold]") {
  tbb::flow::graph g;
  wait_holds a(g, 2);
  wait_holds b = std::move(a);
  CHECK(a.empty());  // NOLINT(bugprone-use-after-move): a moved-from holds nothing, by contract
  CHECK(b.size() == 2);
  wait_holds c;
  c.merge(std::move(b));
  c.merge(wait_holds(g, 1));
  c.merge(wait_holds{});
  CHECK(c.size() == 3);
  wait_holds d(g, 1);
  d = std::move(c);  // d's own reservation is given back, c's three move in
  CHECK(d.size() == 3);
  waiter w(g);
  CHECK_FALSE(w.returns_within(50ms));
  d.reset();
  CHECK(d.empty());
  CHECK(w.returns_within(10s));
}

TEST_CASE("once_hold: only the first release counts, from any number of racing threads", "[wait_hold]") {
  for (int round = 0; round < 50; ++round) {
    tbb::flow::graph g;
    once_hold input(g);
    waiter w(g);
    std::atomic<int> first{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        if (input.release()) first.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    CAPTURE(round);
    CHECK(first.load() == 1);
    CHECK_FALSE(input.release());
    CHECK(w.returns_within(10s));
  }
  const once_hold none;  // holds nothing: its destructor gives nothing back
}
