// flowpool/detail/build_info.hpp - how libflowpool itself was compiled.
// Not part of the public API: names and signatures may change in any release.
#pragma once

#include "flowpool/export.hpp"

// The same bits for the translation unit that expands it: a macro, not an inline
// function, whose one definition the linker would pick for every translation unit.
#if defined(__SANITIZE_ADDRESS__)
#define FLOWPOOL_DETAIL_ASAN_BIT 1U
#else
#define FLOWPOOL_DETAIL_ASAN_BIT 0U
#endif
#if defined(__SANITIZE_THREAD__)
#define FLOWPOOL_DETAIL_TSAN_BIT 2U
#else
#define FLOWPOOL_DETAIL_TSAN_BIT 0U
#endif
#define FLOWPOOL_DETAIL_SANITIZERS (FLOWPOOL_DETAIL_ASAN_BIT | FLOWPOOL_DETAIL_TSAN_BIT)

namespace flowpool::detail {

/// The sanitizers libflowpool itself was compiled with: bit 0 AddressSanitizer,
/// bit 1 ThreadSanitizer. A test compares it with its own translation unit's,
/// so a build that instruments the tests but not the library (TSan then misses
/// the library's atomics and reports false races) fails at once. Thread-safe.
///
///     assert(flowpool::detail::compiled_sanitizers() == FLOWPOOL_DETAIL_SANITIZERS);
[[nodiscard]] FLOWPOOL_API unsigned compiled_sanitizers() noexcept;

}  // namespace flowpool::detail
