// detail::delivery alone: the aggregator's counts, order, stalled hand-offs and failures,
// without an engine or TBB.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <vector>

#include "flowpool/detail/delivery.hpp"
#include "support/concurrency_kit.hpp"

using flowpool::error_kind;
using flowpool::job_error;
using flowpool::job_record;
using flowpool::job_status;
using out_t = flowpool::detail::outcome<int>;
using delivery_t = flowpool::detail::delivery<int>;

namespace {

out_t success(std::uint64_t id, int value) {
  out_t o;
  o.id = id;
  o.key = id;
  o.attempts = 1;
  o.worker = 1;
  o.value = value;
  return o;
}

out_t failure(std::uint64_t id, const char* msg) {
  out_t o;
  o.id = id;
  o.key = id;
  o.attempts = 2;
  o.status = job_status::failed;
  o.message = msg;
  return o;
}

out_t cancelled(std::uint64_t id) {
  out_t o;
  o.id = id;
  o.key = id;
  o.status = job_status::cancelled;
  o.kind = error_kind::cancelled;
  return o;
}

// What a delivery handed on, for checks.
struct sink {
  std::vector<int> values;
  std::vector<job_record> records;
  std::vector<job_error> failures;
  std::stop_source stop;
  delivery_t::hook_fn hook = [this](const job_record& r) { records.push_back(r); };
  const delivery_t::hook_fn no_hook;

  delivery_t make(bool ordered, bool with_hook = true) {
    return {ordered, [this](int&& v) { values.push_back(v); }, with_hook ? hook : no_hook,
            [this](job_error e) { failures.push_back(std::move(e)); }, stop.get_token()};
  }
};

}  // namespace

TEST_CASE("delivery: every outcome is counted once, errors kept, the hook sees each job", "[delivery]") {
  sink s;
  auto d = s.make(false);
  std::vector<out_t> batch;
  batch.push_back(success(1, 10));
  batch.push_back(failure(2, "boom"));
  batch.push_back(cancelled(3));
  batch.push_back(success(4, 40));
  d.fold(batch);
  CHECK(d.succeeded() == 2);
  CHECK(d.failed() == 1);
  CHECK(d.cancelled() == 1);
  CHECK(s.values == std::vector<int>{10, 40});
  REQUIRE(s.records.size() == 4);
  CHECK(s.records[1].job == 2);
  CHECK(s.records[1].status == job_status::failed);
  CHECK(s.records[1].attempts == 2);
  const auto errors = d.take_errors();
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].job == 2);
  CHECK(errors[0].message == "boom");
  CHECK(d.published_completed() == 4);
  CHECK(d.published_succeeded() == 0);  // counts are published only with metrics on
  d.publish_final();
  CHECK(d.published_succeeded() == 2);
  CHECK(d.published_failed() == 1);
  CHECK(d.published_cancelled() == 1);
  CHECK(s.failures.empty());
}

TEST_CASE("delivery: ordered mode delivers by id whatever order the batches come in", "[delivery]") {
  const std::uint64_t seed = fp_test::base_seed();
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    sink s;
    auto d = s.make(true, false);
    const int n = 1 + static_cast<int>(rng() % 2000);
    std::vector<std::uint64_t> ids(static_cast<std::size_t>(n));
    std::iota(ids.begin(), ids.end(), 1);
    // Shuffled within a window, as workers finish out of order.
    for (std::size_t i = 0; i < ids.size(); i += 64) {
      std::shuffle(ids.begin() + static_cast<std::ptrdiff_t>(i),
                   ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + 64)), rng);
    }
    std::size_t i = 0;
    while (i < ids.size()) {
      std::vector<out_t> batch;
      const std::size_t len = 1 + rng() % 16;
      for (; i < ids.size() && batch.size() < len; ++i) batch.push_back(success(ids[i], static_cast<int>(ids[i])));
      d.fold(batch);
      for (std::size_t k = 1; k < s.values.size(); ++k) REQUIRE(s.values[k] == s.values[k - 1] + 1);
      REQUIRE(d.next() == s.values.size() + 1);
    }
    d.flush(static_cast<std::uint64_t>(n) + 1, false);
    CAPTURE(round, n);
    REQUIRE(s.values.size() == static_cast<std::size_t>(n));
    CHECK(d.succeeded() == static_cast<std::uint64_t>(n));
  }
}

