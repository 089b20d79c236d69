// Metrics: counters add up under faults and cancels, histograms, saturation, trace, exporters.

// GCC 12 reports a false -Wmaybe-uninitialized inside libstdc++'s <regex> (std::function
// moves in regex_automaton.h) when built with -fsanitize=address,undefined. The state must
// be set before any header pulls in <functional>. It is not flowpool code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"
#include "support/concurrency_kit.hpp"

using namespace std::chrono_literals;

namespace {

// Checks text against the Prometheus text exposition format rules (version 0.0.4):
// comment lines are "# HELP name text" or "# TYPE name type"; a family's TYPE comes
// before its samples and only once; sample lines are `name{l="v",...} value` with
// valid names, escaped label values and a float value; histogram buckets are
// cumulative, end with le="+Inf", and +Inf equals _count. Returns "" or the problem.
std::string check_exposition(const std::string& text) {
  static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex sample_re(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? ([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$)");
  static const std::regex label_re(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)\")");
  std::map<std::string, std::string> type_of;
  std::set<std::string> seen_samples;
  std::map<std::string, double> last_bucket, inf_bucket, count_of;  // keyed by family + labels (without le)
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string where = "line " + std::to_string(n) + ": " + line;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream c(line);
      std::string hash, kind, name;
      c >> hash >> kind >> name;
      if (kind == "TYPE") {
        std::string type;
        c >> type;
        if (!std::regex_match(name, name_re)) return where + " (bad name)";
        if (type_of.count(name) != 0) return where + " (second TYPE)";
        if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" && type != "untyped") {
          return where + " (bad type)";
        }
        type_of[name] = type;
      } else if (kind == "HELP") {
        if (!std::regex_match(name, name_re)) return where + " (bad name)";
      }
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, sample_re)) return where + " (not a sample line)";
    const std::string name = m[1];
    std::string family = name;
    std::string suffix;
    for (const char* s : {"_bucket", "_sum", "_count"}) {
      const std::string sfx = s;
      if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0 &&
          type_of.count(name.substr(0, name.size() - sfx.size())) != 0 &&
          type_of[name.substr(0, name.size() - sfx.size())] == "histogram") {
        family = name.substr(0, name.size() - sfx.size());
        suffix = sfx;
      }
    }
    if (type_of.count(family) == 0) return where + " (sample before its TYPE)";
    if (type_of[family] == "histogram" && suffix.empty()) return where + " (histogram sample without suffix)";
    std::string labels = m[3];
    std::string le;
    std::string key_labels;
    for (std::sregex_iterator it(labels.begin(), labels.end(), label_re), end; it != end; ++it) {
      if ((*it)[1] == "le") {
        le = (*it)[2];
      } else {
        key_labels += (*it)[0].str() + ",";
      }
    }
    if (!seen_samples.insert(name + "{" + labels + "}").second) return where + " (duplicate sample)";
    const double value = m[4] == "+Inf" ? 1e308 : std::stod(m[4]);
    if (type_of[family] == "counter" && value < 0) return where + " (negative counter)";
    const std::string key = family + "{" + key_labels + "}";
    if (suffix == "_bucket") {
      if (le.empty()) return where + " (bucket without le)";
      if (last_bucket.count(key) != 0 && value < last_bucket[key]) return where + " (buckets not cumulative)";
      last_bucket[key] = value;
      if (le == "+Inf") inf_bucket[key] = value;
    } else if (suffix == "_count") {
      count_of[key] = value;
    }
  }
  for (const auto& [key, count] : count_of) {
    if (inf_bucket.count(key) == 0) return key + ": no le=\"+Inf\" bucket";
    if (inf_bucket[key] != count) return key + ": +Inf bucket != _count";
  }
  if (type_of.empty()) return "no metric families";
  return {};
}

// The exact nearest-rank q-quantile of raw values.
std::uint64_t exact_percentile(std::vector<std::uint64_t> v, double q) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

long bucket_distance(std::uint64_t a, std::uint64_t b) {
  return std::labs(static_cast<long>(flowpool::histogram::bucket_of(a)) -
                   static_cast<long>(flowpool::histogram::bucket_of(b)));
}

}  // namespace

