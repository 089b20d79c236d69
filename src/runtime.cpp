// Process-wide TBB thread budget, the running-body mark, and the deadline timer.
#include "flowpool/detail/runtime.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#if defined(__GLIBC__)
#include <unistd.h>
#endif

#include "flowpool/detail/build_info.hpp"
#include "flowpool/error.hpp"

namespace flowpool::detail {
namespace {

// The most workers one pool may have (validate()), plus the external thread.
constexpr long hard_limit_floor = 4096 + 1;

struct budget_state {
  std::mutex mu;
  long total = 0;    // sum of live leases' workers
  long spare = 0;    // sum of live leases' spare workers (asked for, not required)
  int leases = 0;    // live leases
  int raising = 0;   // leases not confirmed yet: their arena may create TBB's thread pool
  long applied = 0;  // the value of `control`, 0 when none is held
  std::unique_ptr<tbb::global_control> control;
};

budget_state& budget() {
  static budget_state state;  // never destroyed before the last pool: pools are not static-lifetime safe anyway
  return state;
}

// Re-sizes the one process-wide control to cover `total` worker threads, and to
// the hard-limit floor while an arena that may create TBB's thread pool is built.
void apply(budget_state& s) {
  const long base = tbb::info::default_concurrency();
  // max_allowed_parallelism counts the calling (external) thread too.
  long wanted = s.total + s.spare + 1;
  if (s.raising > 0) wanted = std::max(wanted, hard_limit_floor);
  if (wanted <= base) wanted = 0;  // TBB's default covers it: hold no control
  if (wanted == s.applied) return;
  s.control.reset();  // TBB takes the minimum over live controls: drop ours first
  s.applied = 0;
  if (wanted > 0) {
    s.control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      static_cast<std::size_t>(wanted));
    s.applied = wanted;
  }
}

thread_local const void* t_running = nullptr;
thread_local const void* t_arena = nullptr;

#if defined(__GLIBC__)
// std::exit() on a thread running a flowpool job or aggregator: oneTBB's exit
// handlers (its static destructors) would run on that TBB worker thread and
// crash, losing the status. Registered after libtbb's, so it runs before them.
void exit_from_body(int status, void* /*unused*/) {
  if (t_running == nullptr) return;
  std::cout.flush();
  std::cerr.flush();
  std::clog.flush();
  std::fflush(nullptr);
  _exit(status);
}
#endif

void install_exit_handler() {
#if defined(__GLIBC__)
  static const bool installed = [] { return on_exit(exit_from_body, nullptr) == 0; }();
  (void)installed;
#endif
}

}  // namespace

const void* running_engine() noexcept {
  return t_running;
}

const void* running_arena() noexcept {
  return t_arena;
}

unsigned compiled_sanitizers() noexcept {
  return FLOWPOOL_DETAIL_SANITIZERS;  // expanded in this translation unit, the library's
}

body_scope::body_scope(const void* engine, const void* arena) noexcept : prev_(t_running), prev_arena_(t_arena) {
  t_running = engine;
  t_arena = arena;
}

body_scope::~body_scope() {
  t_running = prev_;
  t_arena = prev_arena_;
}

thread_lease::thread_lease(int threads, int spare) : threads_(threads), spare_(spare) {
  install_exit_handler();
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  s.total += threads_;
  s.spare += spare_;
  ++s.leases;
  ++s.raising;
  apply(s);
}

thread_lease::~thread_lease() {
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  s.total -= threads_;
  s.spare -= spare_;
  --s.leases;
  if (!confirmed_) --s.raising;
  apply(s);
}

int thread_lease::live() noexcept {
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  return s.leases;
}

void thread_lease::confirm() {
  auto& s = budget();
  const std::lock_guard lk(s.mu);
  if (confirmed_) return;
  confirmed_ = true;
  --s.raising;
  apply(s);
  // The limit oneTBB really applies: the smallest live control, capped by the
  // hard worker limit it fixed when its thread pool was created.
  const auto allowed =
      static_cast<long>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
  if (allowed < s.total + 1) {
    throw_error(errc::invalid_argument,
                "pool: cannot guarantee " + std::to_string(threads_) +
                    " workers: oneTBB's max_allowed_parallelism is " + std::to_string(allowed) +
                    " in this process, and the live pools need " + std::to_string(s.total + 1) +
                    " (their workers, plus one). A smaller tbb::global_control is active, or oneTBB was used "
                    "before the first pool and fixed its worker limit then: build the first pool, or a "
                    "tbb::global_control(max_allowed_parallelism, N), before any other use of oneTBB");
  }
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
