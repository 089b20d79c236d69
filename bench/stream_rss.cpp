// bench/stream_rss.cpp - one peer, one workload, one process: peak RSS of a long
// job stream (peak RSS is per process, so each figure needs its own run), and
// the driver that scripts/bench times as a whole process against the Go program
// (bench/go/gopool), which has the same shape: a range of ids, N workers, one
// serial fold of the results.
//
//   stream_rss flowpool 10000000                 # 10M empty jobs, N=2
//   stream_rss raw_tbb  10000000                 # naive raw oneTBB: try_put everything, then wait
//   stream_rss PEER JOBS [WORKERS [WORKLOAD]]    # any peer of bench/peers.hpp, any workload
// Prints: "<peer> jobs=<n> workers=<N> workload=<w> peak_rss_mb=<x> wall_ms=<y>"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "peers.hpp"
#include "workloads.hpp"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::fprintf(stderr, "usage: stream_rss PEER JOBS [WORKERS [WORKLOAD]]\n");
    return 2;
  }
  const std::string peer = argv[1];
  const std::uint64_t jobs = std::strtoull(argv[2], nullptr, 10);
  const int workers = argc > 3 ? std::atoi(argv[3]) : 2;
  const std::string workload = argc > 4 ? argv[4] : "empty";
  std::uint64_t sum = 0, want = 0;
  double ms = 0;
  try {
    const bool known = fp_bench::with_workload(workload, [&](auto work) {
      if (workload == "empty" || workload == "sleep50ms") {
        want = jobs * (jobs - 1) / 2;
      } else {
        for (std::uint64_t j = 0; j < jobs; ++j) want += work(j);
      }
      const auto t0 = std::chrono::steady_clock::now();
      sum = fp_bench::run_peer(peer, workers, jobs, work);
      ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    });
    if (!known) {
      std::fprintf(stderr, "stream_rss: unknown workload '%s'\n", workload.c_str());
      return 2;
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "stream_rss: %s\n", e.what());
    return 2;
  }
  const bool ok = sum == want;
  std::printf("%s jobs=%llu workers=%d workload=%s peak_rss_mb=%.1f wall_ms=%.1f%s\n", peer.c_str(),
              static_cast<unsigned long long>(jobs), workers, workload.c_str(),
              static_cast<double>(fp_bench::peak_rss_bytes()) / (1024.0 * 1024.0), ms, ok ? "" : " WRONG-SUM");
  return ok ? 0 : 1;
}
