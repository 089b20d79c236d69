// Metrics exporters: Prometheus text exposition, Chrome Trace Event JSON, an SVG timeline.
#include "flowpool/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "flowpool/error.hpp"

namespace flowpool {

std::chrono::nanoseconds histogram::percentile(double q) const noexcept {
  if (count == 0) return std::chrono::nanoseconds(0);
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count)));
  rank = std::clamp<std::uint64_t>(rank, 1, count);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += buckets[i];
    if (seen >= rank) {
      const std::uint64_t top = i + 1 == bucket_count ? max_ns : upper_bound(i) - 1;
      return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(top, max_ns)));
    }
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(max_ns));
}

std::string_view to_string(attempt_status s) noexcept {
  switch (s) {
    case attempt_status::succeeded: return "succeeded";
    case attempt_status::failed: return "failed";
    case attempt_status::retrying: return "retrying";
    case attempt_status::cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

// A label value escaped per the exposition format: backslash, double quote, newline.
std::string prom_escape(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// A sample value: integers as integers, others with enough digits to round-trip.
std::string num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that round-trips
  return std::string(buf, res.ptr);
}
std::string num(std::uint64_t v) { return std::to_string(v); }

double seconds(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

// Prometheus histogram bucket bounds: every power of two from 2^10 ns (~1 us) to
// 2^40 ns (~18 min). Each is a bucket boundary of `histogram`, so the cumulative
// counts are exact.
constexpr int kPromFirstExp = 10;
constexpr int kPromLastExp = 40;

std::uint64_t count_below(const histogram& h, std::uint64_t bound) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < histogram::bucket_count && histogram::upper_bound(i) <= bound; ++i) n += h.buckets[i];
  return n;
}

// Integer ns as decimal seconds, exactly (no rounding; trailing zeros dropped), so a
// bucket's `le` label is its bound: 1073741824 ns is "1.073741824", not "1.07374182".
std::string exact_seconds(std::uint64_t ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llu.%09llu", static_cast<unsigned long long>(ns / 1'000'000'000U),
                static_cast<unsigned long long>(ns % 1'000'000'000U));
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// "us" with three decimals from integer ns: exact, so ts + dur of one event equals
// the ts of the next one on the same worker when they touch.
std::string us(std::int64_t ns) {
  const bool neg = ns < 0;
  const std::uint64_t a = neg ? static_cast<std::uint64_t>(-ns) : static_cast<std::uint64_t>(ns);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%llu.%03llu", neg ? "-" : "", static_cast<unsigned long long>(a / 1000),
                static_cast<unsigned long long>(a % 1000));
  return buf;
}

std::string json_escape(std::string_view v) {
  std::string out;
  for (const char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string xml_escape(std::string_view v) {
  std::string out;
  for (const char c : v) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') out += c;
    }
  }
  return out;
}

std::string short_num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

const char* status_colour(attempt_status s) {
  switch (s) {
    case attempt_status::succeeded: return "#43a047";
    case attempt_status::failed: return "#e53935";
    case attempt_status::retrying: return "#fb8c00";
    case attempt_status::cancelled: return "#9e9e9e";
  }
  return "#000000";
}

// A "nice" tick step (1, 2 or 5 times a power of ten) for about `target` ticks over `span`.
double nice_step(double span, int target) {
  if (span <= 0) return 1;
  const double raw = span / target;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

}  // namespace

metrics_snapshot combine(const std::vector<stage_metrics>& stages) {
  metrics_snapshot t;
  t.final = !stages.empty();
  for (const auto& s : stages) {
    const auto& m = s.metrics;
    t.workers += m.workers;
    t.capacity += m.capacity;
    t.submitted += m.submitted;
    t.started += m.started;
    t.succeeded += m.succeeded;
    t.failed += m.failed;
    t.retried += m.retried;
    t.cancelled += m.cancelled;
    t.queue_depth += m.queue_depth;
    t.max_queue_depth = std::max(t.max_queue_depth, m.max_queue_depth);
    t.busy_workers += m.busy_workers;
    t.busy_time += m.busy_time;
    t.wall = std::max(t.wall, m.wall);
    t.final = t.final && m.final;
    t.queue_wait.merge(m.queue_wait);
    t.run_time.merge(m.run_time);
  }
  return t;
}

namespace {
double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }
nlohmann::json histogram_json(const histogram& h) {
  nlohmann::json buckets = nlohmann::json::array();
  for (std::size_t i = 0; i < histogram::bucket_count; ++i) {
    if (h.buckets[i] != 0) buckets.push_back({histogram::upper_bound(i), h.buckets[i]});
  }
  auto pct = [&](double q) { return ms(static_cast<std::uint64_t>(h.percentile(q).count())); };
  return {{"count", h.count},
          {"mean_ms", ms(static_cast<std::uint64_t>(h.mean().count()))},
          {"p50_ms", pct(0.5)},
          {"p95_ms", pct(0.95)},
          {"p99_ms", pct(0.99)},
          {"max_ms", ms(h.max_ns)},
          {"sum_ms", ms(h.sum_ns)},
          {"buckets", buckets}};
}
}  // namespace

nlohmann::json to_json(const metrics_snapshot& m) {
  return {{"workers", m.workers},
          {"capacity", m.capacity},
          {"submitted", m.submitted},
          {"started", m.started},
          {"succeeded", m.succeeded},
          {"failed", m.failed},
          {"retried", m.retried},
          {"cancelled", m.cancelled},
          {"queue_depth", m.queue_depth},
          {"max_queue_depth", m.max_queue_depth},
          {"busy_workers", m.busy_workers},
          {"busy_ms", ms(static_cast<std::uint64_t>(m.busy_time.count()))},
          {"wall_ms", ms(static_cast<std::uint64_t>(m.wall.count()))},
          {"saturation", m.saturation()},
          {"throughput_per_s", m.throughput()},
          {"final", m.final},
          {"queue_wait", histogram_json(m.queue_wait)},
          {"run_time", histogram_json(m.run_time)}};
}

std::string to_prometheus(std::string_view graph, const std::vector<stage_metrics>& stages) {
  std::ostringstream o;
  const std::string g = prom_escape(graph);
  auto labels = [&](const stage_metrics& s) { return "graph=\"" + g + "\",stage=\"" + prom_escape(s.name) + "\""; };
  struct scalar {
    const char* name;
    const char* type;
    const char* help;
    std::string (*value)(const metrics_snapshot&);
  };
  static const scalar scalars[] = {
      {"flowpool_jobs_submitted_total", "counter", "Jobs accepted into the stage's queue.",
       [](const metrics_snapshot& m) { return num(m.submitted); }},
      {"flowpool_attempts_started_total", "counter", "Job attempts started by a worker (retries included).",
       [](const metrics_snapshot& m) { return num(m.started); }},
      {"flowpool_jobs_succeeded_total", "counter", "Jobs that ended succeeded.",
       [](const metrics_snapshot& m) { return num(m.succeeded); }},
      {"flowpool_jobs_failed_total", "counter", "Jobs that ended failed (after their retries).",
       [](const metrics_snapshot& m) { return num(m.failed); }},
      {"flowpool_jobs_cancelled_total", "counter", "Jobs that ended cancelled.",
       [](const metrics_snapshot& m) { return num(m.cancelled); }},
      {"flowpool_job_retries_total", "counter", "Attempts beyond the first.",
       [](const metrics_snapshot& m) { return num(m.retried); }},
      {"flowpool_busy_seconds_total", "counter", "Time workers spent running jobs, summed over workers.",
       [](const metrics_snapshot& m) { return num(seconds(static_cast<std::uint64_t>(m.busy_time.count()))); }},
      {"flowpool_wall_seconds", "gauge", "Wall time of the run so far.",
       [](const metrics_snapshot& m) { return num(seconds(static_cast<std::uint64_t>(m.wall.count()))); }},
      {"flowpool_workers", "gauge", "Workers of the stage (N).",
       [](const metrics_snapshot& m) { return num(static_cast<std::uint64_t>(m.workers)); }},
      {"flowpool_busy_workers", "gauge", "Workers running a job now.",
       [](const metrics_snapshot& m) { return num(static_cast<std::uint64_t>(std::max(0, m.busy_workers))); }},
      {"flowpool_queue_capacity", "gauge", "Capacity of the stage's queue (C).",
       [](const metrics_snapshot& m) { return num(static_cast<std::uint64_t>(m.capacity)); }},
      {"flowpool_queue_depth", "gauge", "Jobs waiting in the stage's queue now.",
       [](const metrics_snapshot& m) { return num(static_cast<std::uint64_t>(m.queue_depth)); }},
      {"flowpool_queue_depth_max", "gauge", "The highest queue depth so far.",
       [](const metrics_snapshot& m) { return num(static_cast<std::uint64_t>(m.max_queue_depth)); }},
      {"flowpool_saturation_ratio", "gauge", "Busy time / (workers * wall time).",
       [](const metrics_snapshot& m) { return num(m.saturation()); }},
      {"flowpool_throughput_jobs_per_second", "gauge", "Jobs finished per second of wall time.",
       [](const metrics_snapshot& m) { return num(m.throughput()); }},
  };
  for (const auto& sc : scalars) {
    o << "# HELP " << sc.name << ' ' << sc.help << '\n' << "# TYPE " << sc.name << ' ' << sc.type << '\n';
    for (const auto& s : stages) o << sc.name << '{' << labels(s) << "} " << sc.value(s.metrics) << '\n';
  }
  struct hist {
    const char* name;
    const char* help;
    const histogram metrics_snapshot::*h;
  };
  static const hist hists[] = {
      {"flowpool_queue_wait_seconds", "Per attempt: time from entering the queue (or the end of a backoff) to starting.",
       &metrics_snapshot::queue_wait},
      {"flowpool_run_time_seconds", "Per attempt: time the worker ran it.", &metrics_snapshot::run_time},
  };
  for (const auto& hs : hists) {
    o << "# HELP " << hs.name << ' ' << hs.help << '\n' << "# TYPE " << hs.name << " histogram\n";
    for (const auto& s : stages) {
      const histogram& h = s.metrics.*(hs.h);
      const std::string l = labels(s);
      for (int e = kPromFirstExp; e <= kPromLastExp; ++e) {
        const std::uint64_t bound = std::uint64_t{1} << e;
        o << hs.name << "_bucket{" << l << ",le=\"" << exact_seconds(bound) << "\"} " << count_below(h, bound) << '\n';
      }
      o << hs.name << "_bucket{" << l << ",le=\"+Inf\"} " << h.count << '\n';
      o << hs.name << "_sum{" << l << "} " << num(seconds(h.sum_ns)) << '\n';
      o << hs.name << "_count{" << l << "} " << h.count << '\n';
    }
  }
  return o.str();
}

void write_file_atomically(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc | std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    f.close();
    if (!f) detail::throw_error(errc::io, "cannot write \"" + tmp + "\"");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) detail::throw_error(errc::io, "cannot rename \"" + tmp + "\" to \"" + path + "\": " + ec.message());
}