TEST_CASE("histogram: buckets tile the range, are log-scale and at most 25% wide", "[metrics]") {
  using h = flowpool::histogram;
  for (std::size_t i = 0; i + 1 < h::bucket_count; ++i) {
    INFO("bucket " << i);
    REQUIRE(h::upper_bound(i) == h::lower_bound(i + 1));
    REQUIRE(h::bucket_of(h::lower_bound(i)) == i);
    REQUIRE(h::bucket_of(h::upper_bound(i) - 1) == i);
    if (i >= 8) CHECK(4 * (h::upper_bound(i) - h::lower_bound(i)) <= h::lower_bound(i));
  }
  CHECK(h::bucket_of(~std::uint64_t{0}) == h::bucket_count - 1);
}

TEST_CASE("histogram: percentiles are within one bucket of the exact ones", "[metrics]") {
  const std::uint64_t seed = fp_test::base_seed() + 61;
  INFO("seed " << seed << " (rerun: FLOWPOOL_TEST_SEED=" << seed - 61 << ")");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    flowpool::histogram hist;
    std::vector<std::uint64_t> raw;
    const int n = 1 + static_cast<int>(rng() % 5000);
    std::uniform_real_distribution<double> log_ns(0.0, 30.0);  // 1 ns .. ~1 s, log-uniform
    for (int i = 0; i < n; ++i) {
      const auto v = static_cast<std::uint64_t>(std::exp2(log_ns(rng)));
      raw.push_back(v);
      hist.record(std::chrono::nanoseconds(v));
    }
    REQUIRE(hist.count == raw.size());
    CHECK(hist.max_ns == *std::max_element(raw.begin(), raw.end()));
    for (const double q : {0.5, 0.95, 0.99, 1.0}) {
      const std::uint64_t exact = exact_percentile(raw, q);
      const auto est = static_cast<std::uint64_t>(hist.percentile(q).count());
      INFO("round " << round << " n=" << n << " q=" << q << " exact=" << exact << " estimate=" << est);
      CHECK(bucket_distance(est, exact) <= 1);
      CHECK(est <= hist.max_ns);
    }
  }
}

