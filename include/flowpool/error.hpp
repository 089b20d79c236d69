// flowpool/error.hpp - the one exception type flowpool throws.
#pragma once

/// @file
/// `flowpool::error`, the one exception type flowpool throws, its codes
/// (`flowpool::errc`), and `flowpool::permanent_error` for jobs.

#include <stdexcept>
#include <string>
#include <string_view>

#include "flowpool/export.hpp"

namespace flowpool {

/// What went wrong, as a stable code. `flowpool::error::code()` returns one.
enum class errc : int {
  invalid_argument = 1,  ///< a configuration value is out of range (workers <= 0, capacity <= 0, ...)
  closed,                ///< submit() after close()
  already_waited,        ///< wait() called a second time
  finished,              ///< an operation that needs a live run, after wait() returned
  cancelled,             ///< thrown by job_context::throw_if_stop_requested(); marks a job cancelled
  permanent,             ///< a job failure that must not be retried (see permanent_error)
  invalid_spec,          ///< a graph spec failed validation
  io,                    ///< a file could not be read or written
  internal,              ///< a broken invariant inside flowpool; please report it
};

/// A short, stable name for a code ("invalid_argument", "closed", ...);
/// "unknown" for a value outside the enum. Thread-safe, never throws.
///
/// @code
///   std::cerr << flowpool::to_string(e.code()) << ": " << e.what() << '\n';
/// @endcode
FLOWPOOL_API std::string_view to_string(errc code) noexcept;

/// The exception type of flowpool. Every error flowpool raises is a
/// `flowpool::error` (or derives from it), carrying an `errc` and a message that
/// names the problem, e.g. "pool: workers must be >= 1, got 0".
///
/// Thread-safety: immutable after construction.
///
/// @code
///   try { pool.submit(job); }
///   catch (const flowpool::error& e) {
///     if (e.code() == flowpool::errc::closed) { /* submit after close */ }
///   }
/// @endcode
class FLOWPOOL_API error : public std::runtime_error {
 public:
  /// Builds an error with a code and a human-readable message.
  error(errc code, const std::string& message);
  /// The stable code of this error.
  [[nodiscard]] errc code() const noexcept { return code_; }

 private:
  errc code_;
};

/// Thrown by a job to say "this failure is final: do not retry me".
/// The failure is recorded like any other, with kind `error_kind::exception`,
/// but the retry policy never retries it.
///
/// @code
///   if (!std::filesystem::exists(path)) throw flowpool::permanent_error("no such file: " + path);
/// @endcode
class FLOWPOOL_API permanent_error : public error {
 public:
  /// Builds a permanent (non-retryable) job failure with a message.
  explicit permanent_error(const std::string& message);
};

namespace detail {
/// The single throw site for flowpool errors; keeps throw code out of templates.
[[noreturn]] FLOWPOOL_API void throw_error(errc code, const std::string& message);
}  // namespace detail

}  // namespace flowpool
