// flowpool/metrics.hpp - live metrics of a run: counters, saturation, latency histograms, traces.
#pragma once

/// @file
/// Metrics of a run: `flowpool::metrics_options` (turn them on for a pool),
/// `flowpool::metrics_snapshot` (counters, gauges, saturation, histograms),
/// traces (`flowpool::trace_data`), and the exporters: Prometheus text, JSON,
/// Chrome Trace Event JSON and an SVG timeline. See docs/observability.md.

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowpool/export.hpp"

namespace flowpool {

/// Counts of durations in log-scale buckets: four buckets per power of two, so a
/// bucket is at most 25% wide. Counts are exact (every recorded value is counted
/// once); only the position of a value inside its bucket is lost.
///
/// Bucket `i` holds the values `v` (in nanoseconds) with
/// `lower_bound(i) <= v < upper_bound(i)`; the last bucket also holds every value
/// beyond it (about 37 minutes).
///
/// Thread-safety: a plain value; copy it freely, do not write one from two threads.
///
/// @code
///   flowpool::histogram h;
///   h.record(std::chrono::microseconds(3));
///   auto p99 = h.percentile(0.99);   // an upper estimate inside the bucket of the exact p99
/// @endcode
struct histogram {
  /// Number of buckets: values up to 2^41 ns are bucketed, larger ones go in the last.
  static constexpr std::size_t bucket_count = 160;

  std::array<std::uint64_t, bucket_count> buckets{};  ///< count of values in each bucket
  std::uint64_t count = 0;                            ///< number of values recorded
  std::uint64_t sum_ns = 0;                           ///< sum of the values, in nanoseconds
  std::uint64_t max_ns = 0;                           ///< the largest value, in nanoseconds

  /// The bucket a value (in ns) falls in. Never throws; constant time.
  [[nodiscard]] static constexpr std::size_t bucket_of(std::uint64_t ns) noexcept {
    if (ns < 4) return static_cast<std::size_t>(ns);
    const int e = static_cast<int>(std::bit_width(ns)) - 1;  // 2^e <= ns < 2^(e+1), e >= 2
    const std::size_t idx = static_cast<std::size_t>(4 * (e - 1)) + static_cast<std::size_t>((ns >> (e - 2)) & 3U);
    return idx < bucket_count ? idx : bucket_count - 1;
  }
  /// The smallest value (ns) of bucket `i`. Never throws.
  [[nodiscard]] static constexpr std::uint64_t lower_bound(std::size_t i) noexcept {
    if (i < 4) return i;
    const std::size_t e = i / 4 + 1;
    return (4 + i % 4) << (e - 2);
  }
  /// One past the largest value (ns) of bucket `i` (the last bucket is open-ended). Never throws.
  [[nodiscard]] static constexpr std::uint64_t upper_bound(std::size_t i) noexcept {
    return i < 4 ? i + 1 : lower_bound(i) + (std::uint64_t{1} << (i / 4 - 1));
  }

  /// Adds one value. Never throws.
  void record(std::chrono::nanoseconds d) noexcept {
    const auto ns = static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count());
    ++buckets[bucket_of(ns)];
    ++count;
    sum_ns += ns;
    if (ns > max_ns) max_ns = ns;
  }

  /// Adds every count of `other` (merging the histograms of several workers or stages).
  void merge(const histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) buckets[i] += other.buckets[i];
    count += other.count;
    sum_ns += other.sum_ns;
    if (other.max_ns > max_ns) max_ns = other.max_ns;
  }

  /// The q-quantile (q in [0, 1]) by nearest rank: the largest value of the bucket
  /// that holds the ceil(q * count)-th smallest value, capped at `max_ns`. It lies in
  /// the same bucket as the exact quantile. 0 when nothing was recorded.
  [[nodiscard]] FLOWPOOL_API std::chrono::nanoseconds percentile(double q) const noexcept;

  /// The mean value; 0 when nothing was recorded.
  [[nodiscard]] std::chrono::nanoseconds mean() const noexcept {
    return std::chrono::nanoseconds(count == 0 ? 0 : static_cast<std::int64_t>(sum_ns / count));
  }
};