void write_chrome_trace(std::ostream& out, const std::vector<stage_trace>& stages, std::int64_t origin_ns) {
  std::uint64_t dropped = 0;
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  bool first = true;
  auto sep = [&]() -> std::ostream& {
    if (!first) out << ",\n";
    first = false;
    return out;
  };
  for (std::size_t k = 0; k < stages.size(); ++k) {
    const auto& st = stages[k];
    const std::size_t pid = k + 1;
    dropped += st.trace.dropped;
    sep() << R"({"ph":"M","name":"process_name","pid":)" << pid << R"(,"tid":0,"args":{"name":"stage )"
          << json_escape(st.name) << "\"}}";
    sep() << R"({"ph":"M","name":"process_sort_index","pid":)" << pid << R"(,"tid":0,"args":{"sort_index":)" << pid
          << "}}";
    for (int w = 1; w <= st.trace.workers; ++w) {
      sep() << R"({"ph":"M","name":"thread_name","pid":)" << pid << ",\"tid\":" << w << R"(,"args":{"name":"worker )"
            << w << "\"}}";
    }
    for (const auto& e : st.trace.attempts) {
      sep() << R"({"ph":"X","cat":"attempt","name":"job )" << e.job << R"(","pid":)" << pid << ",\"tid\":" << e.worker
            << ",\"ts\":" << us(e.start_ns - origin_ns) << ",\"dur\":" << us(e.end_ns - e.start_ns)
            << R"(,"args":{"job":)" << e.job << ",\"attempt\":" << e.attempt << R"(,"status":")" << to_string(e.status)
            << "\"}}";
    }
    for (const auto& s : st.trace.samples) {
      sep() << R"({"ph":"C","name":"queue_depth","pid":)" << pid << ",\"tid\":0,\"ts\":" << us(s.t_ns - origin_ns)
            << R"(,"args":{"queue_depth":)" << s.queue_depth << "}}";
      sep() << R"({"ph":"C","name":"busy_workers","pid":)" << pid << ",\"tid\":0,\"ts\":" << us(s.t_ns - origin_ns)
            << R"(,"args":{"busy_workers":)" << s.busy_workers << "}}";
    }
  }
  out << "\n],\"otherData\":{\"generator\":\"flowpool\",\"dropped_events\":" << dropped << "}}\n";
  if (!out) detail::throw_error(errc::io, "write_chrome_trace: the stream failed");
}

