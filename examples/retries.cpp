// Errors and retries: a flaky job succeeds on its third attempt, a job with bad
// input throws permanent_error (never retried), and the report lists what failed.
// Shown in docs/guide.md, "Errors and retries".
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "flowpool/flowpool.hpp"

int main() {
  flowpool::pool_options opts;
  opts.workers = 2;
  opts.retry.max_attempts = 4;                                 // 1 try + up to 3 retries
  opts.retry.backoff_base = std::chrono::milliseconds(5);      // 5, 10, 20 ms ...
  opts.retry.backoff_cap = std::chrono::milliseconds(50);      // ... never more than 50 ms

  long total = 0;
  flowpool::pool<int, int> pool(
      opts,
      [](const int& n, flowpool::job_context& ctx) {
        if (n == 3 && ctx.attempt() < 3) throw std::runtime_error("flaky: try again");
        if (n == 5) throw flowpool::permanent_error("bad input: 5");
        return n * 10;
      },
      [&](int&& v) { total += v; });

  for (int n = 1; n <= 6; ++n) pool.submit(n);
  pool.close();
  const flowpool::report r = pool.wait();

  std::printf("succeeded %llu, failed %llu, retried %llu, total %ld\n",
              static_cast<unsigned long long>(r.succeeded), static_cast<unsigned long long>(r.failed),
              static_cast<unsigned long long>(r.retried), total);
  for (const flowpool::job_error& e : r.errors) {
    std::printf("job %llu failed after %u attempt(s): %s\n", static_cast<unsigned long long>(e.job),
                e.attempts, e.message.c_str());
  }
  return r.succeeded == 5 && r.failed == 1 ? 0 : 1;
}
