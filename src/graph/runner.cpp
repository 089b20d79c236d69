// Runs a validated graph spec: a source, a chain of engines (one per stage), a sink.
//
// Stage k's serial node hands each result to stage k+1 without blocking
// (engine::offer): when stage k+1's bounded queue is full, the result waits in
// stage k, whose workers stop pulling until stage k+1 wakes it. So the bounded
// queue between stages is real backpressure, and no TBB thread ever waits inside
// a task for a downstream queue. The last stage's serial node is the sink. Each
// item ends in exactly one terminal state: failed or cancelled at some stage, or
// succeeded at the last stage. The joblog records that state per item id (its
// source position), which is what --resume keys on.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "../util/paths.hpp"
#include "../util/quote.hpp"
#include "flowpool/graph.hpp"
#include "flowpool/pool.hpp"

namespace flowpool {
namespace {

using clk = std::chrono::steady_clock;

[[noreturn]] void throw_errno(errc code, const std::string& what, int err) {
  detail::throw_error(code, what + ": " + std::strerror(err));
}

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(errc::io, what, errno);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

[[noreturn]] void throw_not_resumable(const std::string& path) {
  detail::throw_error(errc::invalid_argument, "--resume: --joblog " + detail::quote_name(path) +
                                                  " is not a regular file: a run can only be resumed from a joblog "
                                                  "file an earlier run wrote");
}

// The joblog: one line per finished item, written with one write() each and never
// buffered. A run without --resume starts it afresh (a regular file is truncated,
// as GNU parallel does). A stream (a non-regular file such as /dev/null or a FIFO, or
// any path under /dev or /proc, such as /dev/stderr even when it is redirected to a
// file: detail::is_stream_path) is only appended to: it cannot be resumed from, and
// it gets no FILE.state.
// Serialized by a mutex: several stages' hooks may write at once.
class joblog_writer {
 public:
  joblog_writer(const std::string& path, bool resume) : path_(path) {
    if (path.empty()) return;
    struct stat st {};
    const bool exists = ::stat(path.c_str(), &st) == 0;
    const bool stream = detail::is_stream_path(path);
    if (resume && exists && stream) throw_not_resumable(path);
    const bool truncate = !resume && !stream;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0666);
    if (fd_ < 0) throw_errno(errc::io, "--joblog: cannot open " + detail::quote_name(path), errno);
    if (::fstat(fd_, &st) != 0) throw_errno(errc::io, "--joblog: cannot stat " + detail::quote_name(path), errno);
    regular_ = S_ISREG(st.st_mode) && !stream;
    if (!regular_ || st.st_size == 0) write_line("# id\tstatus\tattempts\tduration_ms\tstage\n");
  }
  joblog_writer(const joblog_writer&) = delete;
  joblog_writer& operator=(const joblog_writer&) = delete;
  ~joblog_writer() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] bool enabled() const { return fd_ >= 0; }
  // Whether FILE.state can sit next to it (a regular file).
  [[nodiscard]] bool regular() const { return fd_ >= 0 && regular_; }

  void write(std::uint64_t id, job_status s, std::uint32_t attempts, std::chrono::nanoseconds d,
             const std::string& stage) {
    if (fd_ < 0) return;
    std::ostringstream line;
    line << id << '\t' << to_string(s) << '\t' << attempts << '\t'
         << std::chrono::duration<double, std::milli>(d).count() << '\t' << stage << '\n';
    write_line(line.str());
  }

  // Makes every line written so far durable (before a checkpoint that relies on them).
  void sync() {
    if (!regular()) return;
    const std::lock_guard lk(mu_);
    if (::fsync(fd_) != 0 && errno != EINVAL)
      throw_errno(errc::io, "--joblog: cannot sync " + detail::quote_name(path_), errno);
  }

 private:
  void write_line(const std::string& text) {
    const std::lock_guard lk(mu_);
    write_all(fd_, text, "--joblog: cannot write " + detail::quote_name(path_));
  }

  std::mutex mu_;
  std::string path_;
  int fd_ = -1;
  bool regular_ = false;
};

// Sorted ids the joblog records as succeeded (for --resume).
std::vector<std::uint64_t> succeeded_in_joblog(const std::string& path) {
  std::vector<std::uint64_t> ids;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::uint64_t id = 0;
    std::string status;
    if (fields >> id >> status && status == "succeeded") ids.push_back(id);
  }
  if (in.bad()) detail::throw_error(errc::io, "--resume: cannot read --joblog " + detail::quote_name(path));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

