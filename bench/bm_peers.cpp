// bench/bm_peers.cpp - every in-process peer (bench/peers.hpp) on every workload
// (bench/workloads.hpp), side by side in one run, plus cancel with 1M queued jobs.
//
// Benchmark names: "<workload>/<peer>/<workers>", and "cancel_1M/<peer>/2".
// Counters: ns_per_job (wall time per job), items_per_second (jobs/s), workers, jobs.
// Every iteration checks the folded sum against a serial run of the same jobs.
//
// Extra flags, read before Google Benchmark's own:
//   --fp_workers=1,2        worker counts (default 1,2; scripts/bench passes more on bigger machines)
//   --fp_scale=0.01         multiply every job count but sleep50ms's (smoke runs); at least 1 job
//   --fp_workloads=a,b      only these workloads (default: all, and cancel_1M)
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "peers.hpp"
#include "workloads.hpp"

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

void set_job_counters(benchmark::State& state, std::uint64_t jobs, int workers) {
  const auto done = static_cast<double>(state.iterations()) * static_cast<double>(jobs);
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  state.counters["ns_per_job"] = benchmark::Counter(done, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["workers"] = workers;
  state.counters["jobs"] = static_cast<double>(jobs);
}

/// The serial fold of `jobs` jobs of `work`, computed once per (workload, jobs).
template <class Work>
std::uint64_t expected_sum(const std::string& workload, std::uint64_t jobs, Work work) {
  static std::map<std::pair<std::string, std::uint64_t>, std::uint64_t> cache;
  const auto key = std::make_pair(workload, jobs);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::uint64_t s = 0;
  if (workload == "sleep50ms") {
    s = jobs * (jobs - 1) / 2;  // the sleep job returns its id; no need to sleep here
  } else {
    for (std::uint64_t j = 0; j < jobs; ++j) s += work(j);
  }
  cache.emplace(key, s);
  return s;
}

void register_workload(const fp_bench::workload_info& w, std::uint64_t jobs, const std::vector<int>& worker_counts) {
  for (const auto& peer : fp_bench::peer_names()) {
    std::vector<int> ns = worker_counts;
    if (w.fixed_workers > 0) ns = {w.fixed_workers};
    for (const int n : ns) {
      const std::string name = std::string(w.name) + "/" + peer + "/" + std::to_string(n);
      const std::string wl = w.name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [wl, peer, n, jobs](benchmark::State& state) {
                                     fp_bench::with_workload(wl, [&](auto work) {
                                       const std::uint64_t want = expected_sum(wl, jobs, work);
                                       for (auto _ : state) {
                                         const std::uint64_t got = fp_bench::run_peer(peer, n, jobs, work);
                                         if (got != want) {
                                           state.SkipWithError("wrong result sum");
                                           break;
                                         }
                                       }
                                     });
                                     set_job_counters(state, jobs, n);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

// ---- cancel with 1M queued jobs: cancel() to wait() returning, with accounting ----

constexpr std::uint64_t kQueued = 1'000'000;

void cancel_flowpool(benchmark::State& state, std::uint64_t queued) {
  for (auto _ : state) {
    flowpool::pool_options o;
    o.workers = 2;
    o.capacity = static_cast<std::ptrdiff_t>(queued);
    std::atomic<bool> release{false};
    flowpool::pool<std::uint64_t, std::uint64_t> pool(
        o,
        [&release](const std::uint64_t& j, flowpool::job_context& ctx) {
          while (!release.load(std::memory_order_relaxed) && !ctx.stop_requested()) std::this_thread::yield();
          return j;
        },
        [](std::uint64_t&&) {});
    for (std::uint64_t i = 0; i < queued + 2; ++i) pool.submit(std::uint64_t{i});  // 2 running + queued
    while (pool.snapshot().queue_depth != queued) std::this_thread::yield();
    const auto t0 = std::chrono::steady_clock::now();
    pool.cancel();
    const auto r = pool.wait();
    const auto t1 = std::chrono::steady_clock::now();
    if (r.cancelled < queued || r.succeeded + r.cancelled + r.failed != queued + 2)
      state.SkipWithError("not every job was accounted for");
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

void cancel_raw_tbb(benchmark::State& state, std::uint64_t queued) {
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
    for (std::uint64_t i = 0; i < queued + 2; ++i) work.try_put(i);
    const auto t0 = std::chrono::steady_clock::now();
    g.cancel();
    stop = true;
    g.wait_for_all();
    const auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  state.counters["accounted"] = 0;  // oneTBB drops the buffered messages without telling anyone
}

// The Go pattern's cancel: a stop flag (ctx.Done()) seen by running jobs, the
// jobs channel closed and its buffered jobs drained and counted as cancelled.
void cancel_cpp_channels(benchmark::State& state, std::uint64_t queued) {
  for (auto _ : state) {
    fp_bench::channel<std::uint64_t> jobs(queued), results(fp_bench::kCapacity);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> started{0}, finished{0}, skipped{0};
    std::vector<std::thread> ws;
    for (int w = 0; w < 2; ++w) {
      ws.emplace_back([&] {
        while (auto j = jobs.recv()) {
          if (stop.load(std::memory_order_acquire)) {  // select on ctx.Done(): this job never starts
            skipped.fetch_add(1);
            break;
          }
          started.fetch_add(1);
          while (!stop.load(std::memory_order_relaxed)) std::this_thread::yield();
          finished.fetch_add(1);
        }
      });
    }
    for (std::uint64_t i = 0; i < queued + 2; ++i) jobs.send(i);
    while (started.load() != 2) std::this_thread::yield();
    const auto t0 = std::chrono::steady_clock::now();
    stop.store(true, std::memory_order_release);
    jobs.close();
    const std::size_t dropped = jobs.drain();
    for (auto& t : ws) t.join();
    const auto t1 = std::chrono::steady_clock::now();
    if (dropped + finished.load() + skipped.load() != queued + 2) state.SkipWithError("not every job was accounted for");
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

void register_cancel(std::uint64_t queued) {
  benchmark::RegisterBenchmark("cancel_1M/flowpool/2", [queued](benchmark::State& s) { cancel_flowpool(s, queued); })
      ->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);
  benchmark::RegisterBenchmark("cancel_1M/raw_tbb/2", [queued](benchmark::State& s) { cancel_raw_tbb(s, queued); })
      ->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);
  benchmark::RegisterBenchmark("cancel_1M/cpp_channels/2",
                               [queued](benchmark::State& s) { cancel_cpp_channels(s, queued); })
      ->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(5);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> workers{1, 2};
  double scale = 1.0;
  std::vector<std::string> only;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--fp_workers=", 0) == 0) {
      workers.clear();
      for (const auto& w : split(a.substr(13))) workers.push_back(std::atoi(w.c_str()));
    } else if (a.rfind("--fp_scale=", 0) == 0) {
      scale = std::atof(a.substr(11).c_str());
    } else if (a.rfind("--fp_workloads=", 0) == 0) {
      only = split(a.substr(15));
    } else {
      rest.push_back(argv[i]);
    }
  }
  auto wanted = [&](const std::string& name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  for (const auto& w : fp_bench::workloads()) {
    if (!wanted(w.name)) continue;
    // The blocking case keeps its 8 jobs: its point is the number of waves, not the volume.
    const auto jobs = w.fixed_workers > 0 ? w.jobs
                                          : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(static_cast<double>(w.jobs) * scale));
    register_workload(w, jobs, workers);
  }
  if (wanted("cancel_1M"))
    register_cancel(std::max<std::uint64_t>(16, static_cast<std::uint64_t>(static_cast<double>(kQueued) * scale)));
  benchmark::AddCustomContext("iterations_per_us", std::to_string(fp_bench::iterations_per_us()));
  benchmark::AddCustomContext("capacity", std::to_string(fp_bench::kCapacity));
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
