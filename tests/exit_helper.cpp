// tests/exit_helper.cpp - calls std::exit(42) inside a pool's job ("job") or its
// aggregator ("aggregator"); engine_defects_test.cpp checks the exit status.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "flowpool/flowpool.hpp"

int main(int argc, char* argv[]) {
  const bool in_aggregator = argc > 1 && std::strcmp(argv[1], "aggregator") == 0;
  flowpool::pool_options o;
  o.workers = 2;
  o.capacity = 8;
  flowpool::pool<int, int> p(
      o,
      [&](const int& j, flowpool::job_context&) {
        if (!in_aggregator && j == 3) std::exit(42);
        return j;
      },
      [&](int&& v) {
        if (in_aggregator && v == 3) std::exit(42);
      });
  for (int i = 1; i <= 10; ++i) (void)p.submit(i);
  p.close();
  (void)p.wait();
  std::fputs("exit_helper: the run ended without exit(42)\n", stderr);
  return 1;
}