/// A point-in-time view of a run's metrics (see `pool::metrics()`).
///
/// Counters are exact; they are read with relaxed atomics, so a snapshot taken
/// during a run is not one consistent cut (`started` may already count an attempt
/// whose job is not yet in `succeeded`). After `wait()` returns it is final and
/// `submitted == succeeded + failed + cancelled`.
///
/// @code
///   auto m = pool.metrics();
///   std::printf("saturation %.2f, p99 run %lld ns\n", m.saturation(),
///               static_cast<long long>(m.run_time.percentile(0.99).count()));
/// @endcode
struct metrics_snapshot {
  int workers = 0;               ///< N, the pool's worker count
  std::size_t capacity = 0;      ///< C, the queue capacity
  std::uint64_t submitted = 0;   ///< jobs accepted
  std::uint64_t started = 0;     ///< attempts started (a retried job starts more than once)
  std::uint64_t succeeded = 0;   ///< jobs that ended succeeded
  std::uint64_t failed = 0;      ///< jobs that ended failed
  std::uint64_t retried = 0;     ///< attempts beyond the first
  std::uint64_t cancelled = 0;   ///< jobs that ended cancelled (those still queued count from the cancel on)
  std::size_t queue_depth = 0;   ///< jobs waiting for a worker now
  std::size_t max_queue_depth = 0;  ///< the highest queue depth so far (never above `capacity`)
  int busy_workers = 0;             ///< workers running a batch now
  /// Summed over workers: time spent running batches of jobs, including the batch
  /// running now. Never less than an earlier `metrics()` call returned.
  std::chrono::nanoseconds busy_time{0};
  std::chrono::nanoseconds wall{0};       ///< from the pool's construction to now (or to the end of the run)
  bool final = false;                     ///< true once the run is over: the figures no longer change
  histogram queue_wait;  ///< per attempt: from entering the queue (or the end of a backoff) to starting
  histogram run_time;    ///< per attempt: how long the job body ran (the interval of job_record::duration)

  /// busy_time / (workers * wall): 1.0 means every worker was busy all the time. 0 before any wall time.
  [[nodiscard]] double saturation() const noexcept {
    const double denom = static_cast<double>(workers) * static_cast<double>(wall.count());
    return denom <= 0 ? 0.0 : static_cast<double>(busy_time.count()) / denom;
  }
  /// Jobs that reached a terminal state per second of wall time. 0 before any wall time.
  [[nodiscard]] double throughput() const noexcept {
    const double secs = std::chrono::duration<double>(wall).count();
    return secs <= 0 ? 0.0 : static_cast<double>(succeeded + failed + cancelled) / secs;
  }
};

/// How one job attempt ended, as recorded in a trace.
enum class attempt_status : std::uint8_t {
  succeeded,  ///< the worker returned a result
  failed,     ///< the attempt failed and the job failed for good
  retrying,   ///< the attempt failed and the job will be retried after a backoff
  cancelled,  ///< the attempt stopped because the run was cancelled
};

/// Stable lower-case names: "succeeded", "failed", "retrying", "cancelled".
FLOWPOOL_API std::string_view to_string(attempt_status s) noexcept;

/// One job attempt in a trace. Times are `std::chrono::steady_clock` ticks in nanoseconds.
struct attempt_event {
  std::uint64_t job = 0;      ///< the job's id
  std::uint32_t attempt = 1;  ///< 1-based attempt number
  int worker = 0;             ///< 1..N: the worker that ran it
  attempt_status status = attempt_status::succeeded;  ///< how it ended
  std::int64_t start_ns = 0;  ///< when it started
  std::int64_t end_ns = 0;    ///< when it ended (>= start_ns)
};

/// A sample of the live gauges in a trace (taken every `metrics_options::sample_period`).
struct gauge_sample {
  std::int64_t t_ns = 0;        ///< steady_clock time in nanoseconds
  std::size_t queue_depth = 0;  ///< jobs waiting for a worker
  int busy_workers = 0;         ///< workers running a batch
};

/// The trace of one pool's run: attempts and gauge samples, bounded in size.
///
/// @code
///   flowpool::trace_data t = pool.trace();   // after wait()
///   if (t.dropped > 0) std::cerr << t.dropped << " trace events dropped\n";
/// @endcode
struct trace_data {
  std::int64_t start_ns = 0;            ///< steady_clock time (ns) the pool was constructed
  std::int64_t end_ns = 0;              ///< steady_clock time (ns) the run ended
  int workers = 0;                      ///< N
  std::vector<attempt_event> attempts;  ///< every attempt recorded, sorted by start time
  std::vector<gauge_sample> samples;    ///< gauge samples, in time order
  std::size_t max_queue_depth = 0;      ///< the run's highest queue depth (exact; samples may miss the peak)
  /// Trace events not kept because of `trace_limit`: one per attempt, two per gauge sample.
  std::uint64_t dropped = 0;
};

/// Turns metrics and tracing on for one pool (the last argument of the pool's constructor).
///
/// Off (the default) costs one predictable branch per batch and per submit. On, it
/// costs two clock reads per job attempt and one per submit, plus per-worker counters
/// that never share a cache line. Tracing costs more: one event record per attempt.
/// On x86 the clock is the invariant TSC, calibrated against `steady_clock` once per
/// process: the first pool with metrics on spends about 2 ms on that.
///
/// @code
///   flowpool::metrics_options m;
///   m.enabled = true;
///   m.interval = std::chrono::milliseconds(500);
///   m.on_snapshot = [](const flowpool::metrics_snapshot& s) { std::fprintf(stderr, "%.2f\n", s.saturation()); };
///   flowpool::pool<int, int> p(opts, work, agg, m);
/// @endcode
struct metrics_options {
  /// Collect counters, busy time and histograms. Implied by `trace_limit > 0` and by `on_snapshot`.
  bool enabled = false;
  /// Record a trace of at most this many events; 0: no trace. An attempt is one
  /// event, a gauge sample two (its queue-depth and busy-workers counters). Samples
  /// use at most an eighth of the limit (none if that is under 4 samples): when
  /// they fill it, every other one is dropped and sampling slows to half the rate,
  /// so they still cover the whole run. Attempts use the rest; the first ones are kept.
  std::size_t trace_limit = 0;
  /// How often gauge samples are taken for the trace (at first: see `trace_limit`).
  std::chrono::milliseconds sample_period{1};
  /// How often `on_snapshot` is called. Must be > 0 when `on_snapshot` is set.
  std::chrono::milliseconds interval{1000};
  /// Called every `interval` during the run with a snapshot, on the pool's timer
  /// thread (never concurrently with itself). Keep it cheap: it delays retries while it runs.
  /// If it throws, the exception is swallowed and the callback is not called again.
  std::function<void(const metrics_snapshot&)> on_snapshot;
};

