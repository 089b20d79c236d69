// flowpool/detail/thread_annotations.hpp - Clang thread-safety annotations, and the
// lock types the engine uses so that Clang can check them.
// Not part of the public API: names and signatures may change in any release.
//
// With Clang and -Wthread-safety (the `clang-tsa` preset), every member marked
// FLOWPOOL_GUARDED_BY(mu) may only be touched with `mu` held, and every function
// marked FLOWPOOL_REQUIRES(mu) only called with it held; anything else is a
// compile error. Other compilers see no attributes at all.
#pragma once

#include <mutex>

#if defined(__GLIBC__)
#include <pthread.h>
#endif

#if defined(__clang__)
#define FLOWPOOL_TSA(x) __attribute__((x))
#else
#define FLOWPOOL_TSA(x)
#endif

#define FLOWPOOL_CAPABILITY(name) FLOWPOOL_TSA(capability(name))
#define FLOWPOOL_SCOPED_CAPABILITY FLOWPOOL_TSA(scoped_lockable)
#define FLOWPOOL_GUARDED_BY(m) FLOWPOOL_TSA(guarded_by(m))
#define FLOWPOOL_PT_GUARDED_BY(m) FLOWPOOL_TSA(pt_guarded_by(m))
#define FLOWPOOL_REQUIRES(...) FLOWPOOL_TSA(requires_capability(__VA_ARGS__))
#define FLOWPOOL_EXCLUDES(...) FLOWPOOL_TSA(locks_excluded(__VA_ARGS__))
#define FLOWPOOL_ACQUIRE(...) FLOWPOOL_TSA(acquire_capability(__VA_ARGS__))
#define FLOWPOOL_TRY_ACQUIRE(...) FLOWPOOL_TSA(try_acquire_capability(__VA_ARGS__))
#define FLOWPOOL_RELEASE(...) FLOWPOOL_TSA(release_capability(__VA_ARGS__))
#define FLOWPOOL_NO_THREAD_SAFETY_ANALYSIS FLOWPOOL_TSA(no_thread_safety_analysis)

namespace flowpool::detail {

/// A mutex for short critical sections taken at high rates (a pool's ingress).
/// glibc's adaptive mutex spins briefly before it parks a thread in the kernel,
/// where std::mutex parks at once and pays a futex wake-up for nearly every
/// hand-off under contention. Falls back to std::mutex elsewhere. Meets Lockable;
/// a Clang capability, so members can be FLOWPOOL_GUARDED_BY it.
///
/// Thread-safety: it is the synchronization.
///
/// @code
///   fast_mutex mu;
///   int n FLOWPOOL_GUARDED_BY(mu) = 0;
///   { const scoped_lock lk(mu); ++n; }
/// @endcode
class FLOWPOOL_CAPABILITY("mutex") fast_mutex {
 public:
  fast_mutex() noexcept = default;
  fast_mutex(const fast_mutex&) = delete;
  fast_mutex& operator=(const fast_mutex&) = delete;
#if defined(__GLIBC__) && defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
  ~fast_mutex() {
    pthread_mutex_destroy(&m_);
  }
  void lock() noexcept FLOWPOOL_ACQUIRE() {
    pthread_mutex_lock(&m_);
  }
  bool try_lock() noexcept FLOWPOOL_TRY_ACQUIRE(true) {
    return pthread_mutex_trylock(&m_) == 0;
  }
  void unlock() noexcept FLOWPOOL_RELEASE() {
    pthread_mutex_unlock(&m_);
  }

 private:
  pthread_mutex_t m_ = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
#else
  ~fast_mutex() = default;
  void lock() FLOWPOOL_ACQUIRE() {
    m_.lock();
  }
  bool try_lock() FLOWPOOL_TRY_ACQUIRE(true) {
    return m_.try_lock();
  }
  void unlock() FLOWPOOL_RELEASE() {
    m_.unlock();
  }

 private:
  std::mutex m_;
#endif
};

/// Holds a fast_mutex for its scope, like std::unique_lock: it may be unlocked
/// early and locked again, and a std::condition_variable_any can wait on it.
///
/// Thread-safety: one thread uses one lock object.
///
/// @code
///   scoped_lock lk(mu);
///   while (!ready) cv.wait(lk);   // condition_variable_any
///   lk.unlock();                  // the rest runs without the lock
/// @endcode
class FLOWPOOL_SCOPED_CAPABILITY scoped_lock {
 public:
  explicit scoped_lock(fast_mutex& m) FLOWPOOL_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~scoped_lock() FLOWPOOL_RELEASE() {
    if (held_) m_.unlock();
  }
  scoped_lock(const scoped_lock&) = delete;
  scoped_lock& operator=(const scoped_lock&) = delete;
  void lock() FLOWPOOL_ACQUIRE() {
    m_.lock();
    held_ = true;
  }
  void unlock() FLOWPOOL_RELEASE() {
    held_ = false;
    m_.unlock();
  }

 private:
  fast_mutex& m_;
  bool held_ = true;
};

}  // namespace flowpool::detail
