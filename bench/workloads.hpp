// bench/workloads.hpp - the shared workloads every peer runs (deterministic CPU work, calibrated once).
#pragma once

#include <openssl/evp.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <algorithm>

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

/// splitmix64: a seeded, stateless hash for per-job pseudo-random values.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Skewed (heavy-tailed) job cost: spin iterations for job `j`, Pareto with
/// alpha 1.5 (scale chosen so the mean is about `mean_us`), capped at 1000x
/// the scale. Deterministic in (seed, j): every peer gets the same jobs.
inline std::uint64_t skewed_iterations(std::uint64_t j, double mean_us, std::uint64_t seed = 42) {
  const double u = static_cast<double>((splitmix64(seed ^ (j * 0x2545f4914f6cdd1dULL)) >> 11) + 1) * 0x1.0p-53;
  const double mult = std::min(std::pow(u, -1.0 / 1.5), 1000.0);  // Pareto(x_m = 1, alpha = 1.5): mean 3
  return static_cast<std::uint64_t>(mean_us / 3.0 * mult * static_cast<double>(iterations_per_us()));
}

/// The shared 4 KiB input of the sha256 workload (job j hashes it with j in its first 8 bytes).
inline const std::array<unsigned char, 4096>& sha_block() {
  static const std::array<unsigned char, 4096> block = [] {
    std::array<unsigned char, 4096> b{};
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(splitmix64(i));
    return b;
  }();
  return block;
}

/// sha256 (OpenSSL EVP) of the 4 KiB block for job `j`; returns the digest's first 8 bytes.
inline std::uint64_t sha256_job(std::uint64_t j) {
  std::array<unsigned char, 4096> b = sha_block();
  std::memcpy(b.data(), &j, sizeof j);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(b.data(), b.size(), md, &len, EVP_sha256(), nullptr) != 1) return 0;
  std::uint64_t v = 0;
  std::memcpy(&v, md, sizeof v);
  return v;
}

/// A workload: its name, its default job count, and a worker count override (0: none).
struct workload_info {
  const char* name;
  std::uint64_t jobs;
  int fixed_workers;  ///< the blocking case always runs at N=3 (more workers than this machine's cores)
  const char* what;
};

/// Every workload the peers run, in table order.
inline const std::array<workload_info, 8>& workloads() {
  static const std::array<workload_info, 8> w{{
      {"empty", 1'000'000, 0, "empty jobs (returns its id): per-job overhead"},
      {"cpu1us", 200'000, 0, "~1 us of deterministic CPU work (xorshift rounds)"},
      {"cpu10us", 20'000, 0, "~10 us of deterministic CPU work"},
      {"cpu100us", 2'000, 0, "~100 us of deterministic CPU work"},
      {"cpu1ms", 200, 0, "~1 ms of deterministic CPU work"},
      {"skewed", 20'000, 0, "heavy-tailed CPU work: Pareto(alpha 1.5), mean ~10 us, cap 1000x scale, seed 42"},
      {"sleep50ms", 8, 3, "blocking: 8 jobs of a 50 ms sleep at N=3 (the seed's case)"},
      {"sha256", 50'000, 0, "sha256 (OpenSSL EVP) of a 4 KiB block"},
  }};
  return w;
}

/// Calls `f(work)` with the job function of workload `name` (a small copyable
/// callable `uint64_t(uint64_t id)`); returns false for an unknown name.
template <class F>
bool with_workload(std::string_view name, F&& f) {
  if (name == "empty") {
    f([](std::uint64_t j) { return j; });
  } else if (name == "cpu1us" || name == "cpu10us" || name == "cpu100us" || name == "cpu1ms") {
    const std::uint64_t us = iterations_per_us();  // calibrated only when a CPU workload runs
    const std::uint64_t iters = name == "cpu1us" ? us : name == "cpu10us" ? 10 * us : name == "cpu100us" ? 100 * us : 1000 * us;
    f([iters](std::uint64_t j) { return spin(iters, j + 1); });
  } else if (name == "skewed") {
    f([](std::uint64_t j) { return spin(skewed_iterations(j, 10.0), j + 1); });
  } else if (name == "sleep50ms") {
    f([](std::uint64_t j) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return j;
    });
  } else if (name == "sha256") {
    (void)sha_block();
    f([](std::uint64_t j) { return sha256_job(j); });
  } else {
    return false;
  }
  return true;
}

}  // namespace fp_bench
