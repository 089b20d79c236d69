// bench/bm_metrics.cpp - the cost of metrics and tracing on the empty-job path.
//
// The same pool (N workers, capacity 1024, empty jobs, one producer) with metrics
// off, metrics on, and metrics + tracing on. BM_metrics_ratio runs the three
// interleaved in every iteration, so machine noise hits them alike, and reports
// ns/job for each and the ratios on/off and trace/off from the one run.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "flowpool/flowpool.hpp"

namespace {

enum class mode { off, on, trace };

std::uint64_t run_pool(int workers, std::int64_t jobs, mode m) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = 1024;
  flowpool::metrics_options mo;
  mo.enabled = m != mode::off;
  if (m == mode::trace) mo.trace_limit = static_cast<std::size_t>(jobs) + 100'000;
  std::uint64_t sum = 0;
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o, [](const std::uint64_t& j, flowpool::job_context&) { return j; }, [&sum](std::uint64_t&& r) { sum += r; },
      mo);
  for (std::int64_t i = 0; i < jobs; ++i) pool.submit(static_cast<std::uint64_t>(i));
  pool.close();
  (void)pool.wait();
  if (m != mode::off) benchmark::DoNotOptimize(pool.metrics().run_time.count);
  return sum;
}

void per_job(benchmark::State& state, std::int64_t jobs) {
  state.SetItemsProcessed(state.iterations() * jobs);
  state.counters["ns_per_job"] = benchmark::Counter(static_cast<double>(state.iterations() * jobs),
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

constexpr std::int64_t kJobs = 1'000'000;

void BM_empty_metrics_off(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_pool(static_cast<int>(state.range(0)), kJobs, mode::off));
  per_job(state, kJobs);
}
void BM_empty_metrics_on(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_pool(static_cast<int>(state.range(0)), kJobs, mode::on));
  per_job(state, kJobs);
}
void BM_empty_metrics_trace(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_pool(static_cast<int>(state.range(0)), kJobs, mode::trace));
  per_job(state, kJobs);
}

// Off, on and trace interleaved, 200k jobs each per iteration, in a rotating order;
// ratios from this one run.
void BM_metrics_ratio(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  constexpr std::int64_t jobs = 200'000;
  double t[3] = {0, 0, 0};
  constexpr mode order[3] = {mode::off, mode::on, mode::trace};
  std::size_t rotate = 0;
  for (auto _ : state) {
    // The order rotates each iteration: no mode always runs first (or after another).
    for (std::size_t k = 0; k < 3; ++k) {
      const mode m = order[(k + rotate) % 3];
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(run_pool(n, jobs, m));
      t[static_cast<int>(m)] += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    }
    ++rotate;
  }
  const auto per = static_cast<double>(state.iterations() * jobs);
  state.counters["off_ns_per_job"] = t[0] / per;
  state.counters["on_ns_per_job"] = t[1] / per;
  state.counters["trace_ns_per_job"] = t[2] / per;
  state.counters["on_over_off"] = t[1] / t[0];
  state.counters["trace_over_off"] = t[2] / t[0];
}

// The two sides apart, with the same batching on and off. In BM_metrics_ratio the
// wall time also depends on how deep the queue is when a worker pulls (deeper
// queue, larger micro-batches, fewer turns of the ingress lock), and metrics
// change that depth. Here one worker is held in job 0 while the producer submits
// every other job into a queue that holds them all (producer cost, no worker
// competing for the lock), then released to drain the full queue (worker cost,
// largest batches, no producer). Off and on alternate, in a rotating order.
struct side_times {
  double submit_ns = 0;
  double drain_ns = 0;
};

side_times run_sides(std::int64_t jobs, mode m) {
  flowpool::pool_options o;
  o.workers = 1;
  o.capacity = static_cast<std::ptrdiff_t>(jobs);
  flowpool::metrics_options mo;
  mo.enabled = m != mode::off;
  if (m == mode::trace) mo.trace_limit = static_cast<std::size_t>(jobs) + 100'000;
  std::atomic<bool> gate{false};
  std::uint64_t sum = 0;
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o,
      [&gate](const std::uint64_t& j, flowpool::job_context&) {
        if (j == 0) {
          while (!gate.load(std::memory_order_acquire)) std::this_thread::yield();
        }
        return j;
      },
      [&sum](std::uint64_t&& r) { sum += r; }, mo);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < jobs; ++i) pool.submit(static_cast<std::uint64_t>(i));
  const auto t1 = std::chrono::steady_clock::now();
  gate.store(true, std::memory_order_release);
  pool.close();
  (void)pool.wait();
  const auto t2 = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(sum);
  return {std::chrono::duration<double, std::nano>(t1 - t0).count(),
          std::chrono::duration<double, std::nano>(t2 - t1).count()};
}

void BM_metrics_sides(benchmark::State& state) {
  constexpr std::int64_t jobs = 20'000;
  side_times t[3];
  constexpr mode order[3] = {mode::off, mode::on, mode::trace};
  std::size_t rotate = 0;
  for (auto _ : state) {
    for (std::size_t k = 0; k < 3; ++k) {
      const mode m = order[(k + rotate) % 3];
      const side_times r = run_sides(jobs, m);
      t[static_cast<int>(m)].submit_ns += r.submit_ns;
      t[static_cast<int>(m)].drain_ns += r.drain_ns;
    }
    ++rotate;
  }
  const auto per = static_cast<double>(state.iterations() * jobs);
  state.counters["submit_off_ns"] = t[0].submit_ns / per;
  state.counters["submit_on_ns"] = t[1].submit_ns / per;
  state.counters["drain_off_ns"] = t[0].drain_ns / per;
  state.counters["drain_on_ns"] = t[1].drain_ns / per;
  state.counters["drain_trace_ns"] = t[2].drain_ns / per;
  state.counters["submit_on_over_off"] = t[1].submit_ns / t[0].submit_ns;
  state.counters["drain_on_over_off"] = t[1].drain_ns / t[0].drain_ns;
  state.counters["sum_on_over_off"] = (t[1].submit_ns + t[1].drain_ns) / (t[0].submit_ns + t[0].drain_ns);
}

}  // namespace

BENCHMARK(BM_empty_metrics_off)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_empty_metrics_on)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_empty_metrics_trace)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_metrics_ratio)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_metrics_sides)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
