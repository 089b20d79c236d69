// The `exec` kernel: runs a command per item, like `xargs -P` and GNU parallel.
//
// - The argv template is expanded per item ({input}, {id}, {value}) and executed
//   directly (vfork + execve, PATH searched as execvp does): no shell sees the input.
//   An argument that would hold a NUL byte fails the item (C strings end at NUL: it
//   would be cut silently). With `shell: true` the one
//   template string is a /bin/sh script and the input is passed as "$1" (never
//   spliced into the script text).
// - The child's stdout becomes the item's value; its stderr is copied to ours line by
//   line, each line prefixed with "[item ID] ".
// - A non-zero exit (or death by a signal) fails the attempt (retryable).
// - The child runs in its own process group. When the run is cancelled or the
//   attempt's deadline passes, the group gets SIGTERM, then SIGKILL after `grace`.
//   Every child is reaped before the kernel returns or throws: no zombies.
// - A command that exits but leaves processes behind in its group (`sleep 100 &`):
//   the group is remembered, and killed (SIGKILL) when the run is cancelled
//   (interrupt, run timeout, fail-fast). A run that completes leaves them, as xargs does.
// - The child gets PR_SET_PDEATHSIG = SIGKILL: if flowpool dies (kill -9), every
//   running command dies with it. (Its own children do not: see docs/cli.md.)
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#include "../../util/quote.hpp"
#include "flowpool/error.hpp"
#include "flowpool/graph.hpp"
#include "kernels.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX

namespace flowpool::detail {
namespace {

using clk = std::chrono::steady_clock;

struct exec_config {
  std::vector<std::string> argv;
  bool shell = false;
  bool append_input = false;  // no placeholder anywhere: the input goes last, as with xargs
  std::chrono::nanoseconds grace{std::chrono::seconds(2)};
};

bool has_placeholder(const std::string& s) {
  return s.find("{input}") != std::string::npos || s.find("{id}") != std::string::npos ||
         s.find("{value}") != std::string::npos;
}

std::string expand(const std::string& tmpl, const item& it) {
  std::string out;
  out.reserve(tmpl.size() + it.input.size());
  for (std::size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 7, "{input}") == 0) {
      out += it.input;
      i += 7;
    } else if (tmpl.compare(i, 4, "{id}") == 0) {
      out += std::to_string(it.id);
      i += 4;
    } else if (tmpl.compare(i, 7, "{value}") == 0) {
      out += it.value;
      i += 7;
    } else {
      out += tmpl[i++];
    }
  }
  return out;
}

// The expanded argv. A NUL byte cannot be passed in an argument (execve takes C
// strings): instead of cutting the argument there, the item fails and the message says
// which argument holds it.
std::vector<std::string> build_argv(const exec_config& cfg, const item& it) {
  std::vector<std::string> args;
  if (cfg.shell) {
    args = {"/bin/sh", "-c", cfg.argv[0], "flowpool", it.input, std::to_string(it.id)};
    if (const auto z = it.input.find('\0'); z != std::string::npos) {
      throw permanent_error("exec: the input (\"$1\" of the script) holds a NUL byte at offset " + std::to_string(z) +
                            "; a command argument cannot contain NUL");
    }
    return args;
  }
  args.reserve(cfg.argv.size() + 1);
  for (const auto& a : cfg.argv) args.push_back(expand(a, it));
  if (cfg.append_input) args.push_back(it.input);
  for (std::size_t k = 0; k < args.size(); ++k) {
    if (const auto z = args[k].find('\0'); z != std::string::npos) {
      const std::string which = k < cfg.argv.size()
                                    ? "argv[" + std::to_string(k) + "] (" + quote_name(cfg.argv[k]) + ")"
                                    : std::string("the appended input (the last argument)");
      throw permanent_error("exec: " + which + " holds a NUL byte at offset " + std::to_string(z) +
                            " after expansion; a command argument cannot contain NUL");
    }
  }
  return args;
}

