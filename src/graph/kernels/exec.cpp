// The `exec` kernel: runs a command per item, like `xargs -P` and GNU parallel.
//
// - The argv template is expanded per item ({input}, {id}, {value}) and executed
//   directly with posix_spawnp: no shell sees the input. With `shell: true` the one
//   template string is a /bin/sh script and the input is passed as "$1" (never
//   spliced into the script text).
// - The child's stdout becomes the item's value; its stderr is copied to ours line by
//   line, each line prefixed with "[item ID] ".
// - A non-zero exit (or death by a signal) fails the attempt (retryable).
// - The child runs in its own process group. When the run is cancelled or the
//   attempt's deadline passes, the group gets SIGTERM, then SIGKILL after `grace`.
//   Every child is reaped before the kernel returns or throws: no zombies.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

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

std::vector<std::string> build_argv(const exec_config& cfg, const item& it) {
  std::vector<std::string> args;
  if (cfg.shell) {
    args = {"/bin/sh", "-c", cfg.argv[0], "flowpool", it.input, std::to_string(it.id)};
    return args;
  }
  args.reserve(cfg.argv.size() + 1);
  for (const auto& a : cfg.argv) args.push_back(expand(a, it));
  if (cfg.append_input) args.push_back(it.input);
  return args;
}

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

std::string describe_status(const std::string& cmd, int status) {
  if (WIFEXITED(status)) return "exec: \"" + cmd + "\" exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "exec: \"" + cmd + "\" was killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
  }
  return "exec: \"" + cmd + "\" ended with wait status " + std::to_string(status);
}

void run_exec(const exec_config& cfg, item& it, job_context& job) {
  job.throw_if_stop_requested();
  const std::vector<std::string> args = build_argv(cfg, it);
  std::vector<char*> cargv;
  cargv.reserve(args.size() + 1);
  for (const auto& a : args) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  fd_pair out, err;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out.w, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err.w, STDERR_FILENO);
  // No other descriptor of ours (joblog, input files, a metrics temp file) leaks into the child.
  posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (const int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);  // its own group: TERM/KILL reach its children too
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw permanent_error("exec: cannot run \"" + args[0] + "\": " + errno_text(rc));
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
         return [cfg](item& it, job_context& job) { run_exec(cfg, it, job); };
       }});
}

}  // namespace flowpool::detail