bool has_id(const std::vector<std::uint64_t>& sorted, std::uint64_t id) {
  return std::binary_search(sorted.begin(), sorted.end(), id);
}

// A set of item ids as sorted, disjoint, non-adjacent closed intervals: what a
// sink's saved state covers. Items mostly finish in order, so it stays small.
class id_ranges {
 public:
  void add(std::uint64_t id) {
    auto next = r_.upper_bound(id);  // the first interval starting after id
    if (next != r_.begin()) {
      const auto prev = std::prev(next);
      if (prev->second >= id) return;
      if (prev->second + 1 == id) {
        prev->second = id;
        if (next != r_.end() && next->first == id + 1) {
          prev->second = next->second;
          r_.erase(next);
        }
        return;
      }
    }
    if (next != r_.end() && next->first == id + 1) {
      const auto last = next->second;
      r_.erase(next);
      r_.emplace(id, last);
      return;
    }
    r_.emplace(id, id);
  }
  // Adds [first, last], which must lie after every interval added so far.
  void add_interval(std::uint64_t first, std::uint64_t last) {
    if (!r_.empty() && std::prev(r_.end())->second + 1 >= first) {
      std::prev(r_.end())->second = std::max(std::prev(r_.end())->second, last);
    } else {
      r_.emplace(first, last);
    }
  }
  [[nodiscard]] bool contains(std::uint64_t id) const {
    auto next = r_.upper_bound(id);
    return next != r_.begin() && std::prev(next)->second >= id;
  }
  [[nodiscard]] std::uint64_t size() const {
    std::uint64_t n = 0;
    for (const auto& [a, b] : r_) n += b - a + 1;
    return n;
  }
  [[nodiscard]] const std::map<std::uint64_t, std::uint64_t>& intervals() const { return r_; }
  [[nodiscard]] nlohmann::json to_json() const {
    auto j = nlohmann::json::array();
    for (const auto& [a, b] : r_) j.push_back({a, b});
    return j;
  }
  // Throws on anything but sorted, disjoint [first, last] pairs of ids >= 1.
  static id_ranges from_json(const nlohmann::json& j) {
    id_ranges r;
    std::uint64_t after = 0;
    for (const auto& p : j) {
      const auto a = p.at(0).get<std::uint64_t>();
      const auto b = p.at(1).get<std::uint64_t>();
      if (p.size() != 2 || a == 0 || a > b || (!r.r_.empty() && a <= after + 1)) {
        throw std::invalid_argument("\"covers\" is not sorted, disjoint [first, last] pairs");
      }
      r.r_.emplace(a, b);
      after = b;
    }
    return r;
  }

 private:
  std::map<std::uint64_t, std::uint64_t> r_;
};

std::string state_path(const std::string& joblog) {
  return joblog + ".state";
}

constexpr const char* kStateFormat = "flowpool-resume-state";

// Writes FILE.state so that it is whole or absent, never empty or partial, even
// after a crash or a power loss: a temporary file, fsync, rename, fsync of the directory.
void write_state_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const std::string what = "--joblog: cannot write the resume state " + detail::quote_name(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw_errno(errc::io, what, errno);
  try {
    write_all(fd, text, what);
    if (::fsync(fd) != 0) throw_errno(errc::io, what, errno);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw_errno(errc::io, what, e);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw_errno(errc::io, what, e);
  }
  const auto dir = std::filesystem::path(path).parent_path();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);  // best effort: the rename itself is already atomic
    ::close(dfd);
  }
}

// One stage. Its engine reports items under their own ids (set_key): an item's id
// travels with it from the source to the sink, so no stage maps ids.
struct stage_runtime {
  std::string name;
  std::unique_ptr<detail::engine<item, item>> p;
  report rep;
};

// The most items the pump reads ahead of stage 0 (source::read_ahead is clamped to it).
constexpr std::size_t kMaxReadAhead = 64;

std::uint64_t item_key(const item& it) noexcept {
  return it.id;
}

