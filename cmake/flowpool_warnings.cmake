# Warning flags for flowpool's own targets. Never added globally, so nothing
# leaks into a consumer that uses add_subdirectory().
function(flowpool_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Woverloaded-virtual -Wnull-dereference)
  # Clang checks lock ownership: members FLOWPOOL_GUARDED_BY a mutex, functions that
  # FLOWPOOL_REQUIRES it (flowpool/detail/thread_annotations.hpp; the clang-tsa preset).
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(FLOWPOOL_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
