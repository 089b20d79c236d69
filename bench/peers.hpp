// bench/peers.hpp - one workload, written once per runtime (as taskflow's
// benchmarks/<x>/{taskflow,tbb,omp}.cpp are): every peer runs `jobs` jobs with
// ids 0..jobs-1 through `work(id) -> uint64_t` on `workers` workers and folds
// the results serially into a sum, which the caller checks against a serial run.
//
// Each peer is written the way a user of that runtime would write it:
//   flowpool        flowpool::pool, capacity 1024 (bounded queue, serial aggregator)
//   raw_tbb         function_node(concurrency N) -> serial function_node, try_put
//                   from the caller, TBB's default arena (unbounded input buffer)
//   cpp_channels    the Go pattern in plain C++: bounded mutex+condvar channels
//                   (capacity 1024), a producer thread, N std::thread workers,
//                   the caller consumes results
//   tbb_for         tbb::parallel_for in a task_arena(N), per-thread partial sums
//                   (enumerable_thread_specific), then a serial reduction
//   tbb_pipeline    tbb::parallel_pipeline in a task_arena(N), max 1024 tokens:
//                   serial source -> parallel work -> serial sum
//   omp             #pragma omp parallel for schedule(dynamic) num_threads(N),
//                   critical-section aggregator (libgomp)
//   asio            boost::asio::thread_pool(N), each job posted, its result
//                   posted to a strand that sums (unbounded: post everything)
//   moodycamel      N std::thread workers on moodycamel::ConcurrentQueue, a
//                   results queue, the caller produces (at most 1024 in flight)
//                   and drains results
#pragma once

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
// GCC 12 reports -Wnull-dereference inside moodycamel's inlined code; not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <concurrentqueue/concurrentqueue.h>
#pragma GCC diagnostic pop
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>
#include <omp.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "flowpool/flowpool.hpp"

