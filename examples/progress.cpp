// Metrics: snapshot() is lock-free, so a progress thread may poll it while the
// pool runs; the report gives the final figures. Shown in docs/guide.md, "Metrics".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "flowpool/flowpool.hpp"

int main() {
  flowpool::pool_options opts;
  opts.workers = 3;
  opts.capacity = 8;
  flowpool::pool<int, int> pool(
      opts,
      [](const int& n, flowpool::job_context&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return n;
      },
      [](int&&) {});

  std::atomic<bool> done{false};
  std::size_t deepest = 0;
  int busiest = 0;
  std::thread progress([&] {
    while (!done) {
      const flowpool::snapshot s = pool.snapshot();  // from any thread, never blocks
      if (s.queue_depth > deepest) deepest = s.queue_depth;
      if (s.busy_workers > busiest) busiest = s.busy_workers;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });

  for (int n = 1; n <= 200; ++n) pool.submit(n);
  pool.close();
  const flowpool::report r = pool.wait();
  done = true;
  progress.join();

  const flowpool::snapshot last = pool.snapshot();
  std::printf("submitted %llu, completed %llu\n", static_cast<unsigned long long>(last.submitted),
              static_cast<unsigned long long>(last.completed));
  std::printf("queue depth never above capacity: %s\n",
              deepest <= 8 && r.max_queue_depth <= 8 ? "yes" : "no");
  std::printf("busy workers never above N: %s\n", busiest <= 3 ? "yes" : "no");
  std::printf("succeeded %llu in %s\n", static_cast<unsigned long long>(r.succeeded),
              r.wall.count() > 0 ? "a measured wall time" : "no time");
  return r.succeeded == 200 ? 0 : 1;
}