TEST_CASE("metrics: counters add up under randomized runs with faults and cancels", "[metrics]") {
  const int workers = GENERATE(1, 2, 4);
  const std::uint64_t base = fp_test::base_seed();
  for (int round = 0; round < 6; ++round) {
    const std::uint64_t seed = base * 31 + static_cast<std::uint64_t>(workers * 100 + round);
    std::mt19937_64 rng(seed);
    const int jobs = 50 + static_cast<int>(rng() % 400);
    const int cancel_after = (rng() % 3 == 0) ? static_cast<int>(rng() % static_cast<std::uint64_t>(jobs)) : -1;
    const std::uint64_t fail_mod = 3 + rng() % 7;
    const std::uint64_t flaky_mod = 2 + rng() % 5;
    const std::ptrdiff_t capacity = 1 + static_cast<std::ptrdiff_t>(rng() % 64);
    std::printf("metrics counters: seed=%llu (FLOWPOOL_TEST_SEED=%llu) workers=%d jobs=%d capacity=%td cancel_after=%d\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(base), workers, jobs,
                capacity, cancel_after);
    INFO("seed=" << seed << " workers=" << workers << " jobs=" << jobs << " capacity=" << capacity
                 << " cancel_after=" << cancel_after);
    fp_test::terminal_ledger ledger(static_cast<std::size_t>(jobs));
    flowpool::pool_options o;
    o.workers = workers;
    o.capacity = capacity;
    o.retry.max_attempts = 3;
    o.retry.backoff_base = 200us;
    o.retry.backoff_cap = 2ms;
    o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
    std::atomic<int> snapshots{0};
    std::atomic<int> bad_snapshots{0};
    flowpool::metrics_options mo;
    mo.enabled = true;
    mo.interval = 2ms;
    mo.on_snapshot = [&](const flowpool::metrics_snapshot& s) {
      snapshots.fetch_add(1);
      if (s.max_queue_depth > s.capacity || s.workers != workers || s.busy_workers > workers) bad_snapshots.fetch_add(1);
    };
    flowpool::pool<int, int> pool(
        o,
        [&](const int& j, flowpool::job_context& ctx) {
          const auto burn = fp_test::spin(200 + static_cast<std::uint64_t>(j % 7) * 300);
          if (static_cast<std::uint64_t>(j) % fail_mod == 0) throw std::runtime_error("injected failure");
          if (static_cast<std::uint64_t>(j) % flaky_mod == 0 && ctx.attempt() == 1) throw std::runtime_error("flaky");
          if (j % 11 == 0) ctx.throw_if_stop_requested();
          return j + static_cast<int>(burn & 1U);
        },
        [](int&&) {}, mo);
    // A poller reads live metrics from another thread while the run goes on.
    std::atomic<bool> stop_polling{false};
    std::atomic<int> poll_violations{0};
    std::thread poller([&] {
      std::uint64_t last_started = 0, last_submitted = 0;
      while (!stop_polling.load()) {
        const auto m = pool.metrics();
        if (m.started < last_started || m.submitted < last_submitted || m.max_queue_depth > m.capacity ||
            m.busy_workers > workers) {
          poll_violations.fetch_add(1);
        }
        last_started = m.started;
        last_submitted = m.submitted;
        std::this_thread::sleep_for(100us);
      }
    });
    int accepted = 0;
    for (int j = 1; j <= jobs; ++j) {
      if (j - 1 == cancel_after) pool.cancel();
      if (!pool.submit(j)) break;
      ++accepted;
    }
    pool.close();
    const auto r = pool.wait();
    stop_polling.store(true);
    poller.join();
    const auto m = pool.metrics();
    REQUIRE(ledger.check(r).empty());
    CHECK(m.final);
    CHECK(m.submitted == r.submitted);
    CHECK(m.submitted == static_cast<std::uint64_t>(accepted));
    CHECK(m.succeeded == r.succeeded);
    CHECK(m.failed == r.failed);
    CHECK(m.cancelled == r.cancelled);
    CHECK(m.retried == r.retried);
    CHECK(m.submitted == m.succeeded + m.failed + m.cancelled);
    // Every attempt started is in both histograms; the ledger's attempts add up to them.
    std::uint64_t attempts = 0;
    for (std::uint64_t id = 1; id <= r.submitted; ++id) attempts += ledger[id].attempts;
    CHECK(m.started == attempts);
    CHECK(m.run_time.count == m.started);
    CHECK(m.queue_wait.count == m.started);
    CHECK(m.max_queue_depth <= static_cast<std::size_t>(capacity));
    CHECK(m.max_queue_depth == r.max_queue_depth);
    CHECK(m.queue_depth == 0);
    CHECK(m.busy_workers == 0);
    CHECK(m.busy_time.count() >= 0);
    CHECK(m.saturation() <= 1.0 + 1e-9);
    CHECK(poll_violations.load() == 0);
    CHECK(bad_snapshots.load() == 0);
    (void)snapshots.load();
  }
}

TEST_CASE("metrics: the snapshot callback runs every interval", "[metrics]") {
  flowpool::pool_options o;
  o.workers = 2;
  std::atomic<int> calls{0};
  flowpool::metrics_options mo;
  mo.interval = 5ms;
  mo.on_snapshot = [&](const flowpool::metrics_snapshot&) { calls.fetch_add(1); };
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) {
        std::this_thread::sleep_for(20ms);
        return j;
      },
      [](int&&) {}, mo);
  for (int j = 0; j < 8; ++j) REQUIRE(pool.submit(j));  // 4 waves of 20 ms: at least 80 ms
  pool.close();
  (void)pool.wait();
  const int n = calls.load();
  INFO("calls " << n);
  CHECK(n >= 3);  // 80 ms at 5 ms would be 16; allow a very slow (sanitized) timer thread
  // No call after wait(): the timer is stopped.
  std::this_thread::sleep_for(20ms);
  CHECK(calls.load() == n);
}

