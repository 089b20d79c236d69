// Cancellation: a producer streams jobs; the aggregator cancels the run once it has
// what it needs. Jobs not started never start, running jobs see stop_requested(),
// the blocked producer's submit() returns false, and every accepted job is still
// accounted for exactly once. Shown in docs/guide.md, "Cancellation".
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "flowpool/flowpool.hpp"

int main() {
  flowpool::pool_options opts;
  opts.workers = 2;
  opts.capacity = 4;

  int found = 0;  // the aggregator is serial: a plain int is enough
  flowpool::pool<int, int> pool(
      opts,
      [](const int& n, flowpool::job_context& ctx) {
        for (int step = 0; step < 5; ++step) {  // long work, in steps
          ctx.throw_if_stop_requested();         // a cancelled job stops here
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return n;
      },
      [&](int&& n) {
        if (found < 3 && n % 10 == 0 && ++found == 3) pool.cancel();  // enough: stop everything
      });

  int accepted = 0;
  for (int n = 1; n <= 1'000'000; ++n) {
    if (!pool.submit(n)) break;  // false: the run was cancelled
    ++accepted;
  }
  const flowpool::report r = pool.wait();

  std::printf("found %d multiples of 10\n", found);
  std::printf("status: %s\n", std::string(flowpool::to_string(r.status)).c_str());
  std::printf("stopped early: %s\n", accepted < 1'000'000 ? "yes" : "no");
  std::printf("every job accounted for: %s\n",
              r.submitted == static_cast<std::uint64_t>(accepted) &&
                      r.submitted == r.succeeded + r.failed + r.cancelled
                  ? "yes"
                  : "no");
  return r.status == flowpool::run_status::cancelled ? 0 : 1;
}
