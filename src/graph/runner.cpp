// Runs a validated graph spec: a source, a chain of pools (one per stage), a sink.
//
// Stage k's serial aggregator submits each result into stage k+1 (blocking, so
// the bounded queue between stages is real backpressure); the last stage's
// aggregator is the sink. Each item ends in exactly one terminal state: failed or
// cancelled at some stage, or succeeded at the last stage. The joblog records that
// state per item id (its source position), which is what --resume keys on.
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "flowpool/graph.hpp"
#include "flowpool/pool.hpp"

namespace flowpool {
namespace {

using clk = std::chrono::steady_clock;

// Appends one line per finished item, flushed as it goes. Serialized by a mutex:
// several stages' hooks may write at once.
class joblog_writer {
 public:
  explicit joblog_writer(const std::string& path) {
    if (path.empty()) return;
    const bool fresh = !std::filesystem::exists(path) || std::filesystem::file_size(path) == 0;
    out_.open(path, std::ios::app);
    if (!out_) detail::throw_error(errc::io, "--joblog: cannot open \"" + path + "\" for appending");
    if (fresh) out_ << "# id\tstatus\tattempts\tduration_ms\tstage\n" << std::flush;
  }
  void write(std::uint64_t id, job_status s, std::uint32_t attempts, std::chrono::nanoseconds d,
             const std::string& stage) {
    if (!out_.is_open()) return;
    const std::lock_guard lk(mu_);
    out_ << id << '\t' << to_string(s) << '\t' << attempts << '\t'
         << std::chrono::duration<double, std::milli>(d).count() << '\t' << stage << '\n'
         << std::flush;
  }

 private:
  std::mutex mu_;
  std::ofstream out_;
};

// Ids the joblog says already succeeded (for --resume).
std::set<std::uint64_t> succeeded_in_joblog(const std::string& path) {
  std::set<std::uint64_t> ids;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::uint64_t id = 0;
    std::string status;
    if (fields >> id >> status && status == "succeeded") ids.insert(id);
  }
  return ids;
}

std::string state_path(const std::string& joblog) { return joblog + ".state"; }

struct stage_runtime {
  std::string name;
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::uint64_t> item_of;  // pool job id -> item id (in flight)
  std::unordered_map<std::uint64_t, std::uint64_t> failed_item_of;  // kept for the error list
  std::uint64_t accepted = 0;  // only the stage's single producer touches it
  std::unique_ptr<pool<item, item>> p;
  report rep;
};

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
    j["errors"].push_back({{"job", e.job}, {"attempts", e.attempts}, {"kind", std::string(to_string(e.kind))},
                           {"message", e.message}});
  }
  if (cause) {
    j["cause"] = {{"job", cause->job}, {"attempts", cause->attempts}, {"kind", std::string(to_string(cause->kind))},
                  {"message", cause->message}};
  }
  if (signal != 0) j["signal"] = signal;
  return j;
}