TEST_CASE("metrics: options are validated", "[metrics]") {
  flowpool::pool_options o;
  o.workers = 1;
  flowpool::metrics_options mo;
  mo.interval = 0ms;
  mo.on_snapshot = [](const flowpool::metrics_snapshot&) {};
  auto make = [&] { flowpool::pool<int, int> p(o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {}, mo); };
  CHECK_THROWS_AS(make(), flowpool::error);
  mo.on_snapshot = nullptr;
  mo.trace_limit = 10;
  mo.sample_period = 0ms;
  CHECK_THROWS_AS(make(), flowpool::error);
}

TEST_CASE("metrics: off by default, and a pool without them still reports the basic counts", "[metrics]") {
  flowpool::pool_options o;
  o.workers = 2;
  flowpool::pool<int, int> pool(o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {});
  for (int j = 0; j < 100; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  const auto m = pool.metrics();
  CHECK(m.submitted == 100);
  CHECK(m.succeeded == r.succeeded);
  CHECK(m.started == 0);  // not collected
  CHECK(m.run_time.count == 0);
  CHECK(pool.trace().attempts.empty());
}

TEST_CASE("metrics: run-time percentiles match the raw job durations within one bucket", "[metrics]") {
  const std::uint64_t seed = fp_test::base_seed() + 7;
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> spins(400);
  for (auto& s : spins) s = 2000 + rng() % 200000;  // roughly 2 us .. 200 us of CPU
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 16;
  std::vector<std::uint64_t> raw;
  o.on_job_done = [&](const flowpool::job_record& rec) {
    raw.push_back(static_cast<std::uint64_t>(rec.duration.count()));
  };
  flowpool::metrics_options mo;
  mo.enabled = true;
  flowpool::pool<std::size_t, int> pool(
      o, [&](const std::size_t& j, flowpool::job_context&) { return static_cast<int>(fp_test::spin(spins[j]) & 1); },
      [](int&&) {}, mo);
  for (std::size_t j = 0; j < spins.size(); ++j) REQUIRE(pool.submit(std::size_t{j}));
  pool.close();
  REQUIRE(pool.wait().succeeded == spins.size());
  const auto m = pool.metrics();
  REQUIRE(m.run_time.count == raw.size());
  // The histogram records each attempt's job_record::duration (the same two clock
  // reads), so preemption cannot make them differ: the estimate from the buckets
  // lies within one bucket of the exact percentile of the raw durations.
  for (const double q : {0.5, 0.95, 0.99, 1.0}) {
    const std::uint64_t exact = exact_percentile(raw, q);
    const auto est = static_cast<std::uint64_t>(m.run_time.percentile(q).count());
    INFO("q=" << q << " exact=" << exact << " histogram=" << est);
    CHECK(bucket_distance(est, exact) <= 1);
  }
}

TEST_CASE("metrics: jobs a cancel takes from the queue count as cancelled at once, and once", "[metrics]") {
  // The worker holds job 0 at a gate while 49 jobs wait. After cancel() and before
  // wait(), live reads already count the 49 as cancelled (queue depth 0), so a
  // scrape in between sees every submitted job accounted for; wait() adds nothing.
  for (const bool with_metrics : {false, true}) {
    DYNAMIC_SECTION("metrics " << (with_metrics ? "on" : "off")) {
      flowpool::pool_options o;
      o.workers = 1;
      o.capacity = 100;
      flowpool::metrics_options mo;
      mo.enabled = with_metrics;
      std::atomic<bool> gate{false};
      std::atomic<bool> holding{false};
      flowpool::pool<int, int> pool(
          o,
          [&](const int& j, flowpool::job_context&) {
            holding.store(true, std::memory_order_release);
            while (!gate.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
            return j;
          },
          [](int&&) {}, mo);
      REQUIRE(pool.submit(0));
      while (!holding.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
      for (int j = 1; j < 50; ++j) REQUIRE(pool.submit(j));
      pool.cancel();
      const auto live = pool.metrics();
      CHECK(live.queue_depth == 0);
      CHECK(live.cancelled == 49);
      CHECK(pool.snapshot().completed == 49);
      gate.store(true, std::memory_order_release);
      const auto r = pool.wait();
      CHECK(r.cancelled == 49);
      CHECK(r.succeeded == 1);  // job 0 had started; it ran to its end
      const auto m = pool.metrics();
      CHECK(m.cancelled == 49);
      CHECK(m.succeeded + m.failed + m.cancelled == m.submitted);
      CHECK(pool.snapshot().completed == 50);
    }
  }
}

TEST_CASE("metrics: queue wait is the time each job spent in the FIFO", "[metrics]") {
  // Every job waits at a gate, so the workers hold the first N jobs and the rest
  // stay queued. The producer submits half the jobs, pauses, submits the other half,
  // pauses, and opens the gate. A job of the first half waited at least both pauses,
  // one of the second half at least the second: the histogram must say so, and no
  // wait can exceed the whole run. 2000 queued jobs grow the enqueue-time ring
  // several times while it holds live entries.
  for (const int n : {1, 2, 4}) {
    DYNAMIC_SECTION("workers=" << n) {
      constexpr int jobs = 2000;
      flowpool::pool_options o;
      o.workers = n;
      o.capacity = jobs;
      flowpool::metrics_options mo;
      mo.enabled = true;
      std::atomic<bool> gate{false};
      const auto t_start = std::chrono::steady_clock::now();
      flowpool::pool<int, int> pool(
          o,
          [&gate](const int& j, flowpool::job_context&) {
            while (!gate.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
            return j;
          },
          [](int&&) {}, mo);
      for (int j = 0; j < jobs / 2; ++j) REQUIRE(pool.submit(j));
      const auto t_first_half = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(30ms);
      for (int j = jobs / 2; j < jobs; ++j) REQUIRE(pool.submit(j));
      const auto t_second_half = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(30ms);
      const auto t_open = std::chrono::steady_clock::now();
      gate.store(true, std::memory_order_release);
      pool.close();
      REQUIRE(pool.wait().succeeded == jobs);
      const auto t_end = std::chrono::steady_clock::now();
      const auto m = pool.metrics();
      REQUIRE(m.queue_wait.count == static_cast<std::uint64_t>(jobs));
      const auto ns = [](auto d) { return static_cast<std::uint64_t>(std::chrono::nanoseconds(d).count()); };
      // Samples certainly below `bound`: those in buckets that end at or below it.
      const auto below = [&m](std::uint64_t bound) {
        std::uint64_t c = 0;
        for (std::size_t i = 0; i < flowpool::histogram::bucket_count; ++i) {
          if (flowpool::histogram::upper_bound(i) <= bound) c += m.queue_wait.buckets[i];
        }
        return c;
      };
      const std::uint64_t both_pauses = ns(t_open - t_first_half);
      const std::uint64_t second_pause = ns(t_open - t_second_half);
      INFO("pauses " << both_pauses << " / " << second_pause << " ns, max wait " << m.queue_wait.max_ns);
      // Only the N jobs the workers took before the gate opened waited less.
      CHECK(below(second_pause) <= static_cast<std::uint64_t>(n));
      CHECK(below(both_pauses) <= static_cast<std::uint64_t>(jobs / 2 + n));
      // 1 ms for the metrics clock's rate error against steady_clock over the run.
      CHECK(m.queue_wait.max_ns <= ns(t_end - t_start) + 1'000'000);
      CHECK(m.queue_wait.sum_ns >= static_cast<std::uint64_t>(jobs / 2 - n) * both_pauses);
    }
  }
}

TEST_CASE("metrics: live counts and busy time never go back while the run goes on", "[metrics]") {
  // A reader polls metrics() as fast as it can while 2 workers end many short
  // batches: each value it sees is at least the one it saw before. Busy time is
  // exported as a Prometheus counter, where a dip reads as a counter reset.
  const std::uint64_t seed = fp_test::base_seed() + 11;
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> spins(20000);
  for (auto& x : spins) x = 200 + rng() % 4000;
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 256;
  flowpool::metrics_options mo;
  mo.enabled = true;
  flowpool::pool<std::size_t, int> pool(
      o, [&](const std::size_t& j, flowpool::job_context&) { return static_cast<int>(fp_test::spin(spins[j]) & 1); },
      [](int&&) {}, mo);
  std::atomic<bool> done{false};
  std::uint64_t reads = 0;
  std::int64_t dips = 0;
  std::string first_dip;
  std::thread reader([&] {
    flowpool::metrics_snapshot prev = pool.metrics();
    while (!done.load(std::memory_order_acquire)) {
      const flowpool::metrics_snapshot m = pool.metrics();
      ++reads;
      const bool back = m.busy_time < prev.busy_time || m.started < prev.started ||
                        m.run_time.count < prev.run_time.count || m.succeeded < prev.succeeded ||
                        m.submitted < prev.submitted;
      if (back && dips++ == 0) {
        first_dip = "busy " + std::to_string(prev.busy_time.count()) + " -> " + std::to_string(m.busy_time.count()) +
                    ", started " + std::to_string(prev.started) + " -> " + std::to_string(m.started);
      }
      prev = m;
    }
  });
  for (std::size_t j = 0; j < spins.size(); ++j) REQUIRE(pool.submit(std::size_t{j}));
  pool.close();
  const auto r = pool.wait();
  done.store(true, std::memory_order_release);
  reader.join();
  INFO("reads " << reads << ", first step back: " << first_dip);
  CHECK(r.succeeded == spins.size());
  CHECK(dips == 0);
  CHECK(reads > 0);
  const auto fin = pool.metrics();
  CHECK(fin.final);
  CHECK(fin.started == spins.size());
}

namespace {
// CPU work per job: long enough that the engine's own per-batch work (slow under
// sanitizers) is a small share of a worker's time.
std::uint64_t spin_per_job() { return fp_test::sanitized() ? 1'000'000 : 200'000; }

double saturation_of(int workers, int busy_jobs, bool cpu) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = 100000;
  flowpool::metrics_options mo;
  mo.enabled = true;
  flowpool::pool<int, int> pool(
      o,
      [cpu](const int& j, flowpool::job_context&) {
        std::uint64_t burn = 0;
        if (cpu) {
          burn = fp_test::spin(spin_per_job());  // used below: the loop cannot be optimized away
        } else {
          std::this_thread::sleep_for(300ms);
        }
        return j + static_cast<int>(burn & 1U);
      },
      [](int&&) {}, mo);
  for (int j = 0; j < busy_jobs; ++j) REQUIRE(pool.submit(j));
  pool.close();
  (void)pool.wait();
  const auto m = pool.metrics();
  std::printf("saturation: workers=%d jobs=%d %s: %.3f (busy %.1f ms, wall %.1f ms)\n", workers, busy_jobs,
              cpu ? "cpu" : "sleep", m.saturation(), static_cast<double>(m.busy_time.count()) / 1e6,
              static_cast<double>(m.wall.count()) / 1e6);
  return m.saturation();
}
}  // namespace

TEST_CASE("saturation: at least 0.9 when every worker has work all the time", "[timing]") {
  const int workers = GENERATE(1, 2);
  // A deep queue of CPU jobs, submitted up front: workers never wait for work.
  const int jobs = fp_test::sanitized() ? 150 : 1000;
  double s = saturation_of(workers, jobs, true);
  if (s < 0.9) {
    std::printf("saturation: first try %.3f, retrying once\n", s);
    s = saturation_of(workers, jobs, true);
  }
  CHECK(s >= 0.9);
  CHECK(s <= 1.0 + 1e-9);
}

TEST_CASE("saturation: about 0.5 when half the workers idle by design", "[timing]") {
  // 4 workers, 2 jobs of 300 ms: two workers busy for the whole run, two never.
  double s = saturation_of(4, 2, false);
  if (std::abs(s - 0.5) > 0.1) {
    std::printf("saturation: first try %.3f, retrying once\n", s);
    s = saturation_of(4, 2, false);
  }
  CHECK(std::abs(s - 0.5) <= 0.1);
}

TEST_CASE("trace: one event per attempt, no overlap per worker, valid Chrome JSON and SVG", "[metrics]") {
  const int workers = GENERATE(1, 3);
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = 8;
  o.retry.max_attempts = 3;
  o.retry.backoff_base = 300us;
  fp_test::terminal_ledger ledger(300);
  o.on_job_done = [&](const flowpool::job_record& rec) { ledger.record(rec); };
  flowpool::metrics_options mo;
  mo.trace_limit = 1'000'000;
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context& ctx) {
        const auto burn = fp_test::spin(3000);
        if (j % 5 == 0 && ctx.attempt() < 3) throw std::runtime_error("flaky");
        if (j % 17 == 0) throw flowpool::permanent_error("broken");
        return j + static_cast<int>(burn & 1U);
      },
      [](int&&) {}, mo);
  for (int j = 1; j <= 300; ++j) REQUIRE(pool.submit(j));
  pool.close();
  const auto r = pool.wait();
  REQUIRE(ledger.check(r).empty());
  const auto m = pool.metrics();
  const auto t = pool.trace();
  CHECK(t.dropped == 0);
  REQUIRE(t.attempts.size() == m.started);
  // One event per (job, attempt), for attempts 1..attempts of every job.
  std::set<std::pair<std::uint64_t, std::uint32_t>> seen;
  for (const auto& e : t.attempts) {
    CHECK(seen.insert({e.job, e.attempt}).second);
    CHECK(e.end_ns >= e.start_ns);
    CHECK(e.worker >= 1);
    CHECK(e.worker <= workers);
  }
  for (std::uint64_t id = 1; id <= r.submitted; ++id) {
    for (std::uint32_t a = 1; a <= ledger[id].attempts; ++a) CHECK(seen.count({id, a}) == 1);
    // The last attempt's status is the job's; earlier ones were retried.
    if (ledger[id].attempts > 1) CHECK(seen.count({id, ledger[id].attempts + 1}) == 0);
  }
  // Per worker, attempts never overlap.
  std::map<int, std::int64_t> last_end;
  for (const auto& e : t.attempts) {  // sorted by start
    if (last_end.count(e.worker) != 0) CHECK(e.start_ns >= last_end[e.worker]);
    last_end[e.worker] = e.end_ns;
  }
  CHECK(t.samples.size() >= 2);  // at least the start and the end
  // Chrome trace: valid JSON, one X event per attempt, counter tracks.
  std::ostringstream js;
  flowpool::write_chrome_trace(js, {{"work", t}}, t.start_ns);
  const auto doc = nlohmann::json::parse(js.str());
  std::size_t x = 0, counters = 0;
  for (const auto& ev : doc["traceEvents"]) {
    if (ev["ph"] == "X") {
      ++x;
      CHECK(ev["args"].contains("job"));
      CHECK(ev["args"].contains("attempt"));
      CHECK(ev["args"].contains("status"));
    }
    if (ev["ph"] == "C") ++counters;
  }
  CHECK(x == t.attempts.size());
  CHECK(counters == 2 * t.samples.size());
  CHECK(doc["otherData"]["dropped_events"] == 0);
  // SVG: one bar per attempt.
  std::ostringstream svg;
  flowpool::write_timeline_svg(svg, "test", {{"work", t}}, t.start_ns);
  const std::string s = svg.str();
  std::size_t bars = 0;
  for (auto pos = s.find("class=\"attempt\""); pos != std::string::npos; pos = s.find("class=\"attempt\"", pos + 1)) ++bars;
  CHECK(bars == t.attempts.size());
}

TEST_CASE("trace: bounded by trace_limit, and says how much it dropped", "[metrics]") {
  flowpool::pool_options o;
  o.workers = 2;
  flowpool::metrics_options mo;
  mo.trace_limit = 50;
  flowpool::pool<int, int> pool(o, [](const int& j, flowpool::job_context&) { return j; }, [](int&&) {}, mo);
  for (int j = 0; j < 1000; ++j) REQUIRE(pool.submit(j));
  pool.close();
  (void)pool.wait();
  const auto t = pool.trace();
  // An eighth of 50 events is under 4 samples: no sampling, every event goes to attempts.
  CHECK(t.samples.empty());
  CHECK(t.attempts.size() == 50);
  CHECK(t.dropped == 1000 - 50);
  std::ostringstream js;
  flowpool::write_chrome_trace(js, {{"work", t}}, t.start_ns);
  const auto doc = nlohmann::json::parse(js.str());
  CHECK(doc["otherData"]["dropped_events"] == t.dropped);
}

TEST_CASE("trace: gauge samples never crowd out attempts, and still cover the whole run", "[metrics]") {
  // 150 jobs of 2 ms on one worker take at least 300 ms: 300 samples at the 1 ms
  // period, against room for 800 / 16 = 50. The samples are thinned to fit, and
  // all 150 attempts are kept.
  flowpool::pool_options o;
  o.workers = 1;
  flowpool::metrics_options mo;
  mo.trace_limit = 800;
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) {
        std::this_thread::sleep_for(2ms);
        return j;
      },
      [](int&&) {}, mo);
  for (int j = 0; j < 150; ++j) REQUIRE(pool.submit(j));
  pool.close();
  (void)pool.wait();
  const auto t = pool.trace();
  CHECK(t.attempts.size() == 150);
  INFO("samples " << t.samples.size() << ", dropped " << t.dropped);
  CHECK(t.samples.size() <= 50);
  CHECK(t.samples.size() >= 25);  // thinning keeps at least half
  CHECK(t.attempts.size() + 2 * t.samples.size() <= 800);
  CHECK(t.dropped > 0);
  CHECK(t.dropped % 2 == 0);  // only samples were dropped, two events each
  REQUIRE(t.samples.size() >= 2);
  CHECK(t.samples.front().t_ns == t.start_ns);
  // Spread over the run: no gap between samples is more than a quarter of it
  // (a trace that stopped sampling once full would leave one gap of most of it).
  const std::int64_t span = t.end_ns - t.start_ns;
  for (std::size_t i = 1; i < t.samples.size(); ++i) {
    INFO("gap " << i << ": " << (t.samples[i].t_ns - t.samples[i - 1].t_ns) << " ns of " << span);
    CHECK(t.samples[i].t_ns - t.samples[i - 1].t_ns <= span / 4);
  }
  CHECK(t.samples.back().t_ns >= t.end_ns - span / 4);
}

