// Test main: runs Catch2, then joins oneTBB's worker threads (tbb::finalize) so
// LeakSanitizer sees a clean exit instead of threads still holding their TLS.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <oneapi/tbb/global_control.h>

#include <cstdio>

#include "support/concurrency_kit.hpp"

int main(int argc, char* argv[]) {
  auto handle = tbb::task_scheduler_handle{tbb::attach{}};
  std::fprintf(stderr, "flowpool tests: randomized cases use base seed %llu (set FLOWPOOL_TEST_SEED to reproduce)\n",
              static_cast<unsigned long long>(fp_test::base_seed()));
  const int rc = Catch::Session().run(argc, argv);
  tbb::finalize(handle, std::nothrow);
  return rc;
}
