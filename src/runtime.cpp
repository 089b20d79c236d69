// Process-wide TBB thread budget and the deadline timer.
#include "flowpool/detail/runtime.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>

#include <memory>

namespace flowpool::detail {
namespace {

struct budget_state {
  std::mutex mu;
  long total = 0;  // sum of live leases
  std::unique_ptr<tbb::global_control> control;
};

budget_state& budget() {
  static budget_state state;  // never destroyed before the last pool: pools are not static-lifetime safe anyway
  return state;
}

// Re-sizes the one process-wide control to cover `total` worker threads.
void apply(budget_state& s) {
  const long base = tbb::info::default_concurrency();
  // max_allowed_parallelism counts the calling (external) thread too.
  const long wanted = s.total + 1;
  s.control.reset();  // TBB takes the minimum over live controls: drop ours first
  if (wanted > base) {
    s.control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      static_cast<std::size_t>(wanted));
  }
}

}  // namespace

thread_lease::thread_lease(int threads) : threads_(threads) {
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  s.total += threads_;
  apply(s);
}

thread_lease::~thread_lease() {
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  s.total -= threads_;
  apply(s);
}

deadline_timer::~deadline_timer() { stop(); }

void deadline_timer::start(std::chrono::steady_clock::time_point when, std::function<void()> fire) {
  thread_ = std::thread([this, when, fire = std::move(fire)] {
    std::unique_lock lk(mu_);
    if (!cv_.wait_until(lk, when, [this] { return stopping_; })) {
      lk.unlock();
      fire();
    }
  });
}

void deadline_timer::stop() noexcept {
  {
    const std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

}  // namespace flowpool::detail
