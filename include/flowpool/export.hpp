// flowpool/export.hpp - symbol visibility for the shared library.
#pragma once

/// @file
/// `FLOWPOOL_API`, the export macro. libflowpool.so is built with hidden
/// visibility, so only what carries this macro (and header-only code) is
/// reachable from a program: every non-inline function and class that a public
/// header declares carries it. A static build defines `FLOWPOOL_STATIC_DEFINE`
/// (the CMake target and flowpool.pc pass it on), which makes the macro empty.

#if defined(FLOWPOOL_STATIC_DEFINE)
#define FLOWPOOL_API
#elif defined(_WIN32)
#if defined(FLOWPOOL_BUILDING)
#define FLOWPOOL_API __declspec(dllexport)
#else
#define FLOWPOOL_API __declspec(dllimport)
#endif
#else
/// Marks a symbol that is part of flowpool's public ABI: default visibility in
/// the shared library, empty with `FLOWPOOL_STATIC_DEFINE`.
#define FLOWPOOL_API __attribute__((visibility("default")))
#endif