namespace fp_bench {

inline constexpr std::size_t kCapacity = 1024;  ///< queue/token bound of the bounded peers

/// Every in-process peer, in table order.
inline const std::vector<std::string>& peer_names() {
  static const std::vector<std::string> names{
      "flowpool", "flowpool_batch", "raw_tbb", "cpp_channels", "tbb_for", "tbb_pipeline", "omp", "asio", "moodycamel"};
  return names;
}

/// How the flowpool peers feed their pool.
enum class fp_feed : std::uint8_t {
  submit,          ///< one submit() per job
  submit_metrics,  ///< one submit() per job, metrics on (the metrics cost; not a table peer)
  batch,           ///< submit_batch() of 64 jobs at a time: one queue lock per run of jobs
};

/// flowpool::pool, capacity 1024, fed as `feed` says.
template <class Work>
std::uint64_t run_flowpool(int workers, std::uint64_t jobs, Work work, fp_feed feed = fp_feed::submit) {
  flowpool::pool_options o;
  o.workers = workers;
  o.capacity = kCapacity;
  flowpool::metrics_options mo;
  mo.enabled = feed == fp_feed::submit_metrics;
  std::uint64_t sum = 0;
  flowpool::pool<std::uint64_t, std::uint64_t> pool(
      o, [work](const std::uint64_t& j, flowpool::job_context&) { return work(j); },
      [&sum](std::uint64_t&& r) { sum += r; }, mo);
  if (feed == fp_feed::batch) {
    std::array<std::uint64_t, 64> batch{};
    for (std::uint64_t i = 0; i < jobs;) {
      std::size_t n = 0;
      for (; n < batch.size() && i < jobs; ++n, ++i) batch[n] = i;
      (void)pool.submit_batch(std::span<std::uint64_t>(batch.data(), n));
    }
  } else {
    for (std::uint64_t i = 0; i < jobs; ++i) pool.submit(std::uint64_t{i});
  }
  pool.close();
  (void)pool.wait();
  return sum;
}

template <class Work>
std::uint64_t run_raw_tbb(int workers, std::uint64_t jobs, Work work) {
  std::uint64_t sum = 0;
  tbb::flow::graph g;
  tbb::flow::function_node<std::uint64_t, std::uint64_t> node(g, static_cast<std::size_t>(workers),
                                                               [work](std::uint64_t j) { return work(j); });
  tbb::flow::function_node<std::uint64_t> agg(g, tbb::flow::serial, [&sum](std::uint64_t r) {
    sum += r;
    return tbb::flow::continue_msg{};
  });
  tbb::flow::make_edge(node, agg);
  for (std::uint64_t i = 0; i < jobs; ++i) node.try_put(i);
  g.wait_for_all();
  return sum;
}

/// A bounded channel: a mutex, two condition variables and a ring, like a Go `chan T` with a buffer.
template <class T>
class channel {
 public:
  explicit channel(std::size_t capacity) : cap_(capacity) {}
  /// Blocks while full; false once closed.
  bool send(T v) {
    std::unique_lock lk(m_);
    not_full_.wait(lk, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(v));
    lk.unlock();
    not_empty_.notify_one();
    return true;
  }
  /// Blocks while empty; nullopt once closed and drained.
  std::optional<T> recv() {
    std::unique_lock lk(m_);
    not_empty_.wait(lk, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return std::nullopt;
    T v = std::move(q_.front());
    q_.pop_front();
    lk.unlock();
    not_full_.notify_one();
    return v;
  }
  void close() {
    {
      std::lock_guard lk(m_);
      closed_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
  }
  /// Drops every buffered value and returns how many there were (cancel accounting).
  std::size_t drain() {
    std::lock_guard lk(m_);
    const std::size_t n = q_.size();
    q_.clear();
    return n;
  }

 private:
  std::mutex m_;
  std::condition_variable not_empty_, not_full_;
  std::deque<T> q_;
  std::size_t cap_;
  bool closed_ = false;
};

template <class Work>
std::uint64_t run_cpp_channels(int workers, std::uint64_t jobs, Work work) {
  channel<std::uint64_t> job_ch(kCapacity), result_ch(kCapacity);
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < jobs; ++i) job_ch.send(i);
    job_ch.close();
  });
  std::atomic<int> live{workers};
  std::vector<std::thread> ws;
  for (int w = 0; w < workers; ++w) {
    ws.emplace_back([&] {
      while (auto j = job_ch.recv()) result_ch.send(work(*j));
      if (live.fetch_sub(1) == 1) result_ch.close();  // the last worker closes results (wg.Wait; close)
    });
  }
  std::uint64_t sum = 0;
  while (auto r = result_ch.recv()) sum += *r;
  producer.join();
  for (auto& t : ws) t.join();
  return sum;
}

template <class Work>
std::uint64_t run_tbb_for(int workers, std::uint64_t jobs, Work work) {
  tbb::task_arena arena(workers);
  tbb::enumerable_thread_specific<std::uint64_t> partial(0);
  arena.execute([&] {
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, jobs), [&](const tbb::blocked_range<std::uint64_t>& r) {
      std::uint64_t s = 0;
      for (std::uint64_t i = r.begin(); i != r.end(); ++i) s += work(i);
      partial.local() += s;
    });
  });
  std::uint64_t sum = 0;
  for (const auto p : partial) sum += p;  // the serial reduction
  return sum;
}

template <class Work>
std::uint64_t run_tbb_pipeline(int workers, std::uint64_t jobs, Work work) {
  tbb::task_arena arena(workers);
  std::uint64_t sum = 0;
  arena.execute([&] {
    std::uint64_t next = 0;
    tbb::parallel_pipeline(
        kCapacity,
        tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                              [&](tbb::flow_control& fc) -> std::uint64_t {
                                                if (next == jobs) {
                                                  fc.stop();
                                                  return 0;
                                                }
                                                return next++;
                                              }) &
            tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::parallel,
                                                           [work](std::uint64_t j) { return work(j); }) &
            tbb::make_filter<std::uint64_t, void>(tbb::filter_mode::serial_out_of_order,
                                                  [&sum](std::uint64_t r) { sum += r; }));
  });
  return sum;
}