// A stage's worker: runs the kernel on the item in place and moves it on. Only an
// attempt that may be retried runs on a copy, so the retry gets the item as it came.
detail::engine<item, item>::worker_fn stage_worker(kernel_fn kernel, std::uint32_t max_attempts) {
  return [kernel = std::move(kernel), max_attempts](item& in, job_context& ctx) {
    if (ctx.attempt() < max_attempts) {
      item it = in;
      it.worker = ctx.worker();
      kernel(it, ctx);
      return it;
    }
    in.worker = ctx.worker();
    kernel(in, ctx);
    return std::move(in);
  };
}

}  // namespace

nlohmann::json graph_report::to_json() const {
  nlohmann::json j;
  j["graph"] = graph;
  j["status"] = status;
  j["submitted"] = submitted;
  j["succeeded"] = succeeded;
  j["failed"] = failed;
  j["cancelled"] = cancelled;
  j["retried"] = retried;
  j["skipped"] = skipped;
  j["wall_ms"] = wall_ms;
  j["stages"] = nlohmann::json::array();
  for (const auto& s : stages) {
    j["stages"].push_back({{"name", s.name},
                           {"workers", s.workers},
                           {"max_queue_depth", s.max_queue_depth},
                           {"succeeded", s.succeeded},
                           {"failed", s.failed},
                           {"cancelled", s.cancelled}});
  }
  for (std::size_t k = 0; k < metrics.size() && k < j["stages"].size(); ++k) {
    const auto& m = metrics[k].metrics;
    j["stages"][k]["metrics"] = flowpool::to_json(m);
    j["stages"][k]["saturation"] = std::round(m.saturation() * 1000) / 1000;  // shown by `flowpool dot`
    j["stages"][k]["p99_ms"] = std::round(static_cast<double>(m.run_time.percentile(0.99).count()) / 1e3) / 1e3;
  }
  if (!metrics.empty()) j["metrics"] = flowpool::to_json(combine(metrics));
  j["errors"] = nlohmann::json::array();
  for (const auto& e : errors) {
    j["errors"].push_back(
        {{"job", e.job}, {"attempts", e.attempts}, {"kind", std::string(to_string(e.kind))}, {"message", e.message}});
  }
  if (cause) {
    j["cause"] = {{"job", cause->job},
                  {"attempts", cause->attempts},
                  {"kind", std::string(to_string(cause->kind))},
                  {"message", cause->message}};
  }
  if (signal != 0) j["signal"] = signal;
  return j;
}

namespace {

// How a run ended, before the per-item outcomes are looked at.
enum class run_end : std::uint8_t { none, interrupted, timed_out, failed };

// The sink's resume bookkeeping: which items a saved state covers (--resume), which
// of those need not run again, and the checkpoints of FILE.state during the run.
// A stream sink's output is written before its item is logged as succeeded, so on
// --resume every such item is skipped. A sink with state skips only the items its
// saved state covers (FILE.state records which), and those must all be logged as
// succeeded: every other item runs again, whatever the joblog says.
class resume_book {
 public:
  resume_book(const graph_spec& spec, const run_controls& ctl, sink& snk)
      : spec_(spec), ctl_(ctl), snk_(snk), stateful_(!snk.save_state().is_null()) {
    if (ctl.resume) load();
  }

  // Whether the item with this id is skipped (it succeeded in the run resumed).
  [[nodiscard]] bool skip(std::uint64_t id) const {
    if (!ctl_.resume) return false;
    return stateful_ ? skippable_.contains(id) : has_id(logged_ok_, id);
  }
  // How many items skip() will say yes to (for the progress bar).
  [[nodiscard]] std::uint64_t skip_count() const {
    if (!ctl_.resume) return 0;
    return stateful_ ? skippable_.size() : logged_ok_.size();
  }
  [[nodiscard]] bool stateful() const { return stateful_; }

  // Once the joblog is open: whether FILE.state is kept during this run.
  void start(const joblog_writer& joblog) {
    joblog_ = &joblog;
    keep_ = stateful_ && joblog.regular();
    std::error_code ignored;
    if (joblog.regular() && !ctl_.resume) std::filesystem::remove(state_path(ctl_.joblog), ignored);  // a stale one
    next_checkpoint_ = clk::now() + ctl_.checkpoint_interval;
  }
  [[nodiscard]] bool keeps_state() const { return keep_; }

