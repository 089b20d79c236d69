// The seed program of the Go worker-pool post, on flowpool: 8 jobs, 3 workers,
// 50 ms of simulated I/O each. Prints one line per job, then the elapsed time.
// Expected: 8 lines in about 150 ms (three waves of 50 ms), on any number of cores.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "flowpool/flowpool.hpp"

struct job {
  int id;
};

struct result {
  int job_id;
  std::string value;
};

int main() {
  const auto t0 = std::chrono::steady_clock::now();

  flowpool::pool_options opts;
  opts.workers = 3;
  opts.capacity = 10;
  flowpool::pool<job, result> pool(
      opts,
      [](const job& j, flowpool::job_context& ctx) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // simulate I/O or compute work
        return result{j.id, "worker-" + std::to_string(ctx.worker()) + " done"};
      },
      [](result&& r) { std::printf("job=%d %s\n", r.job_id, r.value.c_str()); });

  for (int i = 1; i <= 8; ++i) pool.submit(job{i});
  pool.close();
  const flowpool::report rep = pool.wait();

  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("elapsed: %.1f ms\n", ms);
  return rep.status == flowpool::run_status::ok ? 0 : 1;
}
