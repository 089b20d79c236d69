// tests/support/concurrency_kit.hpp - tools for asserting concurrency properties.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flowpool/report.hpp"

namespace fp_test {

/// Records the peak number of threads inside a region at once.
class peak_tracker {
 public:
  class scope {
   public:
    explicit scope(peak_tracker& t) : t_(t) {
      const int now = t_.inside_.fetch_add(1, std::memory_order_acq_rel) + 1;
      int peak = t_.peak_.load(std::memory_order_relaxed);
      while (now > peak && !t_.peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
      }
    }
    ~scope() { t_.inside_.fetch_sub(1, std::memory_order_acq_rel); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    peak_tracker& t_;
  };
  [[nodiscard]] int peak() const { return peak_.load(); }
  [[nodiscard]] int inside() const { return inside_.load(); }

 private:
  std::atomic<int> inside_{0};
  std::atomic<int> peak_{0};
};

/// A reusable start line: `arrive_and_wait()` blocks until `count` threads arrived.
class start_barrier {
 public:
  explicit start_barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock lk(mu_);
    if (++arrived_ == count_) {
      cv_.notify_all();
    } else {
      cv_.wait(lk, [this] { return arrived_ >= count_; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_;
  int arrived_ = 0;
};

/// A one-shot gate: `wait()` blocks until `open()` was called. Tests use it to hold workers
/// back until every job is submitted, so a run that stops early (fail-fast, max_failures, a
/// failing aggregator) cannot refuse a submit mid-loop on a slow (sanitized) machine.
class gate {
 public:
  void open() {
    {
      std::lock_guard lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Runs `fn(thread_index)` on `n` raw threads, all released at once; joins them.
inline void run_on_threads(int n, const std::function<void(int)>& fn) {
  start_barrier go(n);
  std::vector<std::thread> ts;
  ts.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    ts.emplace_back([&, i] {
      go.arrive_and_wait();
      fn(i);
    });
  }
  for (auto& t : ts) t.join();
}

/// Aborts the process with `what` (which should include the seed) if not
/// disarmed within `limit`: a hang becomes a failure with a reproducer.
class watchdog {
 public:
  watchdog(std::chrono::milliseconds limit, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
        std::fprintf(stderr, "WATCHDOG: no progress within %lld ms: %s\n",
                     static_cast<long long>(limit.count()), what_.c_str());
        std::fflush(stderr);
        std::abort();
      }
    });
  }
  ~watchdog() {
    {
      const std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string what_;
  std::thread thread_;
};

/// The seed for randomized tests: FLOWPOOL_TEST_SEED if set, else random.
inline std::uint64_t base_seed() {
  if (const char* s = std::getenv("FLOWPOOL_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static const std::uint64_t seed = std::random_device{}();
  return seed;
}

/// A field of /proc/self/status in bytes ("VmHWM" = peak RSS, "VmRSS" = current RSS).
inline std::size_t proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

/// Peak resident set size of this process, in bytes.
inline std::size_t peak_rss_bytes() { return proc_status_bytes("VmHWM"); }

/// Records the terminal record of every job (from the serial on_job_done hook)
/// and checks the run's accounting against it: each accepted id ended exactly
/// once, no other id did, and the per-status counts match the report.
class terminal_ledger {
 public:
  explicit terminal_ledger(std::size_t max_jobs) : count_(max_jobs + 1, 0), records_(max_jobs + 1) {}

  /// For pool_options::on_job_done (serial: no locking needed).
  void record(const flowpool::job_record& rec) {
    if (rec.job < 1 || rec.job >= count_.size()) {
      ++bad_ids_;
      return;
    }
    ++count_[rec.job];
    records_[rec.job] = rec;
  }

  [[nodiscard]] const flowpool::job_record& operator[](std::uint64_t id) const { return records_[id]; }

  /// Returns an empty string when the report and the ledger agree, else what is wrong.
  [[nodiscard]] std::string check(const flowpool::report& r) const {
    if (bad_ids_ != 0) return std::to_string(bad_ids_) + " records with an id out of range";
    std::uint64_t s = 0, f = 0, c = 0;
    for (std::uint64_t id = 1; id < count_.size(); ++id) {
      const int want = id <= r.submitted ? 1 : 0;
      if (count_[id] != want) {
        return "job " + std::to_string(id) + " ended " + std::to_string(count_[id]) + " times, want " +
               std::to_string(want);
      }
      if (want == 0) continue;
      switch (records_[id].status) {
        case flowpool::job_status::succeeded: ++s; break;
        case flowpool::job_status::failed: ++f; break;
        case flowpool::job_status::cancelled: ++c; break;
      }
    }
    if (s != r.succeeded || f != r.failed || c != r.cancelled) {
      return "ledger " + std::to_string(s) + "/" + std::to_string(f) + "/" + std::to_string(c) +
             " != report " + std::to_string(r.succeeded) + "/" + std::to_string(r.failed) + "/" +
             std::to_string(r.cancelled);
    }
    if (r.submitted != r.succeeded + r.failed + r.cancelled) return "report counts do not add up";
    return {};
  }

 private:
  std::vector<int> count_;
  std::vector<flowpool::job_record> records_;
  std::uint64_t bad_ids_ = 0;
};

/// True when built with a sanitizer (timing and memory figures mean nothing there).
constexpr bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

/// Burns a deterministic amount of CPU (no clock reads).
inline std::uint64_t spin(std::uint64_t iterations) {
  std::uint64_t x = 88172645463325252ULL;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

}  // namespace fp_test
