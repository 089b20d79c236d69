// Test main: runs Catch2, then joins oneTBB's worker threads (tbb::finalize) so
// LeakSanitizer sees a clean exit instead of threads still holding their TLS.
//
// Under ThreadSanitizer (no leak checker) the process ends with _Exit once the tests
// ran: after a test with 300 workers, oneTBB's teardown (finalize, or its exit-time
// destructor) did not end in 500 s in about half the runs, on 2 cores. Each exiting
// worker raises the market's slack atomic, which wakes the others; they spin loading
// it, and TSan serializes every access to an atomic on a lock of its own, so the
// fetch_add of the worker being joined starved behind about 300 readers (gdb: the
// joined thread in __tsan_atomic32_fetch_add on private_server::my_slack). No test
// runs then, and a TSan report still fails the run: halt_on_error exits with 66 at
// the first one, and ctest fails on the report's text.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <oneapi/tbb/global_control.h>

#include <cstdio>
#include <cstdlib>

#include "support/concurrency_kit.hpp"

int main(int argc, char* argv[]) {
  auto handle = tbb::task_scheduler_handle{tbb::attach{}};
  std::fprintf(stderr, "flowpool tests: randomized cases use base seed %llu (set FLOWPOOL_TEST_SEED to reproduce)\n",
              static_cast<unsigned long long>(fp_test::base_seed()));
  const int rc = Catch::Session().run(argc, argv);
#if defined(__SANITIZE_THREAD__)
  (void)handle;
  std::fflush(nullptr);
  std::_Exit(rc);
#else
  tbb::finalize(handle, std::nothrow);
  return rc;
#endif
}
