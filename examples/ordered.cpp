// Ordered mode: jobs finish out of order (later jobs are quicker), yet the
// aggregator sees results in submission order. Shown in docs/guide.md, "Ordered mode".
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "flowpool/flowpool.hpp"

int main() {
  flowpool::pool_options opts;
  opts.workers = 4;
  opts.ordered = true;       // deliver in submission order
  opts.reorder_window = 16;  // workers run at most 16 jobs ahead of the oldest undelivered one

  flowpool::pool<int, std::string> pool(
      opts,
      [](const int& n, flowpool::job_context&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2 * (9 - n)));  // job 1 is the slowest
        return "result " + std::to_string(n);
      },
      [](std::string&& line) { std::puts(line.c_str()); });

  for (int n = 1; n <= 8; ++n) pool.submit(n);
  pool.close();
  return pool.wait().status == flowpool::run_status::ok ? 0 : 1;
}
