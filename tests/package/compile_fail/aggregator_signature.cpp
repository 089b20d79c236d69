// Misusing the API must fail to compile with a message that says what was
// expected. Built by the ctest "compile-fail: aggregator signature" with
// FLOWPOOL_COMPILE_FAIL defined (an aggregator that takes `std::string&`, which
// cannot bind the `Result&&` flowpool hands it); the ctest passes only if the
// compiler prints the pool's static_assert message. Without the macro the same
// program is correct, and the control test checks that it compiles and runs.
#include <flowpool/flowpool.hpp>

#include <cstdio>
#include <string>

int main() {
  flowpool::pool_options opts;
  opts.workers = 2;
#ifdef FLOWPOOL_COMPILE_FAIL
  auto aggregator = [](std::string& line) { std::puts(line.c_str()); };  // wrong: must accept std::string&&
#else
  auto aggregator = [](std::string&& line) { std::puts(line.c_str()); };
#endif
  flowpool::pool<int, std::string> pool(
      opts, [](const int& job, flowpool::job_context&) { return "job " + std::to_string(job); }, aggregator);
  pool.submit(1);
  pool.close();
  return pool.wait().status == flowpool::run_status::ok ? 0 : 1;
}