graph_report run_graph(const graph_spec& spec, const run_controls& ctl, const registry& reg) {
  const auto t0 = clk::now();
  const auto* src_info = reg.find_source(spec.source_type);
  const auto* sink_info_p = reg.find_sink(spec.sink_type);
  if (src_info == nullptr || sink_info_p == nullptr) {
    detail::throw_error(errc::invalid_spec, "run_graph: the spec names an unregistered source or sink");
  }
  std::ostream& out = ctl.out != nullptr ? *ctl.out : std::cout;
  auto src = src_info->make(spec.source_params);
  auto snk = sink_info_p->make(spec.sink_params, sink_env{&out, spec.ordered});
  std::vector<kernel_fn> kernels;
  for (const auto& st : spec.stages) {
    const auto* k = reg.find_kernel(st.kernel);
    if (k == nullptr) detail::throw_error(errc::invalid_spec, "run_graph: unregistered kernel \"" + st.kernel + "\"");
    kernels.push_back(k->make(st.params));
  }

  std::set<std::uint64_t> done;
  if (ctl.resume) {
    if (ctl.joblog.empty()) detail::throw_error(errc::invalid_argument, "--resume needs --joblog FILE");
    done = succeeded_in_joblog(ctl.joblog);
    std::ifstream state(state_path(ctl.joblog));
    if (state) {
      try {
        snk->load_state(nlohmann::json::parse(state));
      } catch (const std::exception& e) {
        detail::throw_error(errc::io, "--resume: cannot read sink state \"" + state_path(ctl.joblog) + "\": " + e.what());
      }
    }
  }
  joblog_writer joblog(ctl.joblog);

  const std::size_t n_stages = spec.stages.size();
  std::vector<std::unique_ptr<stage_runtime>> stages;
  for (std::size_t k = 0; k < n_stages; ++k) {
    stages.push_back(std::make_unique<stage_runtime>());
    stages[k]->name = spec.stages[k].name;
  }

  std::mutex run_mu;
  std::condition_variable run_cv;
  bool run_over = false;
  std::string ended_by;  // "", "interrupted", "timed_out", "failed"
  int signal_seen = 0;
  std::optional<job_error> cause;
  std::atomic<std::uint64_t> final_failures{0};
  std::atomic<std::uint64_t> done_items{0};
  std::atomic<std::uint64_t> failed_items{0};
  std::atomic<std::uint64_t> dropped_between{0};  // results a cancelled next stage refused

  auto cancel_all = [&](const std::string& why, std::optional<job_error> c) {
    {
      const std::lock_guard lk(run_mu);
      if (!ended_by.empty()) return;
      ended_by = why;
      cause = std::move(c);
    }
    for (auto& s : stages) {
      try {
        if (s->p) s->p->cancel();
      } catch (const error&) {  // that stage already finished
      }
    }
  };

  const std::uint64_t threshold = spec.on_error == error_policy::fail_fast ? 1 : spec.max_failures;

  // Build the pools last to first: stage k's aggregator submits into stage k+1.
  for (std::size_t kk = n_stages; kk-- > 0;) {
    const auto& st = spec.stages[kk];
    stage_runtime& rt = *stages[kk];
    const bool last = kk + 1 == n_stages;
    pool_options o;
    o.workers = st.workers;
    o.capacity = spec.capacity;
    o.ordered = spec.ordered;
    o.retry.max_attempts = (st.retries ? *st.retries : spec.retries) + 1;
    o.retry.backoff_base = spec.backoff;
    o.retry.backoff_cap = std::max<std::chrono::nanoseconds>(spec.backoff * 64, std::chrono::seconds(1));
    o.retry.jitter = 0.2;
    o.job_timeout = st.job_timeout ? *st.job_timeout : spec.job_timeout;
    // Each pool applies the failure policy at the worker (immediate); the hook
    // below applies it across stages and cancels the others.
    o.on_error = spec.on_error;
    o.max_failures = spec.max_failures;
    o.on_job_done = [&, kk, last](const job_record& rec) {
      stage_runtime& me = *stages[kk];
      std::uint64_t item_id = 0;
      {
        const std::lock_guard lk(me.mu);
        auto it = me.item_of.find(rec.job);
        if (it != me.item_of.end()) {
          item_id = it->second;
          me.item_of.erase(it);
        }
        if (rec.status == job_status::failed) me.failed_item_of[rec.job] = item_id;
      }
      if (rec.status == job_status::succeeded && !last) return;  // handed on to the next stage
      joblog.write(item_id, rec.status, rec.attempts, rec.duration, me.name);
      done_items.fetch_add(1, std::memory_order_relaxed);
      if (rec.status == job_status::failed) {
        failed_items.fetch_add(1, std::memory_order_relaxed);
        if (threshold > 0 && final_failures.fetch_add(1) + 1 >= threshold) {
          cancel_all("failed", job_error{item_id, rec.attempts, error_kind::exception,
                                         "stage " + me.name + " failed item " + std::to_string(item_id)});
        }
      }
    };
    metrics_options mo;
    mo.enabled = ctl.metrics;
    mo.trace_limit = ctl.trace_limit == 0 ? 0 : std::max<std::size_t>(1, ctl.trace_limit / n_stages);  // split evenly
    const kernel_fn kernel = kernels[kk];
    auto work = [kernel](const item& in, job_context& ctx) {
      item it = in;
      it.worker = ctx.worker();
      kernel(it, ctx);
      return it;
    };
    if (last) {
      rt.p = std::make_unique<pool<item, item>>(o, work, [&snk](item&& it) { snk->consume(std::move(it)); }, mo);
    } else {
      stage_runtime& next = *stages[kk + 1];
      rt.p = std::make_unique<pool<item, item>>(o, work, [&next, &dropped_between, &done_items, &joblog](item&& it) {
        const std::uint64_t id = it.id;
        {
          const std::lock_guard lk(next.mu);
          next.item_of[next.accepted + 1] = id;  // the id this submit will get: one producer per stage
        }
        if (next.p->submit(std::move(it))) {
          ++next.accepted;
        } else {  // the run is cancelled: this item ends here
          {
            const std::lock_guard lk(next.mu);
            next.item_of.erase(next.accepted + 1);
          }
          dropped_between.fetch_add(1);
          done_items.fetch_add(1);
          joblog.write(id, job_status::cancelled, 0, {}, next.name);
        }
      }, mo);
    }
  }

  // The watcher: interrupts, the run deadline, progress.
  const auto deadline = spec.timeout.count() > 0 ? t0 + spec.timeout : clk::time_point::max();
  const auto total = src->size_hint();
  std::thread watcher([&] {
    auto next_progress = clk::now();
    auto next_metrics = clk::now() + ctl.metrics_interval;
    std::unique_lock lk(run_mu);
    while (!run_over) {
      run_cv.wait_for(lk, std::chrono::milliseconds(20));
      if (run_over) break;
      const int sig = ctl.interrupt != nullptr ? ctl.interrupt->load() : 0;
      const auto now = clk::now();
      lk.unlock();
      if (sig != 0) {
        {
          const std::lock_guard g(run_mu);
          if (signal_seen == 0) signal_seen = sig;
        }
        cancel_all("interrupted", std::nullopt);
      } else if (now >= deadline) {
        cancel_all("timed_out", std::nullopt);
      }
      if (ctl.on_progress && now >= next_progress) {
        int busy = 0, workers = 0;
        for (auto& s : stages) {
          busy += s->p->snapshot().busy_workers;
          workers += s->p->options().workers;
        }
        ctl.on_progress(done_items.load(), total ? std::optional<std::uint64_t>(*total - std::min<std::uint64_t>(*total, done.size())) : std::nullopt,
                        failed_items.load(), busy, workers);
        next_progress = now + std::chrono::milliseconds(100);
      }
      if (ctl.on_metrics && ctl.metrics && now >= next_metrics) {
        std::vector<stage_metrics> live;
        for (auto& s : stages) live.push_back({s->name, s->p->metrics()});
        ctl.on_metrics(live);
        next_metrics = now + ctl.metrics_interval;
      }
      lk.lock();
    }
  });

  // Pump the source into stage 0 on this thread.
  std::uint64_t submitted = 0, skipped = 0;
  std::string source_error;
  try {
    stage_runtime& first = *stages[0];
    while (auto it = src->next()) {
      if (!done.empty() && done.count(it->id) != 0 && !snk->needs_rerun(it->id)) {
        ++skipped;
        continue;
      }
      const std::uint64_t id = it->id;
      {
        const std::lock_guard lk(first.mu);
        first.item_of[first.accepted + 1] = id;
      }
      if (!first.p->submit(std::move(*it))) {
        const std::lock_guard lk(first.mu);
        first.item_of.erase(first.accepted + 1);
        break;  // cancelled: stop reading the source
      }
      ++first.accepted;
      ++submitted;
    }
  } catch (const std::exception& e) {
    source_error = e.what();
    cancel_all("failed", job_error{0, 0, error_kind::exception, "source: " + source_error});
  }

  // Drain stage by stage: once stage k is waited, every result it had was submitted to k+1.
  for (auto& s : stages) {
    s->p->close();
    s->rep = s->p->wait();
  }
  {
    const std::lock_guard lk(run_mu);
    run_over = true;
  }
  run_cv.notify_all();
  watcher.join();

  graph_report r;
  std::optional<job_error> stage_cause;
  r.graph = spec.name;
  r.submitted = submitted;
  r.skipped = skipped;
  for (std::size_t k = 0; k < n_stages; ++k) {
    auto& s = *stages[k];
    stage_report sr;
    sr.name = s.name;
    sr.workers = spec.stages[k].workers;
    sr.max_queue_depth = s.rep.max_queue_depth;
    sr.succeeded = s.rep.succeeded;
    sr.failed = s.rep.failed;
    sr.cancelled = s.rep.cancelled;
    r.stages.push_back(sr);
    if (ctl.metrics) r.metrics.push_back({s.name, s.p->metrics()});
    if (ctl.trace_limit > 0) r.traces.push_back({s.name, s.p->trace()});
    r.failed += s.rep.failed;
    r.cancelled += s.rep.cancelled;
    r.retried += s.rep.retried;
    for (auto e : s.rep.errors) {
      auto it = s.failed_item_of.find(e.job);
      e.job = it != s.failed_item_of.end() ? it->second : 0;
      e.message = s.name + ": " + e.message;
      r.errors.push_back(std::move(e));
    }
    if (s.rep.cause && !stage_cause) {  // the first stage that stopped itself says why, with its message
      auto c = *s.rep.cause;
      auto it = s.failed_item_of.find(c.job);
      c.job = it != s.failed_item_of.end() ? it->second : 0;
      c.message = s.name + ": " + c.message;
      stage_cause = c;
    }
  }
  if (stage_cause && (!cause || ended_by == "failed")) {
    cause = stage_cause;
    if (ended_by.empty()) ended_by = "failed";
  }
  r.cancelled += dropped_between.load();
  r.succeeded = stages.back()->rep.succeeded;
  r.cause = cause;
  r.signal = signal_seen;
  r.start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count();
  if (r.submitted != r.succeeded + r.failed + r.cancelled) {
    detail::throw_error(errc::internal, "run_graph: accounting mismatch: submitted " + std::to_string(r.submitted) +
                                            " != " + std::to_string(r.succeeded) + " + " + std::to_string(r.failed) +
                                            " + " + std::to_string(r.cancelled));
  }
  if (ended_by == "interrupted") {
    r.status = "interrupted";
  } else if (ended_by == "timed_out") {
    r.status = "timed_out";
  } else if (ended_by == "failed" || r.failed > 0) {
    r.status = "failed";
  } else {
    r.status = "ok";
  }
  // An interrupted or timed-out run keeps its partial aggregate for --resume;
  // a finished one commits the sink's output.
  const auto keep_resume_state = [&] {
    if (ctl.joblog.empty()) return;
    std::ofstream state(state_path(ctl.joblog), std::ios::trunc);
    state << snk->save_state().dump() << '\n';
  };
  if (r.status == "interrupted" || r.status == "timed_out") {
    keep_resume_state();
  } else if (r.status == "ok") {
    // Committing the output can still fail (a full disk, the target path taken
    // meanwhile). Then the run failed, with that as its cause: the report is still
    // written, and with a joblog the state stays, so --resume retries the commit
    // without running any item again.
    try {
      snk->finish();
      if (!ctl.joblog.empty()) std::filesystem::remove(state_path(ctl.joblog));
    } catch (const std::exception& e) {
      r.status = "failed";
      r.cause = job_error{0, 0, error_kind::exception, std::string("sink: ") + e.what()};
      keep_resume_state();
    }
  } else {
    snk->finish_failed();
    if (!ctl.joblog.empty()) std::filesystem::remove(state_path(ctl.joblog));
  }
  r.wall_ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
  return r;
}

}  // namespace flowpool
