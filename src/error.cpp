// flowpool::error, names of enums, option validation.
#include "flowpool/error.hpp"

#include <algorithm>
#include <exception>
#include <string>
#include <typeinfo>

#include "flowpool/detail/engine.hpp"
#include "flowpool/report.hpp"

namespace flowpool {

error::error(errc code, const std::string& message) : std::runtime_error(message), code_(code) {}

permanent_error::permanent_error(const std::string& message) : error(errc::permanent, message) {}

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::closed: return "closed";
    case errc::already_waited: return "already_waited";
    case errc::finished: return "finished";
    case errc::cancelled: return "cancelled";
    case errc::permanent: return "permanent";
    case errc::invalid_spec: return "invalid_spec";
    case errc::io: return "io";
    case errc::internal: return "internal";
  }
  return "unknown";
}

std::string_view to_string(job_status s) noexcept {
  switch (s) {
    case job_status::succeeded: return "succeeded";
    case job_status::failed: return "failed";
    case job_status::cancelled: return "cancelled";
  }
  return "unknown";
}

std::string_view to_string(error_kind k) noexcept {
  switch (k) {
    case error_kind::exception: return "exception";
    case error_kind::timeout: return "timeout";
    case error_kind::cancelled: return "cancelled";
    case error_kind::aggregator: return "aggregator";
  }
  return "unknown";
}

std::string_view to_string(run_status s) noexcept {
  switch (s) {
    case run_status::ok: return "ok";
    case run_status::failed: return "failed";
    case run_status::cancelled: return "cancelled";
    case run_status::timed_out: return "timed_out";
  }
  return "unknown";
}

namespace detail {

void throw_error(errc code, const std::string& message) { throw error(code, message); }

void validate(const pool_options& opts) {
  if (opts.workers < 1) {
    throw_error(errc::invalid_argument, "pool: workers must be >= 1, got " + std::to_string(opts.workers));
  }
  if (opts.workers > 4096) {
    throw_error(errc::invalid_argument, "pool: workers must be <= 4096, got " + std::to_string(opts.workers));
  }
  if (opts.capacity < 1) {
    throw_error(errc::invalid_argument, "pool: capacity must be >= 1, got " + std::to_string(opts.capacity));
  }
  if (opts.reorder_window > (std::size_t{1} << 24)) {
    throw_error(errc::invalid_argument,
                "pool: reorder_window must be <= 16777216, got " + std::to_string(opts.reorder_window));
  }
  if (opts.max_batch < 1) {
    throw_error(errc::invalid_argument, "pool: max_batch must be >= 1, got 0");
  }
  if (opts.timeout.count() < 0) {
    throw_error(errc::invalid_argument, "pool: timeout must be >= 0");
  }
  if (opts.job_timeout.count() < 0) {
    throw_error(errc::invalid_argument, "pool: job_timeout must be >= 0");
  }
  validate(opts.retry);
}

void validate(const retry_policy& r) {
  if (r.max_attempts < 1) {
    throw_error(errc::invalid_argument, "retry_policy: max_attempts must be >= 1, got 0");
  }
  if (r.backoff_base.count() < 0 || r.backoff_cap.count() < 0) {
    throw_error(errc::invalid_argument, "retry_policy: backoff_base and backoff_cap must be >= 0");
  }
  if (!(r.jitter >= 0.0 && r.jitter <= 1.0)) {
    throw_error(errc::invalid_argument, "retry_policy: jitter must be in [0, 1], got " + std::to_string(r.jitter));
  }
}

std::chrono::nanoseconds backoff_delay(const retry_policy& r, std::uint64_t job, std::uint32_t failed_attempt) {
  // min(cap, base * 2^(attempt-1)), computed without overflow.
  const std::uint32_t shift = failed_attempt > 0 ? failed_attempt - 1 : 0;
  const auto cap = r.backoff_cap.count();
  auto delay = r.backoff_base.count();
  for (std::uint32_t i = 0; i < shift && delay < cap; ++i) delay = delay > cap / 2 ? cap : delay * 2;
  delay = std::min(delay, cap);
  if (r.jitter > 0.0 && delay > 0) {
    // splitmix64 of (seed, job, attempt): deterministic, independent of thread timing.
    std::uint64_t z = r.seed ^ (job * 0x9e3779b97f4a7c15ULL) ^ (static_cast<std::uint64_t>(failed_attempt) << 32);
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
    delay = static_cast<std::int64_t>(static_cast<double>(delay) * (1.0 - r.jitter * u));
  }
  return std::chrono::nanoseconds(delay);
}

std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception (not derived from std::exception)";
  }
}

}  // namespace detail
}  // namespace flowpool
