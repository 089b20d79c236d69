// flowpool/detail/run_metrics.hpp - a run's metrics: per-worker counters and
// histograms, the trace, gauge samples and the periodic snapshot callback.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flowpool/detail/metrics_clock.hpp"
#include "flowpool/detail/saturating.hpp"
#include "flowpool/error.hpp"
#include "flowpool/metrics.hpp"

namespace flowpool::detail {

/// A histogram written by one thread at a time and read by any: relaxed loads and
/// stores, no read-modify-write on the writer's side.
///
/// Thread-safety: one writer at a time (the holder of a worker id), any number of
/// readers; a reader may see a sample in some fields and not yet in others.
struct atomic_histogram {
  std::array<std::atomic<std::uint64_t>, histogram::bucket_count> buckets{};  // their sum is the count
  std::atomic<std::uint64_t> sum_ns{0};
  std::atomic<std::uint64_t> max_ns{0};

  /// `a += by` for a single writer.
  static void bump(std::atomic<std::uint64_t>& a, std::uint64_t by) noexcept {
    a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }
  /// Adds one sample; a negative one counts as 0.
  void add(std::int64_t ns_signed) noexcept {
    const auto ns = static_cast<std::uint64_t>(ns_signed < 0 ? 0 : ns_signed);
    bump(buckets[histogram::bucket_of(ns)], 1);
    bump(sum_ns, ns);
    if (ns > max_ns.load(std::memory_order_relaxed)) max_ns.store(ns, std::memory_order_relaxed);
  }
  /// Adds this histogram's samples to `h` (merging several workers' histograms).
  void read_into(histogram& h) const noexcept {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < histogram::bucket_count; ++i) {
      const std::uint64_t b = buckets[i].load(std::memory_order_relaxed);
      h.buckets[i] += b;
      n += b;
    }
    h.count += n;  // the buckets read, so count and buckets always agree
    h.sum_ns += sum_ns.load(std::memory_order_relaxed);
    h.max_ns = std::max(h.max_ns, max_ns.load(std::memory_order_relaxed));
  }
};

/// A value per queued job, by job id: slot `id % size`. Jobs enter and leave in id
/// order, so a ring that has grown to the deepest queue seen never overwrites an
/// entry still queued. A plain store per job and a load per pull, no allocation in
/// steady state (a deque beside the FIFO cost a third more per empty job).
///
/// Thread-safety: none of its own; the engine uses it under its ingress lock.
///
/// @code
///   id_ring r;
///   r.put(1, t1, 1);   // job 1 entered at t1; the oldest queued job is 1
///   r.put(2, t2, 1);
///   r.at(1);           // t1, until job 1 leaves and later ids reuse its slot
/// @endcode
class id_ring {
 public:
  /// Records `v` for job `id`; `oldest` is the id of the oldest job still queued
  /// (`oldest <= id`). May allocate: if that throws, nothing changed.
  void put(std::uint64_t id, std::uint64_t v, std::uint64_t oldest) {
    if (id - oldest >= size_) grow(oldest, id);
    slots_[id & (size_ - 1)] = v;
  }
  /// The value recorded for `id`, which must still be queued.
  [[nodiscard]] std::uint64_t at(std::uint64_t id) const noexcept { return slots_[id & (size_ - 1)]; }
  /// Slots allocated: 0 before the first put, then a power of two.
  [[nodiscard]] std::size_t capacity() const noexcept { return size_; }

 private:
  // Doubles until ids [oldest, id] fit, moving the queued ones. Slots are left
  // uninitialized: each is written before it is read.
  void grow(std::uint64_t oldest, std::uint64_t id) {
    std::size_t size = size_ == 0 ? 64 : size_;
    while (size <= id - oldest) size *= 2;
    auto next = std::make_unique_for_overwrite<std::uint64_t[]>(size);
    for (std::uint64_t k = oldest; k < id; ++k) next[k & (size - 1)] = slots_[k & (size_ - 1)];
    slots_ = std::move(next);
    size_ = size;
  }
  std::unique_ptr<std::uint64_t[]> slots_;
  std::size_t size_ = 0;  // a power of two, or 0 before the first job
};

