// flowpool::error, names of enums, option validation.
#include "flowpool/error.hpp"

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
  if (opts.max_batch < 1) {
    throw_error(errc::invalid_argument, "pool: max_batch must be >= 1, got 0");
  }
  if (opts.timeout.count() < 0) {
    throw_error(errc::invalid_argument, "pool: timeout must be >= 0");
  }
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
