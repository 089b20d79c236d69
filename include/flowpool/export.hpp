// flowpool/export.hpp - symbol visibility for the shared library.
#pragma once

#if defined(FLOWPOOL_STATIC_DEFINE)
#define FLOWPOOL_API
#elif defined(_WIN32)
#if defined(FLOWPOOL_BUILDING)
#define FLOWPOOL_API __declspec(dllexport)
#else
#define FLOWPOOL_API __declspec(dllimport)
#endif
#else
/// Marks a symbol that is part of flowpool's public ABI (default visibility).
#define FLOWPOOL_API __attribute__((visibility("default")))
#endif