// The paths execvp would try for `file`, computed before the fork (no allocation in the child).
std::vector<std::string> exec_candidates(const std::string& file) {
  if (file.find('/') != std::string::npos) return {file};
  const char* env = std::getenv("PATH");
  const std::string path = env != nullptr && *env != '\0' ? env : "/bin:/usr/bin";
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto colon = path.find(':', start);
    const std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    out.push_back((dir.empty() ? std::string(".") : dir) + "/" + file);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

// What the child needs, prepared by the parent: between vfork and execve the child may
// only make system calls (it shares the parent's memory; no malloc, no locks).
struct child_setup {
  const std::vector<std::string>* candidates;
  char* const* argv;
  int out_w;
  int err_w;
  int status_w;  // close-on-exec: the child writes its errno here when no execve succeeded
  pid_t parent;
};

// The child's report of why it could not run the command. A pipe, not a write to the
// shared memory of vfork: where vfork is a plain fork (ThreadSanitizer's and
// valgrind's interceptors do that), the parent would never see such a write, and
// would report the child's exit status 127 instead of the reason.
[[noreturn]] void child_fail(const child_setup* cs, int err) noexcept {
  ssize_t n = 0;
  do {
    n = ::write(cs->status_w, &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  ::_exit(127);
}

[[noreturn]] __attribute__((noinline)) void child_main(child_setup* cs) noexcept {
  ::setpgid(0, 0);  // its own group: TERM/KILL reach its children too
  // Dies with flowpool (kill -9 included). The parent thread waits for this child in
  // run_exec until it is reaped, so the thread outlives it as PR_SET_PDEATHSIG requires.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != cs->parent) ::_exit(127);  // flowpool died before prctl
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(cs->out_w, STDOUT_FILENO) < 0 ||
      ::dup2(cs->err_w, STDERR_FILENO) < 0) {
    child_fail(cs, errno);
  }
  for (const int fd : {STDOUT_FILENO, STDERR_FILENO}) ::fcntl(fd, F_SETFD, 0);  // dup2 onto itself keeps CLOEXEC
  // No other descriptor of ours (joblog, input files, a metrics temp file) leaks into the child.
  // The status pipe stays open until execve closes it (close-on-exec).
  const auto keep = static_cast<unsigned>(cs->status_w);
  const bool closed = (keep == STDERR_FILENO + 1 || ::close_range(STDERR_FILENO + 1, keep - 1, 0) == 0) &&
                      ::close_range(keep + 1, ~0U, 0) == 0;
  if (!closed) {
    for (int fd = STDERR_FILENO + 1; fd < 65536; ++fd) {
      if (fd != cs->status_w) ::close(fd);
    }
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {  // flowpool's handlers must not run in the child
    struct sigaction cur {};
    if (::sigaction(sig, nullptr, &cur) != 0) continue;
    const bool handled = (cur.sa_flags & SA_SIGINFO) != 0 || (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN);
    const bool reset = sig == SIGINT || sig == SIGTERM || sig == SIGPIPE || sig == SIGHUP || sig == SIGQUIT;
    if (handled || reset) ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int err = ENOENT;
  bool denied = false;
  for (const auto& c : *cs->candidates) {  // as execvp: go on past a missing or unusable entry
    ::execve(c.c_str(), cs->argv, environ);
    err = errno;
    if (err == EACCES) {
      denied = true;
      continue;
    }
    if (err == ENOENT || err == ENOTDIR || err == ESTALE || err == ENODEV || err == ETIMEDOUT) continue;
    break;
  }
  child_fail(cs, denied && err != ENOEXEC && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

struct fd_pair {
  int r = -1, w = -1;
  fd_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      const int e = errno;
      throw std::runtime_error("exec: cannot create a pipe: " + errno_text(e));
    }
    r = fds[0];
    w = fds[1];
  }
  fd_pair(const fd_pair&) = delete;
  fd_pair& operator=(const fd_pair&) = delete;
  ~fd_pair() {
    close_r();
    close_w();
  }
  void close_r() {
    if (r >= 0) ::close(r);
    r = -1;
  }
  void close_w() {
    if (w >= 0) ::close(w);
    w = -1;
  }
};

// Starts the child; returns its pid, or -1 with `err` set (spawn or exec failed).
// `report` is the pipe the child writes its errno to (cs.status_w is its write end).
pid_t spawn_child(child_setup& cs, fd_pair& report, int& err) {
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);  // no handler of ours runs in the vforked child
  const pid_t pid = ::vfork();
  if (pid == 0) child_main(&cs);
  const int vfork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  report.close_w();  // now only the child holds it, until its execve or exit
  if (pid < 0) {
    err = vfork_errno;
    return -1;
  }
  int child_errno = 0;
  ssize_t n = 0;
  do {
    n = ::read(report.r, &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {  // no execve succeeded: the child has exited, reap it
    err = child_errno;
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return -1;
  }
  return pid;  // end of file: the execve closed the pipe
}

// Ticks since boot, in the unit of /proc/PID/stat's starttime.
unsigned long long boot_ticks_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  const auto hz = static_cast<unsigned long long>(::sysconf(_SC_CLK_TCK));
  return static_cast<unsigned long long>(ts.tv_sec) * hz +
         static_cast<unsigned long long>(ts.tv_nsec) / (1'000'000'000ULL / hz);
}

// The process groups of finished commands that still have members (`sleep 100 &`). On
// cancel they are killed. A group's number could, once the group is empty, be reused by
// an unrelated group: a group is only signalled while it holds a process that started
// no later than the moment it was recorded (a reused number's processes all start later).
class leftover_groups {
 public:
  leftover_groups() = default;
  leftover_groups(const leftover_groups&) = delete;
  leftover_groups& operator=(const leftover_groups&) = delete;
  ~leftover_groups() { callback_.reset(); }

  // Arms the kill-on-cancel once, on the stage's run-cancellation token.
  void watch(const std::stop_token& tok) {
    std::call_once(once_, [&] { callback_.emplace(tok, on_stop_fn{this}); });
  }

  // `pgid`'s leader has been reaped; records the group if it still has members.
  void add(pid_t pgid) {
    if (::kill(-pgid, 0) != 0) return;
    const std::lock_guard lk(mu_);
    const group g{pgid, boot_ticks_now()};
    if (stopped_) {
      kill_ours({g});
      return;
    }
    if (groups_.size() >= prune_at_) {
      std::erase_if(groups_, [](const group& x) { return ::kill(-x.pgid, 0) != 0 && errno == ESRCH; });
      prune_at_ = std::max<std::size_t>(64, 2 * groups_.size());
    }
    groups_.push_back(g);
  }

 private:
  struct group {
    pid_t pgid;
    unsigned long long recorded;  // boot ticks
  };
  struct on_stop_fn {
    leftover_groups* self;
    void operator()() const noexcept { self->on_stop(); }
  };

  void on_stop() noexcept {
    const std::lock_guard lk(mu_);
    stopped_ = true;
    kill_ours(groups_);
    groups_.clear();
  }

  // SIGKILL to each group that still holds a process started by its recording time.
  static void kill_ours(const std::vector<group>& gs) noexcept {
    if (gs.empty()) return;
    std::vector<bool> ours(gs.size(), false);
    if (DIR* d = ::opendir("/proc")) {
      while (const dirent* de = ::readdir(d)) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
        char path[300];
        std::snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        char buf[1024];
        const ssize_t n = ::read(fd, buf, sizeof buf - 1);
        ::close(fd);
        if (n <= 0) continue;
        buf[n] = '\0';
        const char* p = std::strrchr(buf, ')');  // after "pid (comm)": state ppid pgrp ...
        if (p == nullptr) continue;
        long pgrp = 0;
        unsigned long long start = 0;
        // fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime
        if (std::sscanf(p + 2, "%*c %*d %ld %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                        &pgrp, &start) != 2) {
          continue;
        }
        for (std::size_t k = 0; k < gs.size(); ++k) {
          if (gs[k].pgid == pgrp && start <= gs[k].recorded) ours[k] = true;
        }
      }
      ::closedir(d);
    }
    for (std::size_t k = 0; k < gs.size(); ++k) {
      if (ours[k]) ::kill(-gs[k].pgid, SIGKILL);
    }
  }

  std::mutex mu_;
  std::vector<group> groups_;
  std::size_t prune_at_ = 64;
  bool stopped_ = false;
  std::once_flag once_;
  std::optional<std::stop_callback<on_stop_fn>> callback_;
};

// Whole lines from a child's stderr, prefixed, written with one write() each.
void pass_stderr(std::string& pending, std::uint64_t id, bool flush_all) {
  static std::mutex mu;
  std::size_t start = 0;
  std::string out;
  for (;;) {
    const auto nl = pending.find('\n', start);
    if (nl == std::string::npos) break;
    out += "[item " + std::to_string(id) + "] ";
    out.append(pending, start, nl + 1 - start);
    start = nl + 1;
  }
  pending.erase(0, start);
  if (flush_all && !pending.empty()) {
    out += "[item " + std::to_string(id) + "] " + pending + "\n";
    pending.clear();
  }
  if (out.empty()) return;
  const std::lock_guard lk(mu);
  const char* p = out.data();
  std::size_t left = out.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

// Owns a spawned child: whatever happens, the destructor kills its group and reaps it.
class child_process {
 public:
  explicit child_process(pid_t pid) : pid_(pid) {}
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (reaped_) return;
    ::kill(-pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  // Non-blocking reap; true once the child has exited (status in `status`).
  bool try_reap(int& status) {
    if (reaped_) {
      status = status_;
      return true;
    }
    const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) reaped_ = true;
    status = status_;
    return reaped_;
  }
  // TERM to the group, then KILL after `grace`; returns once the child is reaped.
  void terminate(std::chrono::nanoseconds grace) {
    int st = 0;
    if (try_reap(st)) {
      ::kill(-pid_, SIGKILL);  // leftovers of the group, if any
      return;
    }
    ::kill(-pid_, SIGTERM);
    const auto until = clk::now() + grace;
    while (clk::now() < until) {
      if (try_reap(st)) {
        ::kill(-pid_, SIGKILL);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(-pid_, SIGKILL);
    while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }

 private:
  pid_t pid_;
  int status_ = 0;
  bool reaped_ = false;
};

std::string describe_status(const std::string& cmd, int status) {
  if (WIFEXITED(status)) {
    return "exec: " + quote_name(cmd) + " exited with status " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "exec: " + quote_name(cmd) + " was killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") +
           ")";
  }
  return "exec: " + quote_name(cmd) + " ended with wait status " + std::to_string(status);
}

void run_exec(const exec_config& cfg, leftover_groups& leftovers, item& it, job_context& job) {
  job.throw_if_stop_requested();
  leftovers.watch(job.stop_token());
  const std::vector<std::string> args = build_argv(cfg, it);
  std::vector<char*> cargv;
  cargv.reserve(args.size() + 1);
  for (const auto& a : args) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const std::vector<std::string> candidates = exec_candidates(args[0]);

  fd_pair out, err, report;
  child_setup cs{&candidates, cargv.data(), out.w, err.w, report.w, ::getpid()};
  int spawn_err = 0;
  const pid_t pid = spawn_child(cs, report, spawn_err);
  if (pid < 0) throw permanent_error("exec: cannot run " + quote_name(args[0]) + ": " + errno_text(spawn_err));
  child_process child(pid);
  out.close_w();
  err.close_w();
  ::fcntl(out.r, F_SETFL, O_NONBLOCK);
  ::fcntl(err.r, F_SETFL, O_NONBLOCK);

  std::string value, pending_err;
  char buf[65536];
  bool out_open = true, err_open = true;
  int status = 0;
  bool exited = false;
  auto drain = [&](int fd, bool is_out) {  // false at EOF
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        if (is_out) {
          value.append(buf, static_cast<std::size_t>(n));
        } else {
          pending_err.append(buf, static_cast<std::size_t>(n));
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      return false;  // EOF or error
    }
  };
  int idle_us = 1;
  while (out_open || err_open) {
    if (job.stop_requested()) {
      child.terminate(cfg.grace);
      pass_stderr(pending_err, it.id, true);
      job.throw_if_stop_requested();
    }
    pollfd fds[2];
    nfds_t n = 0;
    if (out_open) fds[n++] = pollfd{out.r, POLLIN, 0};
    if (err_open) fds[n++] = pollfd{err.r, POLLIN, 0};
    const int pr = ::poll(fds, n, exited ? 0 : 20);
    if (pr < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      const bool is_out = fds[i].fd == out.r;
      if (!drain(fds[i].fd, is_out)) {
        if (is_out) {
          out_open = false;
        } else {
          err_open = false;
        }
      }
    }
    if (!pending_err.empty()) pass_stderr(pending_err, it.id, false);
    if (exited) break;  // drained once after the exit: a grandchild may keep the pipes open
    if (pr == 0) exited = child.try_reap(status);
  }
  // Both pipes are closed (or the child exited): wait for the exit, still honouring stop.
  while (!exited) {
    exited = child.try_reap(status);
    if (exited) break;
    if (job.stop_requested()) {
      child.terminate(cfg.grace);
      pass_stderr(pending_err, it.id, true);
      job.throw_if_stop_requested();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(idle_us));
    idle_us = std::min(idle_us * 2, 10'000);  // 1 us, 2 us, ... up to 10 ms between checks
  }
  pass_stderr(pending_err, it.id, true);
  leftovers.add(pid);  // `cmd &` inside the command: killed if the run is cancelled
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) throw std::runtime_error(describe_status(args[0], status));
  it.value = std::move(value);
}

}  // namespace

void register_exec_kernel(registry& r) {
  r.add_kernel(
      {"exec",
       "runs a command per item with no shell (argv template: {input} {id} {value}); value = its stdout; "
       "stderr is passed through with an \"[item ID] \" prefix; a non-zero exit fails the attempt",
       {with_check(
            make_param("argv", param_type::string_list, nullptr,
                       "the command and its arguments, e.g. [\"gzip\", \"-c\", \"{input}\"]; with no placeholder "
                       "anywhere, the input is appended as the last argument"),
            check_exec_argv),
        make_param("shell", param_type::boolean, false,
                   "run argv[0] (the only element) as a /bin/sh script; the input is \"$1\" and the id \"$2\""),
        make_param("grace", param_type::duration, "2s",
                   "on cancel or job timeout: wait this long after SIGTERM before SIGKILL")},
       [](const nlohmann::json& p) -> kernel_fn {
         exec_config cfg;
         for (const auto& a : p["argv"]) cfg.argv.push_back(a.is_string() ? a.get<std::string>() : a.dump());
         cfg.shell = p["shell"].get<bool>();
         if (cfg.argv.empty() || cfg.argv[0].empty()) {
           throw_error(errc::invalid_argument, "exec: argv must name a command");
         }
         for (std::size_t k = 0; k < cfg.argv.size(); ++k) {
           if (cfg.argv[k].find('\0') != std::string::npos) {
             throw_error(errc::invalid_argument, "exec: argv[" + std::to_string(k) +
                                                     "] holds a NUL byte; a command argument cannot contain NUL");
           }
         }
         if (cfg.shell && cfg.argv.size() != 1) {
           throw_error(errc::invalid_argument,
                       "exec: with shell: true, argv must be one string (the script; the input is \"$1\")");
         }
         bool any = false;
         for (const auto& a : cfg.argv) any = any || has_placeholder(a);
         cfg.append_input = !cfg.shell && !any;
         const auto& g = p["grace"];
         if (g.is_string()) {
           if (auto d = parse_duration(g.get<std::string>())) cfg.grace = *d;
         } else if (g.is_number()) {
           cfg.grace = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(g.get<double>()));
         }
         auto leftovers = std::make_shared<leftover_groups>();
         return [cfg, leftovers](item& it, job_context& job) { run_exec(cfg, *leftovers, it, job); };
       }});
}

}  // namespace flowpool::detail