/// A labelled snapshot: one stage of a graph (or one pool) for the exporters.
struct stage_metrics {
  std::string name;          ///< the stage's name (a Prometheus `stage` label)
  metrics_snapshot metrics;  ///< its figures
};

/// Writes Prometheus text exposition format (version 0.0.4) for the stages of
/// one graph: counters `flowpool_jobs_*_total`, gauges, and the histograms
/// `flowpool_queue_wait_seconds` and `flowpool_run_time_seconds` as `_bucket`,
/// `_sum` and `_count`, each labelled `graph` and `stage`. Metric names are
/// documented in docs/observability.md. Never throws except std::bad_alloc.
///
/// @code
///   std::cout << flowpool::to_prometheus("seed", {{"work", pool.metrics()}});
/// @endcode
FLOWPOOL_API std::string to_prometheus(std::string_view graph, const std::vector<stage_metrics>& stages);

/// The whole run of several stages as one snapshot: counts, busy time, workers and
/// capacity are summed, histograms merged, queue depths summed (max_queue_depth: the
/// largest of any stage), wall is the longest. So `saturation()` is the busy share of
/// all workers of all stages. Note that one item counts once per stage it entered.
///
/// @code
///   auto whole = flowpool::combine({{"parse", a.metrics()}, {"hash", b.metrics()}});
/// @endcode
FLOWPOOL_API metrics_snapshot combine(const std::vector<stage_metrics>& stages);

/// The snapshot as JSON (the `metrics` objects of the CLI's `--report`): every
/// counter, `busy_ms`, `wall_ms`, `saturation`, `throughput_per_s`, and for
/// `queue_wait` and `run_time` the `count`, `mean_ms`, `p50_ms`, `p95_ms`,
/// `p99_ms`, `max_ms` and the non-empty `buckets` as `[upper_bound_ns, count]`.
/// Keys are documented in docs/observability.md. Never throws except std::bad_alloc.
///
/// @code
///   std::cout << flowpool::to_json(pool.metrics()).dump(2) << '\n';
/// @endcode
FLOWPOOL_API nlohmann::json to_json(const metrics_snapshot& m);

/// Writes `content` to `path` through `path.tmp` and a rename, so a reader
/// (node_exporter's textfile collector) never sees a half-written file.
/// @throws flowpool::error (errc::io) when the file cannot be written.
///
/// @code
///   flowpool::write_file_atomically("/var/lib/node_exporter/flowpool.prom", text);
/// @endcode
FLOWPOOL_API void write_file_atomically(const std::string& path, std::string_view content);

/// One stage's trace, labelled for the trace and timeline writers.
struct stage_trace {
  std::string name;  ///< the stage's name
  trace_data trace;  ///< its attempts and samples
};

/// Writes Chrome Trace Event format JSON (opens in Perfetto and chrome://tracing):
/// one process per stage, one thread (track) per worker, one complete ("X") event
/// per attempt with args `job`, `attempt` and `status`, and counter ("C") tracks
/// `queue_depth` and `busy_workers`. Times are microseconds from `origin_ns`.
/// `dropped` (events cut by the trace limit) is recorded in the metadata.
/// @throws flowpool::error (errc::io) if the stream fails.
///
/// @code
///   std::ofstream f("run.trace.json");
///   flowpool::write_chrome_trace(f, {{"work", pool.trace()}}, pool.trace().start_ns);
/// @endcode
FLOWPOOL_API void write_chrome_trace(std::ostream& out, const std::vector<stage_trace>& stages,
                                     std::int64_t origin_ns);

/// Writes a self-contained SVG Gantt chart: one row per worker of each stage, one
/// bar per attempt coloured by status, the queue depth of each stage over time, a
/// time axis and a legend. Times are measured from `origin_ns`.
/// @throws flowpool::error (errc::io) if the stream fails.
///
/// @code
///   std::ofstream f("run.svg");
///   flowpool::write_timeline_svg(f, "seed", {{"work", pool.trace()}}, pool.trace().start_ns);
/// @endcode
FLOWPOOL_API void write_timeline_svg(std::ostream& out, std::string_view title, const std::vector<stage_trace>& stages,
                                     std::int64_t origin_ns);

}  // namespace flowpool