  // The sink consumed this item: the state covers it; checkpoints when one is due.
  // Serial (the last stage's hook). A throw fails the run, naming the cause.
  void consumed(std::uint64_t id, joblog_writer& joblog) {
    if (!snk_.needs_rerun(id)) covered_.add(id);
    if (const auto now = clk::now(); now >= next_checkpoint_) {
      save(joblog);
      // A large state (topk's table) is written less often: checkpoints take at
      // most about a tenth of the sink's time.
      const auto took = clk::now() - now;
      next_checkpoint_ = clk::now() + std::max<clk::duration>(ctl_.checkpoint_interval, took * 10);
    }
  }

  // Saves the sink's state and what it covers, after making both the sink's output
  // and the joblog lines it relies on durable: FILE.state never covers an item the
  // joblog on disk does not record as succeeded.
  void save(joblog_writer& joblog) {
    snk_.sync();
    joblog.sync();
    nlohmann::json doc;
    doc[kStateFormat] = 1;
    doc["sink"] = spec_.sink_type;
    doc["covers"] = covered_.to_json();
    doc["state"] = snk_.save_state();
    std::string text;
    try {
      text = doc.dump();
    } catch (const nlohmann::json::exception& e) {
      detail::throw_error(errc::internal,
                          "sink " + detail::quote_name(spec_.sink_type) + ": its state is not valid JSON: " + e.what());
    }
    write_state_file(state_path(ctl_.joblog), text + "\n");
  }

  // The run succeeded and its output is committed: the state is not needed again.
  void drop() const {
    std::error_code ignored;
    if (joblog_ != nullptr && joblog_->regular()) std::filesystem::remove(state_path(ctl_.joblog), ignored);
  }

 private:
  void load() {
    if (ctl_.joblog.empty()) detail::throw_error(errc::invalid_argument, "--resume needs --joblog FILE");
    struct stat st {};
    if (::stat(ctl_.joblog.c_str(), &st) == 0 && detail::is_stream_path(ctl_.joblog)) throw_not_resumable(ctl_.joblog);
    logged_ok_ = succeeded_in_joblog(ctl_.joblog);
    const std::string sp = state_path(ctl_.joblog);
    std::ifstream state(sp, std::ios::binary);
    if (state && stateful_) load_state(state, sp);
    // Decided before the run: the pump must not ask the sink while it consumes.
    if (stateful_) {
      for (const auto& [a, b] : covered_.intervals()) {
        std::optional<std::uint64_t> from;  // the start of the current run of skippable ids
        for (std::uint64_t id = a;; ++id) {
          const bool keep = !snk_.needs_rerun(id);
          if (keep && !from) from = id;
          if (from && (!keep || id == b)) {
            skippable_.add_interval(*from, keep ? id : id - 1);
            from.reset();
          }
          if (id == b) break;
        }
      }
      covered_ = skippable_;
    }
  }

  void load_state(std::ifstream& state, const std::string& sp) {
    const std::string what = "--resume: cannot use the saved sink state " + detail::quote_name(sp) + ": ";
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(state);
      if (!doc.is_object() || doc.value(kStateFormat, 0) != 1) {
        throw std::invalid_argument("not a flowpool resume state");
      }
      const auto saved_sink = doc.at("sink").get<std::string>();
      if (saved_sink != spec_.sink_type) {
        throw std::invalid_argument("it is the state of a " + detail::quote_name(saved_sink) +
                                    " sink, this run's sink is " + detail::quote_name(spec_.sink_type));
      }
      covered_ = id_ranges::from_json(doc.at("covers"));
    } catch (const std::exception& e) {
      detail::throw_error(errc::io, what + e.what());
    }
    for (const auto& [a, b] : covered_.intervals()) {
      const auto lo = std::lower_bound(logged_ok_.begin(), logged_ok_.end(), a);
      const auto hi = std::upper_bound(lo, logged_ok_.end(), b);
      if (static_cast<std::uint64_t>(hi - lo) != b - a + 1) {
        std::uint64_t missing = a;
        for (auto i = lo; i != hi && *i == missing; ++i) ++missing;
        detail::throw_error(errc::io, what + "it holds item " + std::to_string(missing) + ", which the joblog \"" +
                                          ctl_.joblog +
                                          "\" does not record as succeeded: they are not of the same run (remove "
                                          "both to start over)");
      }
    }
    try {
      snk_.load_state(doc.at("state"));
    } catch (const std::exception& e) {
      detail::throw_error(errc::io, what + e.what());
    }
  }

