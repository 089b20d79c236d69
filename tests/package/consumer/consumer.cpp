// A program outside flowpool that uses it the way a user does: a pool with its
// aggregator, an error in the report, cancel(), and (through the non-template,
// exported part of the library) a graph spec with a user kernel. The package tests
// build it with find_package, with add_subdirectory and with pkg-config, against
// a shared and a static flowpool, run it, and check every line it prints.
#include <flowpool/flowpool.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

// A pool, its serial aggregator, and a failing job in the report.
int pool_and_report() {
  flowpool::pool_options opts;
  opts.workers = 3;
  opts.capacity = 8;
  std::uint64_t sum = 0;  // touched only by the serial aggregator: no lock
  flowpool::pool<int, std::uint64_t> squares(
      opts,
      [](const int& n, flowpool::job_context&) -> std::uint64_t {
        if (n == 7) throw std::runtime_error("seven is not welcome");
        return static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(n);
      },
      [&sum](std::uint64_t&& v) { sum += v; });
  for (int n = 1; n <= 100; ++n) squares.submit(n);
  squares.close();
  const flowpool::report r = squares.wait();
  std::printf("pool: status=%s submitted=%llu succeeded=%llu failed=%llu sum=%llu\n",
              std::string(flowpool::to_string(r.status)).c_str(), ull(r.submitted), ull(r.succeeded),
              ull(r.failed), ull(sum));
  if (r.errors.size() != 1) return 1;
  std::printf("error: job=%llu kind=%s message=%s\n", ull(r.errors[0].job),
              std::string(flowpool::to_string(r.errors[0].kind)).c_str(), r.errors[0].message.c_str());
  return 0;
}

// cancel(): one worker, the first job runs until the run is cancelled; the nine
// queued behind it never start.
int cancel_run() {
  flowpool::pool_options opts;
  opts.workers = 1;
  opts.capacity = 16;
  std::atomic<bool> started{false};
  flowpool::pool<int, int> p(
      opts,
      [&started](const int& n, flowpool::job_context& ctx) {
        if (n == 1) {
          started = true;
          while (!ctx.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          ctx.throw_if_stop_requested();
        }
        return n;
      },
      [](int&&) {});
  for (int n = 1; n <= 10; ++n) p.submit(n);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!started && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  p.cancel();
  const flowpool::report r = p.wait();
  const bool accounted = r.submitted == r.succeeded + r.failed + r.cancelled;
  std::printf("cancel: status=%s submitted=%llu cancelled=%llu accounted=%s\n",
              std::string(flowpool::to_string(r.status)).c_str(), ull(r.submitted), ull(r.cancelled),
              accounted ? "yes" : "no");
  return 0;
}

// The exported, non-template API: registry, spec validation, run_graph, errors.
int graph_with_user_kernel() {
  flowpool::registry::global().add_kernel(
      {"square", "squares an integer", {}, [](const nlohmann::json&) -> flowpool::kernel_fn {
         return [](flowpool::item& it, flowpool::job_context&) {
           const long long v = std::stoll(it.input);
           it.value = std::to_string(v * v);
         };
       }});
  const nlohmann::json doc = {
      {"name", "consumer"},
      {"source", {{"type", "range"}, {"count", 10}}},
      {"stages", {{{"name", "sq"}, {"kernel", "square"}, {"workers", 2}}}},
      {"sink", {{"type", "sum"}}},
  };
  std::ostringstream out;
  flowpool::run_controls controls;
  controls.out = &out;
  const flowpool::graph_report g = flowpool::run_graph(flowpool::validate_spec(doc), controls);
  std::string printed = out.str();
  if (!printed.empty() && printed.back() == '\n') printed.pop_back();
  std::printf("graph: status=%s succeeded=%llu sink=%s json_status=%s\n", g.status.c_str(), ull(g.succeeded),
              printed.c_str(), g.to_json().at("status").get<std::string>().c_str());

  nlohmann::json bad = doc;
  bad["stages"][0]["workers"] = 0;
  try {
    (void)flowpool::validate_spec(bad);
    std::printf("spec_error: not thrown\n");
  } catch (const flowpool::spec_error& e) {
    std::printf("spec_error: code=%s path=%s\n", std::string(flowpool::to_string(e.code())).c_str(),
                e.problems().at(0).path.c_str());
  }
  return 0;
}

}  // namespace

int main() {
  std::printf("flowpool %s\n", flowpool::version);
  if (pool_and_report() != 0) return 1;
  if (cancel_run() != 0) return 1;
  return graph_with_user_kernel();
}
