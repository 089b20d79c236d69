// The build itself: libflowpool is compiled the way its tests are.
#include <catch2/catch.hpp>

#include "flowpool/detail/build_info.hpp"

// A sanitizer build must instrument the library too, not only the tests around it:
// ThreadSanitizer cannot see the atomics of uninstrumented code, so it reported the
// engine's hand-offs compiled into the graph runner as races, and AddressSanitizer
// checked none of the library's own accesses (see CONTRIBUTING.md, "Sanitizers
// instrument the library too").
TEST_CASE("libflowpool is built with the sanitizers its tests are built with", "[build]") {
  CHECK(flowpool::detail::compiled_sanitizers() == FLOWPOOL_DETAIL_SANITIZERS);
}