  const graph_spec& spec_;
  const run_controls& ctl_;
  sink& snk_;
  const bool stateful_;
  std::vector<std::uint64_t> logged_ok_;  // sorted
  id_ranges covered_;                     // the items whose result the sink's state holds
  id_ranges skippable_;
  const joblog_writer* joblog_ = nullptr;
  bool keep_ = false;
  clk::time_point next_checkpoint_{};
};

// One run of a graph: the source, one engine per stage (all on one arena), the
// sink, the joblog and the watcher thread. run() drives it once.
class graph_run {
 public:
  graph_run(const graph_spec& spec, const run_controls& ctl, const registry& reg)
      : spec_(spec), ctl_(ctl), t0_(clk::now()) {
    const auto* src_info = reg.find_source(spec.source_type);
    const auto* sink_info_p = reg.find_sink(spec.sink_type);
    if (src_info == nullptr || sink_info_p == nullptr) {
      detail::throw_error(errc::invalid_spec, "run_graph: the spec names an unregistered source or sink");
    }
    std::ostream& out = ctl.out != nullptr ? *ctl.out : std::cout;
    src_ = src_info->make(spec.source_params);
    sink_env env{&out, spec.ordered, {}};
    if (spec.source_params.is_object() && spec.source_params.contains("path") &&
        spec.source_params["path"].is_string()) {
      const auto in = spec.source_params["path"].get<std::string>();
      env.inputs.push_back(in == "-" ? "/dev/stdin" : in);
    }
    snk_ = sink_info_p->make(spec.sink_params, env);
    for (const auto& st : spec.stages) {
      const auto* k = reg.find_kernel(st.kernel);
      if (k == nullptr)
        detail::throw_error(errc::invalid_spec, "run_graph: unregistered kernel " + detail::quote_name(st.kernel));
      kernels_.push_back(k->make(st.params));
    }
    resume_.emplace(spec, ctl, *snk_);
    joblog_.emplace(ctl.joblog, ctl.resume);
    resume_->start(*joblog_);
    threshold_ = spec.on_error == error_policy::fail_fast ? 1 : spec.max_failures;
  }

  graph_report run() {
    int all_workers = 0;
    for (const auto& st : spec_.stages) all_workers += st.workers;
    graph_.emplace(all_workers);  // one flow graph for the whole run, in one arena
    build_stages();
    link_stages();
    const chain_guard guard{stages_};
    std::thread watcher([this] { watch(); });
    pump();
    // Drain stage by stage: once stage k is waited, every result it had was handed to k+1.
    // The first wait is the graph's one wait_for_all() that matters: it returns when no
    // stage has work left, since none can get more once stage 0's input is closed.
    for (auto& s : stages_) {
      s->p->close();
      s->rep = s->p->wait();
    }
    {
      const std::lock_guard lk(mu_);
      over_ = true;
    }
    cv_.notify_all();
    watcher.join();
    graph_report r = tally();
    commit(r);
    r.wall_ms = std::chrono::duration<double, std::milli>(clk::now() - t0_).count();
    return r;
  }

 private:
  // If anything throws before every stage was waited: cancel them all, then wait
  // first to last, so no stage is destroyed while another may still hand it results
  // or wake it. After a normal end each call just throws, and is ignored.
  struct chain_guard {
    std::vector<std::unique_ptr<stage_runtime>>& stages;
    ~chain_guard() {
      for (auto& s : stages) {
        try {
          if (s->p) s->p->cancel();
        } catch (...) {  // NOLINT(bugprone-empty-catch): already finished
        }
      }
      for (auto& s : stages) {
        try {
          if (s->p) (void)s->p->wait();
        } catch (...) {  // NOLINT(bugprone-empty-catch): already waited
        }
      }
    }
  };

  // Ends the run early (the first reason wins) and cancels every stage.
  void cancel_all(run_end why, std::optional<job_error> c) {
    {
      const std::lock_guard lk(mu_);
      if (ended_ != run_end::none) return;
      ended_ = why;
      cause_ = std::move(c);
    }
    for (auto& s : stages_) {
      try {
        if (s->p) s->p->cancel();
      } catch (const error&) {  // that stage already finished
      }
    }
  }

  void note_signal(int sig) {
    {
      const std::lock_guard lk(mu_);
      if (signal_ == 0) signal_ = sig;
    }
    cancel_all(run_end::interrupted, std::nullopt);
  }