/// When metrics are on: an attempt's start and end on the metrics clock (ticks).
struct attempt_span {
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  std::int64_t ns = 0;  // end - start, converted once
};

/// A run's metrics (see flowpool/metrics.hpp): what each worker id measured (jobs
/// started, busy time, queue-wait and run-time histograms, its part of the trace),
/// the gauge samples and the user's periodic snapshot callback. The engine owns one
/// and feeds it; it knows nothing of jobs, queues or TBB.
///
/// Thread-safety: the per-worker calls (`begin_batch`, `attempt`, `end_batch`) are
/// made by the thread holding that worker id, at most one at a time per id;
/// `read_into` by any thread, lock-free; `on_timer` by one thread at a time (the
/// engine's timer); `add_final_sample` and `trace_into` only once no other call can
/// run (after the run).
///
/// @code
///   run_metrics m(opts, /*workers=*/2, clock::now());
///   const auto t0 = m.begin_batch(1);
///   m.attempt(1, ready_at, span);                     // per attempt the batch ran
///   if (m.tracing()) m.trace(1, span, attempt_event{...});
///   m.end_batch(1, t0, /*started=*/1);
///   metrics_snapshot s;
///   m.read_into(s, /*final=*/false);
/// @endcode
class run_metrics {
 public:
  using clock = std::chrono::steady_clock;

  /// Throws errc::invalid_argument for an interval or sample period <= 0 where one is needed.
  run_metrics(metrics_options opts, int workers, clock::time_point start)
      : opts_((validate(opts), std::move(opts))),
        workers_(workers),
        tracing_(opts_.trace_limit > 0),
        on_(opts_.enabled || tracing_ || static_cast<bool>(opts_.on_snapshot)) {
    if (on_) {
      slots_ = std::make_unique<worker_slot[]>(static_cast<std::size_t>(workers_));
      clock_.emplace();
    }
    if (tracing_) {
      // trace_limit counts trace events: one per attempt, two per gauge sample (its
      // queue-depth and busy-workers counters). Samples get at most an eighth, so
      // they never crowd out attempts; none when that is under 4 samples.
      sample_cap_ = opts_.trace_limit / 16;
      if (sample_cap_ < 4) sample_cap_ = 0;
      attempt_cap_ = opts_.trace_limit - 2 * sample_cap_;
      sample_period_ = saturating_duration<clock::duration>(opts_.sample_period);
    }
    if (sample_cap_ > 0) {
      next_sample_ = saturating_add<clock>(start, sample_period_);
      add_sample(
          gauge_sample{std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count(), 0, 0});
    }
    if (opts_.on_snapshot) next_callback_ = saturating_add<clock>(start, opts_.interval);
  }

  run_metrics(const run_metrics&) = delete;
  run_metrics& operator=(const run_metrics&) = delete;

  /// Whether anything is measured (enabled, tracing or a snapshot callback). When
  /// false, no other call but `read_into` and `trace_into` may be made.
  [[nodiscard]] bool on() const noexcept { return on_; }
  [[nodiscard]] bool tracing() const noexcept { return tracing_; }
  /// The clock; only when on().
  [[nodiscard]] const metrics_clock& tick_clock() const noexcept { return *clock_; }
  /// Now in ticks when on(), else 0 (no clock read).
  [[nodiscard]] std::uint64_t ticks() const noexcept { return on_ ? clock_->ticks() : 0; }

  // ---- per worker id (the id's holder) ---------------------------------------------------

  /// A batch starts on worker `wid` (1..N): returns its start tick.
  std::uint64_t begin_batch(int wid) noexcept {
    const std::uint64_t t0 = clock_->ticks();
    slot(wid).busy_since.store(clock_->ns_at(t0), std::memory_order_relaxed);
    return t0;
  }

  /// An attempt of that batch ran over `span`, after the job was ready (queued, or
  /// its backoff over) at tick `ready_at`: one queue-wait and one run-time sample.
  void attempt(int wid, std::uint64_t ready_at, const attempt_span& span) noexcept {
    worker_slot& s = slot(wid);
    s.wait.add(clock_->ns_between(ready_at, span.start));  // 0 if two cores' ticks disagree
    s.run.add(span.ns);
  }

