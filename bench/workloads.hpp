// bench/workloads.hpp - the shared workloads every peer runs (deterministic CPU work, calibrated once).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

namespace fp_bench {

/// Deterministic CPU work: `iterations` rounds of xorshift. No clock reads.
inline std::uint64_t spin(std::uint64_t iterations, std::uint64_t x = 88172645463325252ULL) {
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

/// Iterations of spin() that take about one microsecond on this machine,
/// measured once per process so "10 us jobs" mean the same for every peer.
inline std::uint64_t iterations_per_us() {
  static const std::uint64_t value = [] {
    const std::uint64_t probe = 20'000'000;
    std::uint64_t best_ns = ~0ULL;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      volatile std::uint64_t sink = spin(probe);
      (void)sink;
      const auto ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
      if (ns < best_ns) best_ns = ns;
    }
    const std::uint64_t per_us = probe * 1000 / (best_ns == 0 ? 1 : best_ns);
    return per_us == 0 ? 1 : per_us;
  }();
  return value;
}

/// Peak resident set size of this process in bytes (VmHWM).
inline std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace fp_bench