  pool_options stage_options(const stage_spec& st, std::size_t k) {
    const bool last = k + 1 == spec_.stages.size();
    pool_options o;
    o.workers = st.workers;
    o.capacity = spec_.capacity;
    o.ordered = spec_.ordered;
    o.retry.max_attempts = (st.retries ? *st.retries : spec_.retries) + 1;
    o.retry.backoff_base = spec_.backoff;
    o.retry.backoff_cap = std::max<std::chrono::nanoseconds>(spec_.backoff * 64, std::chrono::seconds(1));
    o.retry.jitter = 0.2;
    o.job_timeout = st.job_timeout ? *st.job_timeout : spec_.job_timeout;
    // Each engine applies the failure policy at the worker (immediate) and reports
    // it (set_on_failure); the hook applies it across stages.
    o.on_error = spec_.on_error;
    o.max_failures = spec_.max_failures;
    o.on_job_done = [this, k, last](const job_record& rec) { job_done(k, last, rec); };
    return o;
  }

  // on_job_done of stage k (its serial node). rec.job is the item's own id (set_key).
  void job_done(std::size_t k, bool last, const job_record& rec) {
    if (rec.status == job_status::succeeded && !last) return;  // handed on to the next stage
    // The last stage's hook runs in its serial node right after the sink consumed the
    // item: its output is written (or folded) when it is logged.
    joblog_->write(rec.job, rec.status, rec.attempts, rec.duration, stages_[k]->name);
    if (last && rec.status == job_status::succeeded && resume_->keeps_state()) resume_->consumed(rec.job, *joblog_);
    done_.fetch_add(1, std::memory_order_relaxed);
    if (rec.status != job_status::failed) return;
    failed_.fetch_add(1, std::memory_order_relaxed);
    if (threshold_ > 0 && final_failures_.fetch_add(1) + 1 >= threshold_) {
      cancel_all(run_end::failed, job_error{rec.job, rec.attempts, error_kind::exception,
                                            "stage " + stages_[k]->name + " failed item " + std::to_string(rec.job)});
    }
  }

  // The sink, as the last stage's aggregator.
  void consume(item&& it) {
    try {
      snk_->consume(std::move(it));
    } catch (...) {
      // A write that failed because a signal came (SIGPIPE: the reader of stdout
      // went away) ends the run as interrupted by that signal, not as failed.
      const int sig = ctl_.interrupt != nullptr ? ctl_.interrupt->load() : 0;
      if (sig != 0) note_signal(sig);
      throw;
    }
  }

  // Builds the engines first to last, before any item is submitted.
  void build_stages() {
    const std::size_t n = spec_.stages.size();
    for (std::size_t k = 0; k < n; ++k) {
      const auto& st = spec_.stages[k];
      auto rt = std::make_unique<stage_runtime>();
      rt->name = st.name;
      pool_options o = stage_options(st, k);
      metrics_options mo;
      mo.enabled = ctl_.metrics;
      mo.trace_limit = ctl_.trace_limit == 0 ? 0 : std::max<std::size_t>(1, ctl_.trace_limit / n);  // split evenly
      auto work = stage_worker(kernels_[k], o.retry.max_attempts);
      // A stage before the last never calls its aggregator: set_forward hands its results on.
      detail::engine<item, item>::aggregator_fn agg = [](item&&) {};
      if (k + 1 == n) agg = [this](item&& it) { consume(std::move(it)); };
      rt->p = std::make_unique<detail::engine<item, item>>(std::move(o), std::move(work), std::move(agg), mo, &*graph_);
      rt->p->set_key(&item_key);
      rt->p->set_hook_timing(joblog_->enabled());  // the hook's durations go to the joblog only
      // A stage that stops itself (its failure policy, a failing sink) stops the run.
      rt->p->set_on_failure([this] { cancel_all(run_end::failed, std::nullopt); });
      stages_.push_back(std::move(rt));
    }
  }