TEST_CASE("delivery: a refused hand-off stalls in order, and resumes on retry_stalled", "[delivery]") {
  for (const bool ordered : {false, true}) {
    CAPTURE(ordered);
    sink s;
    auto d = s.make(ordered, false);
    int room = 3;
    std::vector<int> taken;
    std::vector<const std::function<void()>*> wakes;
    const std::function<void()> wake = [] {};
    d.set_forward(
        [&](int& v, const std::function<void()>* w) {
          wakes.push_back(w);
          if (w != nullptr && room == 0) return false;
          if (room > 0) --room;
          taken.push_back(v);
          return true;
        },
        &wake);
    std::vector<out_t> batch;
    for (std::uint64_t id = 1; id <= 8; ++id) batch.push_back(success(id, static_cast<int>(id)));
    if (ordered) std::reverse(batch.begin(), batch.end());
    d.fold(batch);
    CHECK(taken == std::vector<int>{1, 2, 3});
    CHECK(d.stalled());
    CHECK(d.stalled_count() == (ordered ? 0U : 5U));
    CHECK(d.succeeded() == 3);
    CHECK(std::all_of(wakes.begin(), wakes.end(), [&](auto* w) { return w == &wake; }));
    // A later batch waits behind the stalled ones.
    std::vector<out_t> more{success(9, 9)};
    d.fold(more);
    CHECK(taken.size() == 3);
    room = 2;
    d.retry_stalled();
    CHECK(taken == std::vector<int>{1, 2, 3, 4, 5});
    CHECK(d.stalled());
    // At the end (blocking): the rest goes, in order, and nothing is refused.
    d.set_blocking();
    d.retry_stalled();
    d.flush(10, false);
    CHECK(taken == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK_FALSE(d.stalled());
    CHECK(wakes.back() == nullptr);
    CHECK(d.succeeded() == 9);
    CHECK(s.values.empty());  // forwarded, not aggregated
  }
}

TEST_CASE("delivery: an aggregator that throws fails its job, and later successes end cancelled", "[delivery]") {
  sink s;
  int calls = 0;
  std::vector<job_error> failures;
  delivery_t d(
      false,
      [&](int&& v) {
        ++calls;
        if (v == 2) throw std::runtime_error("fold broke");
      },
      s.no_hook, [&](job_error e) { failures.push_back(std::move(e)); }, s.stop.get_token());
  std::vector<out_t> batch{success(1, 1), success(2, 2), success(3, 3), failure(4, "own"), success(5, 5)};
  d.fold(batch);
  CHECK(calls == 2);  // never called again after it threw
  CHECK(d.succeeded() == 1);
  CHECK(d.failed() == 2);     // job 2 (the aggregator's failure) and job 4 (its own)
  CHECK(d.cancelled() == 2);  // jobs 3 and 5: the fold is broken
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].job == 2);
  CHECK(failures[0].kind == error_kind::aggregator);
  CHECK_THAT(failures[0].message, Catch::Contains("fold broke"));
  const auto errors = d.take_errors();
  REQUIRE(errors.size() == 2);
  CHECK(errors[0].kind == error_kind::aggregator);
  CHECK(errors[1].message == "own");
}

TEST_CASE("delivery: a hook that throws fails the run once and is not called again", "[delivery]") {
  sink s;
  int hook_calls = 0;
  std::vector<job_error> failures;
  const delivery_t::hook_fn throwing_hook = [&](const job_record&) {
    ++hook_calls;
    throw std::runtime_error("log full");
  };
  delivery_t d(
      false, [&](int&& v) { s.values.push_back(v); }, throwing_hook,
      [&](job_error e) { failures.push_back(std::move(e)); }, s.stop.get_token());
  std::vector<out_t> batch{success(1, 1), success(2, 2)};
  d.fold(batch);
  d.record_only(job_record{3, job_status::cancelled, 0, 0, {}});
  CHECK(hook_calls == 1);
  CHECK(d.succeeded() == 2);  // the jobs' own states stay
  CHECK(s.values == std::vector<int>{1, 2});
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].job == 1);
  CHECK_THAT(failures[0].message, Catch::Contains("on_job_done threw"));
}

TEST_CASE("delivery: ordered and cancelled, the output is a prefix: everything after the first gap ends cancelled",
          "[delivery]") {
  sink s;
  auto d = s.make(true, false);
  s.stop.request_stop();
  std::vector<out_t> batch{success(1, 1), cancelled(3), success(4, 4), success(6, 6)};
  d.fold(batch);
  CHECK(s.values == std::vector<int>{1});  // 2 has not come
  d.flush(7, true);                        // 2 never will: the order is cut there
  CHECK(s.values == std::vector<int>{1});
  CHECK(d.succeeded() == 1);
  CHECK(d.cancelled() == 3);  // 3, and 4 and 6, which succeeded behind the gap
  CHECK(d.next() == 2);       // the turn stays at the gap
}
