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

wakeup_timer::~wakeup_timer() { stop(); }

void wakeup_timer::start(std::function<clock::time_point()> on_wake) {
  if (thread_.joinable()) return;
  on_wake_ = std::move(on_wake);
  thread_ = std::thread([this] { loop(); });
}

void wakeup_timer::arm(clock::time_point when) {
  {
    const std::lock_guard lk(mu_);
    if (when >= next_) return;
    next_ = when;
    changed_ = true;
  }
  cv_.notify_one();
}

void wakeup_timer::loop() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    changed_ = false;
    if (next_ == clock::time_point::max()) {
      cv_.wait(lk, [this] { return stopping_ || changed_; });
      continue;
    }
    if (cv_.wait_until(lk, next_, [this] { return stopping_ || changed_; })) continue;
    next_ = clock::time_point::max();  // due: the callback tells us the next time
    lk.unlock();
    const clock::time_point again = on_wake_();
    lk.lock();
    if (again < next_) next_ = again;
  }
}

void wakeup_timer::stop() noexcept {
  {
    const std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

}  // namespace flowpool::detail