  // Stage k hands on to stage k+1: offer() when called from stage k's serial node
  // (never blocks: false when full, and stage k+1 then wakes stage k), a blocking
  // push only from stage k's wait() on this thread (after a cancel).
  void link_stages() {
    for (std::size_t k = 0; k + 1 < stages_.size(); ++k) {
      stage_runtime& next = *stages_[k + 1];
      stages_[k]->p->set_forward([this, &next](item& it, const std::function<void()>* wake) {
        using push_result = detail::engine<item, item>::push_result;
        const std::uint64_t id = it.id;
        const push_result r = wake != nullptr
                                  ? next.p->offer(it, *wake)
                                  : next.p->push(std::move(it), nullptr, detail::engine<item, item>::when_full::block);
        if (r == push_result::accepted) return true;
        if (r == push_result::full) return false;  // stays in this stage until the wake-up
        // The run is cancelled: this item ends here.
        dropped_between_.fetch_add(1);
        done_.fetch_add(1);
        joblog_->write(id, job_status::cancelled, 0, {}, next.name);
        return true;
      });
    }
  }

  // The watcher thread: interrupts, the run deadline, progress and live metrics.
  void watch() {
    const auto deadline = spec_.timeout.count() > 0 ? t0_ + spec_.timeout : clk::time_point::max();
    const auto total = src_->size_hint();
    const auto expected =
        total ? std::optional<std::uint64_t>(*total - std::min<std::uint64_t>(*total, resume_->skip_count()))
              : std::nullopt;
    auto next_progress = clk::now();
    auto next_metrics = clk::now() + ctl_.metrics_interval;
    std::unique_lock lk(mu_);
    while (!over_) {
      cv_.wait_for(lk, std::chrono::milliseconds(20));
      if (over_) break;
      const int sig = ctl_.interrupt != nullptr ? ctl_.interrupt->load() : 0;
      const auto now = clk::now();
      lk.unlock();
      if (sig != 0) {
        note_signal(sig);
      } else if (now >= deadline) {
        cancel_all(run_end::timed_out, std::nullopt);
      }
      if (ctl_.on_progress && now >= next_progress) {
        int busy = 0, workers = 0;
        for (auto& s : stages_) {
          busy += s->p->snap().busy_workers;
          workers += s->p->options().workers;
        }
        ctl_.on_progress(done_.load(), expected, failed_.load(), busy, workers);
        next_progress = now + std::chrono::milliseconds(100);
      }
      if (ctl_.on_metrics && ctl_.metrics && now >= next_metrics) {
        std::vector<stage_metrics> live;
        for (auto& s : stages_) live.push_back({s->name, s->p->metrics()});
        ctl_.on_metrics(live);
        next_metrics = now + ctl_.metrics_interval;
      }
      lk.lock();
    }
  }

  // Pumps the source into stage 0 on this thread, handing on up to read_ahead()
  // items per lock of stage 0's queue (a source that may wait on outside input
  // reads ahead by 1: each item goes on as soon as it is read).
  void pump() {
    std::vector<item> ahead;
    const std::size_t read_ahead = std::clamp<std::size_t>(src_->read_ahead(), 1, kMaxReadAhead);
    ahead.reserve(read_ahead);
    bool open = true;  // false once stage 0 refused an item (the run is cancelled)
    const auto hand_on = [&] {
      const std::size_t n = stages_[0]->p->push_batch(ahead);
      submitted_ += n;
      open = n == ahead.size();
      ahead.clear();
    };
    try {
      while (open) {
        auto it = src_->next();
        if (!it) break;
        if (resume_->skip(it->id)) {
          ++skipped_;
          continue;
        }
        ahead.push_back(std::move(*it));
        if (ahead.size() >= read_ahead) hand_on();
      }
      if (open && !ahead.empty()) hand_on();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      try {
        if (open && !ahead.empty()) hand_on();  // what was read before the failure is submitted (then cancelled)
      } catch (const std::exception&) {         // NOLINT(bugprone-empty-catch): the source's failure is the cause
      }
      cancel_all(run_end::failed, job_error{0, 0, error_kind::exception, "source: " + what});
    }
  }