void write_timeline_svg(std::ostream& out, std::string_view title, const std::vector<stage_trace>& stages,
                        std::int64_t origin_ns) {
  constexpr double kLeft = 150, kRight = 30, kTop = 56, kRow = 18, kBar = 14, kDepthH = 46, kGap = 14;
  constexpr double kWidth = 1200;
  const double plot_w = kWidth - kLeft - kRight;
  std::int64_t end_ns = origin_ns + 1;
  std::size_t n_attempts = 0;
  std::uint64_t dropped = 0;
  for (const auto& st : stages) {
    end_ns = std::max(end_ns, st.trace.end_ns);
    for (const auto& e : st.trace.attempts) end_ns = std::max(end_ns, e.end_ns);
    n_attempts += st.trace.attempts.size();
    dropped += st.trace.dropped;
  }
  const double span_ms = static_cast<double>(end_ns - origin_ns) / 1e6;
  auto x_of = [&](std::int64_t t_ns) {
    return kLeft + plot_w * static_cast<double>(t_ns - origin_ns) / static_cast<double>(end_ns - origin_ns);
  };
  double height = kTop;
  for (const auto& st : stages) height += kRow * st.trace.workers + kDepthH + kGap + 18;
  const double axis_y = height;
  height += 60;

  out << R"(<?xml version="1.0" encoding="UTF-8"?>)" << '\n'
      << R"(<svg xmlns="http://www.w3.org/2000/svg" width=")" << kWidth << R"(" height=")" << fixed(height, 0)
      << R"(" viewBox="0 0 )" << kWidth << ' ' << fixed(height, 0)
      << R"(" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">)" << '\n'
      << R"(<rect x="0" y="0" width=")" << kWidth << R"(" height=")" << fixed(height, 0) << R"(" fill="#ffffff"/>)"
      << '\n'
      << R"(<text x="12" y="22" font-size="15" font-weight="bold">)" << xml_escape(title) << " — " << n_attempts
      << " attempts in " << fixed(span_ms, 1) << " ms" << (dropped > 0 ? " (" + std::to_string(dropped) + " trace events dropped)" : "")
      << "</text>\n";
  // Legend.
  double lx = kLeft;
  for (const auto s : {attempt_status::succeeded, attempt_status::failed, attempt_status::retrying,
                       attempt_status::cancelled}) {
    out << R"(<g class="legend"><rect x=")" << fixed(lx, 1) << R"(" y="32" width="12" height="12" fill=")"
        << status_colour(s) << R"("/><text x=")" << fixed(lx + 16, 1) << R"(" y="42">)" << to_string(s)
        << "</text></g>\n";
    lx += 100;
  }
  out << R"(<g class="legend"><polyline points=")" << fixed(lx, 1) << ",42 " << fixed(lx + 12, 1) << ",34"
      << R"(" fill="none" stroke="#1e88e5" stroke-width="2"/><text x=")" << fixed(lx + 16, 1)
      << R"(" y="42">queue depth</text></g>)" << '\n';

  double y = kTop;
  for (const auto& st : stages) {
    out << R"(<text x="12" y=")" << fixed(y + 12, 1) << R"(" font-weight="bold">stage )" << xml_escape(st.name)
        << "</text>\n";
    y += 18;
    const double rows_top = y;
    for (int w = 1; w <= st.trace.workers; ++w) {
      const double ry = rows_top + kRow * (w - 1);
      out << R"(<rect x=")" << kLeft << R"(" y=")" << fixed(ry, 1) << R"(" width=")" << fixed(plot_w, 1)
          << R"(" height=")" << kRow << R"(" fill=")" << (w % 2 == 0 ? "#f5f5f5" : "#fafafa") << R"("/>)"
          << R"(<text x="24" y=")" << fixed(ry + 13, 1) << R"(">worker )" << w << "</text>\n";
    }
    for (const auto& e : st.trace.attempts) {
      const double x0 = x_of(e.start_ns);
      const double wpx = std::max(0.5, x_of(e.end_ns) - x0);
      const double ry = rows_top + kRow * (e.worker - 1) + (kRow - kBar) / 2;
      out << R"(<rect class="attempt" x=")" << fixed(x0, 2) << R"(" y=")" << fixed(ry, 1) << R"(" width=")"
          << fixed(wpx, 2) << R"(" height=")" << kBar << R"(" fill=")" << status_colour(e.status)
          << R"(" stroke="#ffffff" stroke-width="0.3"><title>job )" << e.job << " attempt " << e.attempt << ": "
          << to_string(e.status) << ", " << fixed(static_cast<double>(e.end_ns - e.start_ns) / 1e6, 3)
          << " ms</title></rect>\n";
    }
    y = rows_top + kRow * st.trace.workers + 4;
    // Queue depth as a step line, scaled to the run's highest depth (exact, from the
    // engine), which a sample may have missed.
    std::size_t peak = std::max<std::size_t>(1, st.trace.max_queue_depth);
    for (const auto& s : st.trace.samples) peak = std::max(peak, s.queue_depth);
    const double base = y + kDepthH;
    out << R"(<rect x=")" << kLeft << R"(" y=")" << fixed(y, 1) << R"(" width=")" << fixed(plot_w, 1)
        << R"(" height=")" << kDepthH << R"(" fill="#e3f2fd"/>)" << R"(<text x="24" y=")" << fixed(y + 16, 1)
        << R"(">queue depth</text><text x="24" y=")" << fixed(y + 30, 1) << R"(" fill="#555">max )" << peak
        << "</text>\n";
    if (!st.trace.samples.empty()) {
      out << R"(<polyline class="queue-depth" fill="none" stroke="#1e88e5" stroke-width="1.5" points=")";
      double prev_y = base;
      bool first = true;
      for (const auto& s : st.trace.samples) {
        const double px = x_of(s.t_ns);
        const double py = base - kDepthH * static_cast<double>(s.queue_depth) / static_cast<double>(peak);
        if (!first) out << fixed(px, 2) << ',' << fixed(prev_y, 2) << ' ';
        out << fixed(px, 2) << ',' << fixed(py, 2) << ' ';
        prev_y = py;
        first = false;
      }
      out << R"("/>)" << '\n';
    }
    y = base + kGap;
  }
  // Time axis.
  const double step = nice_step(span_ms, 10);
  out << R"(<g class="axis"><line x1=")" << kLeft << R"(" y1=")" << fixed(axis_y, 1) << R"(" x2=")"
      << fixed(kLeft + plot_w, 1) << R"(" y2=")" << fixed(axis_y, 1) << R"(" stroke="#333"/>)" << '\n';
  for (double t = 0; t <= span_ms + 1e-9; t += step) {
    const double px = kLeft + plot_w * t / span_ms;
    out << R"(<line x1=")" << fixed(px, 2) << R"(" y1=")" << fixed(axis_y, 1) << R"(" x2=")" << fixed(px, 2)
        << R"(" y2=")" << fixed(axis_y + 5, 1) << R"(" stroke="#333"/><text x=")" << fixed(px, 2) << R"(" y=")"
        << fixed(axis_y + 18, 1) << R"(" text-anchor="middle">)" << short_num(t) << "</text>\n";
  }
  out << R"(<text x=")" << fixed(kLeft + plot_w / 2, 1) << R"(" y=")" << fixed(axis_y + 38, 1)
      << R"(" text-anchor="middle">time since start (ms)</text></g>)" << '\n'
      << "</svg>\n";
  if (!out) detail::throw_error(errc::io, "write_timeline_svg: the stream failed");
}

}  // namespace flowpool