TEST_CASE("prometheus: the exposition parses under the format rules", "[metrics]") {
  flowpool::pool_options o;
  o.workers = 2;
  flowpool::metrics_options mo;
  mo.enabled = true;
  flowpool::pool<int, int> pool(
      o,
      [](const int& j, flowpool::job_context&) {
        if (j % 10 == 0) throw std::runtime_error("boom");
        return j;
      },
      [](int&&) {}, mo);
  for (int j = 1; j <= 200; ++j) REQUIRE(pool.submit(j));
  pool.close();
  (void)pool.wait();
  const auto m = pool.metrics();
  const std::string text = flowpool::to_prometheus("g\"raph\\\n", {{"stage-1", m}, {"second", m}});
  INFO(text);
  CHECK(check_exposition(text).empty());
  INFO(check_exposition(text));
  CHECK(text.find("flowpool_jobs_failed_total{graph=\"g\\\"raph\\\\\\n\",stage=\"stage-1\"} 20\n") != std::string::npos);
  CHECK(text.find("flowpool_run_time_seconds_count{graph=\"g\\\"raph\\\\\\n\",stage=\"second\"} 200\n") !=
        std::string::npos);
  // Bucket bounds are powers of two ns, written exactly in seconds (not rounded).
  CHECK(text.find(",le=\"0.000001024\"} ") != std::string::npos);
  CHECK(text.find(",le=\"1.073741824\"} ") != std::string::npos);
  CHECK(text.find(",le=\"1099.511627776\"} ") != std::string::npos);
  // The checker is real: it rejects broken input.
  CHECK_FALSE(check_exposition("flowpool_x 1\n").empty());  // no TYPE
  CHECK_FALSE(check_exposition("# TYPE flowpool_x counter\nflowpool_x{a=\"b} 1\n").empty());
  CHECK_FALSE(check_exposition("# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\nh_count 4\n").empty());
}
