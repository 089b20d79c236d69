// bench/stream_rss.cpp - peak RSS of a long job stream, one peer per process
// (peak RSS is per process, so each figure needs its own run).
//
//   stream_rss flowpool 10000000     # flowpool, capacity 1024, N=2
//   stream_rss raw_tbb  10000000     # naive raw oneTBB: try_put everything, then wait
// Prints: "<peer> jobs=<n> peak_rss_mb=<x> wall_ms=<y>"
#include <oneapi/tbb/flow_graph.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "flowpool/flowpool.hpp"
#include "workloads.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: stream_rss flowpool|raw_tbb JOBS\n");
    return 2;
  }
  const std::string peer = argv[1];
  const std::uint64_t jobs = std::strtoull(argv[2], nullptr, 10);
  std::uint64_t sum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  if (peer == "flowpool") {
    flowpool::pool_options o;
    o.workers = 2;
    o.capacity = 1024;
    flowpool::pool<std::uint64_t, std::uint64_t> pool(
        o, [](const std::uint64_t& j, flowpool::job_context&) { return j; }, [&](std::uint64_t&& r) { sum += r; });
    for (std::uint64_t i = 0; i < jobs; ++i) pool.submit(std::uint64_t{i});
    pool.close();
    (void)pool.wait();
  } else if (peer == "raw_tbb") {
    tbb::flow::graph g;
    tbb::flow::function_node<std::uint64_t, std::uint64_t> work(g, 2, [](std::uint64_t j) { return j; });
    tbb::flow::function_node<std::uint64_t> agg(g, tbb::flow::serial, [&](std::uint64_t r) {
      sum += r;
      return tbb::flow::continue_msg{};
    });
    tbb::flow::make_edge(work, agg);
    for (std::uint64_t i = 0; i < jobs; ++i) work.try_put(i);
    g.wait_for_all();
  } else {
    std::fprintf(stderr, "stream_rss: unknown peer '%s'\n", peer.c_str());
    return 2;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const bool ok = sum == jobs * (jobs - 1) / 2;
  std::printf("%s jobs=%llu peak_rss_mb=%.1f wall_ms=%.0f%s\n", peer.c_str(), static_cast<unsigned long long>(jobs),
              static_cast<double>(fp_bench::peak_rss_bytes()) / (1024.0 * 1024.0), ms, ok ? "" : " WRONG-SUM");
  return ok ? 0 : 1;
}
