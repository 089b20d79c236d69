// bench/bm_core.cpp - the engine against a raw oneTBB flow graph on the same workloads.
//
// Raw oneTBB peer: a plain function_node with concurrency N, then a serial
// function_node, fed with try_put from the caller (its input buffer is unbounded).
// Every benchmark reports ns/job as `ns_per_job` and uses real time.
#include <benchmark/benchmark.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "flowpool/flowpool.hpp"
#include "workloads.hpp"

namespace {

constexpr std::int64_t kJobs = 1'000'000;

void set_job_counters(benchmark::State& state, std::int64_t jobs_per_iter) {
  state.SetItemsProcessed(state.iterations() * jobs_per_iter);
  state.counters["ns_per_job"] = benchmark::Counter(
      static_cast<double>(state.iterations() * jobs_per_iter),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

std::uint64_t run_flowpool(int workers, std::int64_t jobs, std::uint64_t spin_iters, bool with_retry = false) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = 1024;
  if (with_retry) {  // a retry policy that never fires: measures the machinery's cost
    o.retry.max_attempts = 3;
    o.retry.backoff_base = std::chrono::milliseconds(1);
    o.retry.jitter = 0.2;
  }
  std::uint64_t sum = 0;
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o,
      [spin_iters](const std::uint64_t& j, flowpool::job_context&) {
        return spin_iters == 0 ? j : fp_bench::spin(spin_iters, j + 1);
      },
      [&sum](std::uint64_t&& r) { sum += r; });
  for (std::int64_t i = 0; i < jobs; ++i) pool.submit(static_cast<std::uint64_t>(i));
  pool.close();
  (void)pool.wait();
  return sum;
}

std::uint64_t run_raw_tbb(int workers, std::int64_t jobs, std::uint64_t spin_iters) {
  // The raw graph on TBB's default arena, as a user would write it.
  std::uint64_t sum = 0;
  tbb::flow::graph g;
  tbb::flow::function_node<std::uint64_t, std::uint64_t> work(
      g, static_cast<std::size_t>(workers),
      [spin_iters](std::uint64_t j) { return spin_iters == 0 ? j : fp_bench::spin(spin_iters, j + 1); });
  tbb::flow::function_node<std::uint64_t> agg(g, tbb::flow::serial, [&sum](std::uint64_t r) {
    sum += r;
    return tbb::flow::continue_msg{};
  });
  tbb::flow::make_edge(work, agg);
  for (std::int64_t i = 0; i < jobs; ++i) work.try_put(static_cast<std::uint64_t>(i));
  g.wait_for_all();
  return sum;
}

void BM_flowpool_empty(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(run_flowpool(n, kJobs, 0));
  set_job_counters(state, kJobs);
}
void BM_flowpool_empty_retry_policy(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(run_flowpool(n, kJobs, 0, true));
  set_job_counters(state, kJobs);
}
void BM_raw_tbb_empty(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(run_raw_tbb(n, kJobs, 0));
  set_job_counters(state, kJobs);
}

void BM_flowpool_cpu10us(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const std::uint64_t iters = 10 * fp_bench::iterations_per_us();
  constexpr std::int64_t jobs = 20'000;
  for (auto _ : state) benchmark::DoNotOptimize(run_flowpool(n, jobs, iters));
  set_job_counters(state, jobs);
}
void BM_raw_tbb_cpu10us(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const std::uint64_t iters = 10 * fp_bench::iterations_per_us();
  constexpr std::int64_t jobs = 20'000;
  for (auto _ : state) benchmark::DoNotOptimize(run_raw_tbb(n, jobs, iters));
  set_job_counters(state, jobs);
}

// Cancel with 1M queued jobs: time from cancel() to wait() returning.
void BM_flowpool_cancel_1M_queued(benchmark::State& state) {
  for (auto _ : state) {
    flowpool::pool_options o;
    o.workers = 2;
    o.capacity = 1'000'000;
    std::atomic<bool> release{false};
    flowpool::pool<std::uint64_t, std::uint64_t> pool(
        o,
        [&release](const std::uint64_t& j, flowpool::job_context& ctx) {
          while (!release.load(std::memory_order_relaxed) && !ctx.stop_requested()) std::this_thread::yield();
          return j;
        },
        [](std::uint64_t&&) {});
    for (std::uint64_t i = 0; i < 1'000'002; ++i) pool.submit(std::uint64_t{i});  // 2 running + 1M queued
    while (pool.snapshot().queue_depth != 1'000'000) std::this_thread::yield();
    const auto t0 = std::chrono::steady_clock::now();
    pool.cancel();
    const auto r = pool.wait();
    const auto t1 = std::chrono::steady_clock::now();
    if (r.cancelled < 1'000'000) state.SkipWithError("not every queued job was accounted as cancelled");
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

// fail_fast with 1M queued jobs: from the first (final) failure to wait() returning.
void BM_flowpool_fail_fast_1M_queued(benchmark::State& state) {
  for (auto _ : state) {
    flowpool::pool_options o;
    o.workers = 2;
    o.capacity = 1'000'000;
    o.on_error = flowpool::error_policy::fail_fast;
    std::atomic<bool> fire{false};
    std::atomic<std::int64_t> failed_at_ns{0};
    flowpool::pool<std::uint64_t, std::uint64_t> pool(
        o,
        [&](const std::uint64_t& j, flowpool::job_context& ctx) -> std::uint64_t {
          if (j == 0) {  // the first job fails once every job is queued
            while (!fire.load(std::memory_order_acquire)) std::this_thread::yield();
            failed_at_ns = std::chrono::steady_clock::now().time_since_epoch().count();
            throw std::runtime_error("first failure");
          }
          while (!ctx.stop_requested()) std::this_thread::yield();  // the other worker: busy until cancel
          return j;
        },
        [](std::uint64_t&&) {});
    for (std::uint64_t i = 0; i < 1'000'002; ++i) pool.submit(std::uint64_t{i});
    while (pool.snapshot().queue_depth != 1'000'000) std::this_thread::yield();
    fire.store(true, std::memory_order_release);
    const auto r = pool.wait();
    const auto t1 = std::chrono::steady_clock::now().time_since_epoch().count();
    if (!r.cause || r.cancelled < 1'000'000) state.SkipWithError("fail_fast did not cancel every queued job");
    state.SetIterationTime(static_cast<double>(t1 - failed_at_ns.load()) * 1e-9);
  }
}

void BM_raw_tbb_cancel_1M_queued(benchmark::State& state) {
  for (auto _ : state) {
    std::atomic<bool> stop{false};
    tbb::task_group_context ctx;
    tbb::flow::graph g(ctx);
    tbb::flow::function_node<std::uint64_t, std::uint64_t> work(g, 2, [&stop](std::uint64_t j) {
      while (!stop.load(std::memory_order_relaxed)) std::this_thread::yield();
      return j;
    });
    tbb::flow::function_node<std::uint64_t> agg(g, tbb::flow::serial,
                                                [](std::uint64_t) { return tbb::flow::continue_msg{}; });
    tbb::flow::make_edge(work, agg);
    for (std::uint64_t i = 0; i < 1'000'002; ++i) work.try_put(i);
    const auto t0 = std::chrono::steady_clock::now();
    g.cancel();
    stop = true;
    g.wait_for_all();
    const auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

}  // namespace

BENCHMARK(BM_flowpool_empty)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flowpool_empty_retry_policy)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_raw_tbb_empty)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flowpool_cpu10us)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_raw_tbb_cpu10us)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flowpool_cancel_1M_queued)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);
BENCHMARK(BM_flowpool_fail_fast_1M_queued)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);
BENCHMARK(BM_raw_tbb_cancel_1M_queued)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);

BENCHMARK_MAIN();