  // The report, from every stage's report, once all are waited.
  graph_report tally() {
    graph_report r;
    std::optional<job_error> stage_cause;
    r.graph = spec_.name;
    r.submitted = submitted_;
    r.skipped = skipped_;
    for (std::size_t k = 0; k < stages_.size(); ++k) {
      auto& s = *stages_[k];
      stage_report sr;
      sr.name = s.name;
      sr.workers = spec_.stages[k].workers;
      sr.max_queue_depth = s.rep.max_queue_depth;
      sr.succeeded = s.rep.succeeded;
      sr.failed = s.rep.failed;
      sr.cancelled = s.rep.cancelled;
      r.stages.push_back(sr);
      if (ctl_.metrics) r.metrics.push_back({s.name, s.p->metrics()});
      if (ctl_.trace_limit > 0) r.traces.push_back({s.name, s.p->trace()});
      r.failed += s.rep.failed;
      r.cancelled += s.rep.cancelled;
      r.retried += s.rep.retried;
      for (auto e : s.rep.errors) {  // e.job is the item's id (set_key)
        e.message = s.name + ": " + e.message;
        r.errors.push_back(std::move(e));
      }
      if (s.rep.cause && !stage_cause) {  // the first stage that stopped itself says why, with its message
        auto c = *s.rep.cause;
        c.message = s.name + ": " + c.message;
        stage_cause = c;
      }
    }
    if (stage_cause && (!cause_ || ended_ == run_end::failed)) {
      cause_ = stage_cause;
      if (ended_ == run_end::none) ended_ = run_end::failed;
    }
    r.cancelled += dropped_between_.load();
    r.succeeded = stages_.back()->rep.succeeded;
    r.cause = cause_;
    r.signal = signal_;
    r.start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t0_.time_since_epoch()).count();
    if (r.submitted != r.succeeded + r.failed + r.cancelled) {
      detail::throw_error(errc::internal, "run_graph: accounting mismatch: submitted " + std::to_string(r.submitted) +
                                              " != " + std::to_string(r.succeeded) + " + " + std::to_string(r.failed) +
                                              " + " + std::to_string(r.cancelled));
    }
    switch (ended_) {
      case run_end::interrupted:
        r.status = "interrupted";
        break;
      case run_end::timed_out:
        r.status = "timed_out";
        break;
      case run_end::failed:
        r.status = "failed";
        break;
      case run_end::none:
        r.status = r.failed > 0 ? "failed" : "ok";
        break;
    }
    return r;
  }

  // A run that succeeded commits the sink's output (print the aggregate, rename the
  // file) and drops the resume state. Any other end keeps the sink's state for
  // --resume; a failed run prints no partial aggregate and commits no file.
  void commit(graph_report& r) {
    const auto keep_for_resume = [&] {
      if (!resume_->keeps_state()) return;
      try {
        resume_->save(*joblog_);
      } catch (const std::exception& e) {
        r.status = "failed";
        r.cause = job_error{0, 0, error_kind::exception, e.what()};
      }
    };
    if (r.status == "ok") {
      // Committing the output can still fail (a full disk, the target path taken
      // meanwhile). Then the run failed, with that as its cause: the report is still
      // written, and with a joblog the state stays, so --resume retries the commit
      // without running any item again.
      try {
        snk_->finish();
        resume_->drop();
      } catch (const std::exception& e) {
        r.status = "failed";
        r.cause = job_error{0, 0, error_kind::exception, std::string("sink: ") + e.what()};
        keep_for_resume();
      }
      return;
    }
    keep_for_resume();
    if (r.status == "failed") {
      try {
        snk_->finish_failed();
      } catch (const std::exception& e) {
        if (!r.cause) r.cause = job_error{0, 0, error_kind::exception, std::string("sink: ") + e.what()};
      }
    }
  }

  const graph_spec& spec_;
  const run_controls& ctl_;
  const clk::time_point t0_;
  std::unique_ptr<source> src_;
  std::unique_ptr<sink> snk_;
  std::vector<kernel_fn> kernels_;
  std::optional<resume_book> resume_;
  std::optional<joblog_writer> joblog_;
  std::uint64_t threshold_ = 0;
  // Declared before the stages: the run's graph outlives the engines built in it.
  std::optional<detail::shared_graph> graph_;
  std::vector<std::unique_ptr<stage_runtime>> stages_;

  std::mutex mu_;  // guards over_, ended_, cause_ and signal_
  std::condition_variable cv_;
  bool over_ = false;
  run_end ended_ = run_end::none;
  std::optional<job_error> cause_;
  int signal_ = 0;
  std::atomic<std::uint64_t> final_failures_{0};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> dropped_between_{0};  // results a cancelled next stage refused
  std::uint64_t submitted_ = 0;                    // the pump's (this thread's) counts
  std::uint64_t skipped_ = 0;
};

}  // namespace

graph_report run_graph(const graph_spec& spec, const run_controls& ctl, const registry& reg) {
  graph_run run(spec, ctl, reg);
  return run.run();
}

}  // namespace flowpool