template <class Work>
std::uint64_t run_omp(int workers, std::uint64_t jobs, Work work) {
  std::uint64_t sum = 0;
  const auto n = static_cast<std::int64_t>(jobs);
#pragma omp parallel for schedule(dynamic) num_threads(workers)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t r = work(static_cast<std::uint64_t>(i));
#pragma omp critical(fp_bench_aggregate)
    sum += r;
  }
  return sum;
}

template <class Work>
std::uint64_t run_asio(int workers, std::uint64_t jobs, Work work) {
  boost::asio::thread_pool pool(static_cast<std::size_t>(workers));
  auto agg = boost::asio::make_strand(pool.get_executor());
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < jobs; ++i) {
    boost::asio::post(pool, [i, work, &agg, &sum] {
      const std::uint64_t r = work(i);
      boost::asio::post(agg, [r, &sum] { sum += r; });
    });
  }
  pool.join();
  return sum;
}

template <class Work>
std::uint64_t run_moodycamel(int workers, std::uint64_t jobs, Work work) {
  moodycamel::ConcurrentQueue<std::uint64_t> job_q, result_q;
  std::atomic<bool> done{false};
  std::vector<std::thread> ws;
  for (int w = 0; w < workers; ++w) {
    ws.emplace_back([&] {
      moodycamel::ConsumerToken ct(job_q);
      moodycamel::ProducerToken pt(result_q);
      std::uint64_t j = 0;
      for (;;) {
        if (job_q.try_dequeue(ct, j)) {
          result_q.enqueue(pt, work(j));
        } else if (done.load(std::memory_order_acquire)) {
          if (!job_q.try_dequeue(ct, j)) return;
          result_q.enqueue(pt, work(j));
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  moodycamel::ProducerToken pt(job_q);
  std::uint64_t sum = 0, received = 0, buf[64];
  auto drain = [&] {
    const std::size_t got = result_q.try_dequeue_bulk(buf, 64);
    for (std::size_t k = 0; k < got; ++k) sum += buf[k];
    received += got;
    return got;
  };
  for (std::uint64_t i = 0; i < jobs; ++i) {
    while (i - received >= kCapacity) {
      if (drain() == 0) std::this_thread::yield();
    }
    job_q.enqueue(pt, i);
  }
  done.store(true, std::memory_order_release);
  while (received < jobs) {
    if (drain() == 0) std::this_thread::yield();
  }
  for (auto& t : ws) t.join();
  return sum;
}

/// Runs peer `name`; throws std::invalid_argument for an unknown name.
template <class Work>
std::uint64_t run_peer(std::string_view name, int workers, std::uint64_t jobs, Work work) {
  if (name == "flowpool") return run_flowpool(workers, jobs, work);
  if (name == "flowpool_batch") return run_flowpool(workers, jobs, work, fp_feed::batch);
  if (name == "flowpool_metrics") return run_flowpool(workers, jobs, work, fp_feed::submit_metrics);
  if (name == "raw_tbb") return run_raw_tbb(workers, jobs, work);
  if (name == "cpp_channels") return run_cpp_channels(workers, jobs, work);
  if (name == "tbb_for") return run_tbb_for(workers, jobs, work);
  if (name == "tbb_pipeline") return run_tbb_pipeline(workers, jobs, work);
  if (name == "omp") return run_omp(workers, jobs, work);
  if (name == "asio") return run_asio(workers, jobs, work);
  if (name == "moodycamel") return run_moodycamel(workers, jobs, work);
  throw std::invalid_argument("unknown peer: " + std::string(name));
}

}  // namespace fp_bench