  /// With tracing on, records that attempt as `e` (its times are set from `span`)
  /// while the trace has room, and counts it as dropped after.
  void trace(int wid, const attempt_span& span, attempt_event e) {
    worker_slot& s = slot(wid);
    if (trace_used_.fetch_add(1, std::memory_order_relaxed) < attempt_cap_) {
      e.start_ns = clock_->ns_at(span.start);
      e.end_ns = clock_->ns_at(span.end);
      s.trace.push_back(e);
    } else {
      trace_dropped_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  /// The batch begun at tick `t0` ended, having started `started` attempts. Returns
  /// its length in ns.
  std::int64_t end_batch(int wid, std::uint64_t t0, std::uint64_t started) noexcept {
    worker_slot& s = slot(wid);
    const std::uint64_t t = clock_->ticks();
    atomic_histogram::bump(s.started, started);
    const std::int64_t batch_ns = clock_->ns_between(t0, t);
    // A seqlock (this worker is the slot's only writer): the release stores keep
    // the odd sequence number visible before the new values.
    const std::uint32_t seq = s.busy_seq.load(std::memory_order_relaxed);
    s.busy_seq.store(seq + 1, std::memory_order_relaxed);
    s.busy_ns.store(s.busy_ns.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(batch_ns),
                    std::memory_order_release);
    s.busy_since.store(0, std::memory_order_release);
    s.busy_seq.store(seq + 2, std::memory_order_release);
    return batch_ns;
  }

  // ---- readers -----------------------------------------------------------------------------

  /// Fills `m`'s started count, busy time and histograms (the rest of a snapshot is
  /// the engine's). `final`: the run is over, so no batch is running. Lock-free; any thread.
  void read_into(metrics_snapshot& m, bool final) const noexcept {
    if (!on_) return;
    std::int64_t busy = 0;
    const std::int64_t now = clock_->now_ns();
    for (int w = 1; w <= workers_; ++w) {
      const worker_slot& s = slot(w);
      m.started += s.started.load(std::memory_order_relaxed);
      std::uint64_t done = 0;
      std::int64_t since = 0;
      for (;;) {  // a consistent pair: not one from before a batch's end and one from after
        const std::uint32_t seq = s.busy_seq.load(std::memory_order_acquire);
        done = s.busy_ns.load(std::memory_order_acquire);
        since = s.busy_since.load(std::memory_order_acquire);
        if ((seq & 1U) == 0 && s.busy_seq.load(std::memory_order_relaxed) == seq) break;
      }
      busy += static_cast<std::int64_t>(done);
      if (since != 0 && !final && now > since) busy += now - since;  // the batch running now
      s.wait.read_into(m.queue_wait);
      s.run.read_into(m.run_time);
    }
    // The running batch is counted up to this reader's clock read, which may be a
    // little later than the end the worker then records: never report less than
    // an earlier call did, so busy time (a Prometheus counter) never goes back.
    std::int64_t seen = busy_seen_.load(std::memory_order_relaxed);
    while (busy > seen && !busy_seen_.compare_exchange_weak(seen, busy, std::memory_order_relaxed)) {
    }
    m.busy_time = std::chrono::nanoseconds(std::max(busy, seen));
  }

  /// Fills `t`'s attempts (sorted by start), samples and dropped count. After the run only.
  void trace_into(trace_data& t) const {
    if (!tracing_) return;
    for (int w = 1; w <= workers_; ++w) {
      const auto& ev = slot(w).trace;
      t.attempts.insert(t.attempts.end(), ev.begin(), ev.end());
    }
    std::sort(t.attempts.begin(), t.attempts.end(),
              [](const attempt_event& a, const attempt_event& b) { return a.start_ns < b.start_ns; });
    t.samples = samples_;
    t.dropped = trace_dropped_.load(std::memory_order_relaxed) + 2 * samples_dropped_;
  }

  // ---- the timer ---------------------------------------------------------------------------

  /// When on_timer() first wants to run; time_point::max() when it never does
  /// (no gauge samples and no snapshot callback).
  [[nodiscard]] clock::time_point first_due() const noexcept { return std::min(next_sample_, next_callback_); }

  /// Takes a gauge sample and calls the snapshot callback when they are due at
  /// `now`; returns when it wants to run next. `snapshot()` gives the full snapshot
  /// for the callback. A throwing callback is not called again (documented).
  template <class Snapshot>
  clock::time_point on_timer(clock::time_point now, std::size_t depth, int busy, Snapshot&& snapshot) {
    if (now >= next_sample_) {
      add_sample(gauge_sample{clock_->now_ns(), depth, busy});
      next_sample_ = std::max(saturating_add<clock>(next_sample_, sample_period_), now);
    }
    if (now >= next_callback_) {
      try {
        opts_.on_snapshot(snapshot());
        next_callback_ = std::max(saturating_add<clock>(next_callback_, opts_.interval), now);
      } catch (...) {  // NOLINT(bugprone-empty-catch): documented: a throwing callback is not called again
        next_callback_ = clock::time_point::max();
      }
    }
    return first_due();
  }

  /// The closing gauge sample (an idle pool), once the timer has stopped.
  void add_final_sample() {
    if (sample_cap_ > 0) add_sample(gauge_sample{clock_->now_ns(), 0, 0});
  }

  /// Validates the options this class reads; throws errc::invalid_argument.
  static void validate(const metrics_options& m) {
    if (m.on_snapshot && m.interval.count() <= 0) {
      throw_error(errc::invalid_argument, "metrics_options: interval must be > 0 when on_snapshot is set, got " +
                                              std::to_string(m.interval.count()) + " ms");
    }
    if (m.trace_limit > 0 && m.sample_period.count() <= 0) {
      throw_error(errc::invalid_argument, "metrics_options: sample_period must be > 0 when tracing, got " +
                                              std::to_string(m.sample_period.count()) + " ms");
    }
  }

 private:
  // Per worker id: written only by the thread holding that id, read by read_into().
  // Cache-line aligned: workers never false-share.
  struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> started{0};
    std::atomic<std::uint64_t> busy_ns{0};
    std::atomic<std::int64_t> busy_since{0};  // start of the running batch, 0 when idle
    // Odd while a batch's end is being recorded (busy_ns and busy_since change
    // together): read_into() retries, so it never sees one updated without the other.
    std::atomic<std::uint32_t> busy_seq{0};
    atomic_histogram wait;
    atomic_histogram run;
    std::vector<attempt_event> trace;  // read only after the run
  };

  [[nodiscard]] worker_slot& slot(int wid) noexcept { return slots_[static_cast<std::size_t>(wid - 1)]; }
  [[nodiscard]] const worker_slot& slot(int wid) const noexcept { return slots_[static_cast<std::size_t>(wid - 1)]; }

  // Keeps at most sample_cap_ (> 0) samples covering the whole run: when they fill
  // it, every other one is dropped and sampling slows to half the rate.
  void add_sample(const gauge_sample& g) {
    if (samples_.size() >= sample_cap_) {
      std::size_t kept = 0;
      for (std::size_t i = 0; i < samples_.size(); i += 2) samples_[kept++] = samples_[i];
      samples_dropped_ += samples_.size() - kept;
      samples_.resize(kept);
      sample_period_ = saturating_double(sample_period_);
    }
    samples_.push_back(g);
  }

  const metrics_options opts_;
  const int workers_;
  const bool tracing_;
  const bool on_;
  std::optional<metrics_clock> clock_;  // set when on()
  std::unique_ptr<worker_slot[]> slots_;
  alignas(64) std::atomic<std::uint64_t> trace_used_{0};  // attempts offered to the trace (every worker adds)
  std::atomic<std::uint64_t> trace_dropped_{0};
  mutable std::atomic<std::int64_t> busy_seen_{0};  // the largest busy time read_into() gave
  std::uint64_t attempt_cap_ = 0;                   // attempts the trace keeps at most
  std::size_t sample_cap_ = 0;                      // gauge samples it keeps at most (0: no sampling)
  // The timer's (and, after the run, finish()'s):
  std::uint64_t samples_dropped_ = 0;
  clock::duration sample_period_{};  // doubles each time the samples are thinned
  std::vector<gauge_sample> samples_;
  clock::time_point next_sample_ = clock::time_point::max();
  clock::time_point next_callback_ = clock::time_point::max();
};

}  // namespace flowpool::detail
