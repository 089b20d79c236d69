#!/usr/bin/env python3
"""bench/bench.py - runs the peer comparison and generates docs/benchmarks.md and its plots.

Driven by scripts/bench (which builds first):

  python3 bench/bench.py run    --build-dir build/bench [--workers 1,2] [--quick]
  python3 bench/bench.py report --build-dir build/bench

`run` writes Google Benchmark JSON (and JSON of the whole-process runs) to
bench/results/; `report` reads only bench/results/ and writes docs/benchmarks.md
and docs/img/bench-*.png. Every number in the page is read from those files.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
IMG = os.path.join(ROOT, "docs", "img")
KERNELS_DOC = os.path.join(ROOT, "docs", "benchmarks-kernels.md")

PEERS = ["flowpool", "flowpool_batch", "raw_tbb", "cpp_channels", "tbb_for", "tbb_pipeline", "omp", "asio", "moodycamel"]
PEER_DESC = {
    "flowpool": "flowpool::pool, capacity 1024, one submit() per job",
    "flowpool_batch": "flowpool::pool, capacity 1024, submit_batch() of 64 jobs at a time",
    "raw_tbb": "oneTBB flow graph: function_node(concurrency N) -> serial function_node, try_put, default arena",
    "cpp_channels": "the Go pattern in plain C++: bounded mutex+condvar channels (1024), N std::threads, one consumer",
    "tbb_for": "tbb::parallel_for in task_arena(N), per-thread partial sums, serial reduction",
    "tbb_pipeline": "tbb::parallel_pipeline in task_arena(N), 1024 tokens: serial source, parallel work, serial sum",
    "omp": "OpenMP parallel for schedule(dynamic) num_threads(N), critical-section aggregator (libgomp)",
    "asio": "Boost.Asio thread_pool(N), one post per job, results posted to a strand (unbounded)",
    "moodycamel": "N std::threads on moodycamel::ConcurrentQueue (idle workers spin with yield), results queue, the caller produces and folds, <= 1024 in flight",
    "go": "the Go pattern in Go (bench/go): jobs channel (1024), N goroutines, results channel, context cancel",
}
WORKLOADS = ["empty", "cpu1us", "cpu10us", "cpu100us", "cpu1ms", "skewed", "sha256", "sleep50ms"]
JOB_SIZE_US = {"empty": 0.0, "cpu1us": 1, "cpu10us": 10, "cpu100us": 100, "cpu1ms": 1000}


def sh(cmd, **kw):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


LAST_USAGE = {}  # CPU and context switches of the last timed_process (getrusage of the children)


def timed_process(cmd):
    """Runs cmd; returns (wall seconds of the whole process, stdout). LAST_USAGE then holds
    its CPU time (user + sys, ms) and context switches (voluntary + involuntary)."""
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_USAGE.clear()
    LAST_USAGE.update({
        "cpu_ms": ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1e3,
        "context_switches": (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)})
    # ru_maxrss of the children so far is a maximum over all of them; wait4 per child
    # is not available after communicate(), so each process reports its own VmHWM too.
    if p.returncode != 0:
        raise SystemExit(f"bench: {cmd[0]} failed ({p.returncode}): {err.strip()}")
    return wall, out


def parse_kv(line):
    parts = line.split()
    d = {"peer": parts[0]}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            d[k] = v
    return d


def cmd_run(a):
    os.makedirs(RESULTS, exist_ok=True)
    b = os.path.join(a.build_dir, "bench")
    bm_peers, bm_core, stream = (os.path.join(b, x) for x in ("bm_peers", "bm_core", "stream_rss"))
    gopool = os.path.join(b, "go", "gopool")
    flowpool_cli = os.path.join(a.build_dir, "flowpool")
    have_go = os.path.exists(gopool)
    quick = a.quick
    scale = ["--fp_scale=0.05"] if quick else []
    min_time = "0.05" if quick else "0.2"
    reps = [] if quick else ["--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true"]

    # 1. Every in-process peer on every workload, plus cancel with 1M queued.
    sh([bm_peers, f"--fp_workers={a.workers}", *scale, f"--benchmark_min_time={min_time}", *reps,
        "--benchmark_out=" + os.path.join(RESULTS, "bm_peers.json"), "--benchmark_out_format=json"])
    # 2. flowpool's core benchmarks (fail-fast, retry-policy cost).
    sh([bm_core, "--benchmark_filter=fail_fast|retry_policy|BM_flowpool_empty", f"--benchmark_min_time={min_time}",
        "--benchmark_out=" + os.path.join(RESULTS, "bm_core.json"), "--benchmark_out_format=json"])

    # 3. Peak RSS of a job stream, one process per (peer, job count).
    counts = [10_000, 1_000_000] if quick else [10_000, 10_000_000]
    rss = []
    for peer in PEERS:
        for n in counts:
            jobs = n
            wall, out = timed_process([stream, peer, str(jobs), "2", "empty"])
            d = parse_kv(out.strip().splitlines()[-1])
            rss.append({"peer": peer, "jobs": jobs, "workers": 2, "peak_rss_mb": float(d["peak_rss_mb"]),
                        "wall_ms": float(d["wall_ms"]), "process_wall_ms": wall * 1e3})
    if have_go:
        for n in counts:
            wall, out = timed_process(["/usr/bin/env", "GODEBUG=", gopool, "-workload", "empty", "-jobs", str(n),
                                       "-workers", "2", "-report-rss"])
            d = json.loads(out.strip().splitlines()[-1])
            rss.append({"peer": "go", "jobs": n, "workers": 2, "peak_rss_mb": d["peak_rss_bytes"] / 2**20,
                        "wall_ms": d["wall_ns"] / 1e6, "process_wall_ms": wall * 1e3})
    with open(os.path.join(RESULTS, "stream_rss.json"), "w") as f:
        json.dump({"context": context(a), "runs": rss}, f, indent=1)

    # 4. Whole processes: the Go program against flowpool's driver (stream_rss, the
    #    same shape: range of ids, N workers, one fold) and flowpool's CLI.
    proc = []
    reps_p = 1 if quick else 3
    cases = [("empty", 1_000_000, 2, [], ["empty"]), ("sleep50ms", 8, 3, ["-ms", "50"], ["sleep50ms"])]
    for wl, jobs, n, goargs, fpargs in cases:
        for r in range(reps_p):
            if have_go:
                gw = "sleep" if wl == "sleep50ms" else "empty"
                wall, out = timed_process([gopool, "-workload", gw, "-jobs", str(jobs), "-workers", str(n), *goargs])
                d = json.loads(out.strip().splitlines()[-1])
                proc.append({"peer": "go", "workload": wl, "jobs": jobs, "workers": n, "rep": r,
                             "process_wall_ms": wall * 1e3, "inprocess_wall_ms": d["wall_ns"] / 1e6, **LAST_USAGE})
            for driver, label in (("flowpool", "flowpool_driver"), ("flowpool_batch", "flowpool_batch_driver")):
                wall, out = timed_process([stream, driver, str(jobs), str(n), *fpargs])
                d = parse_kv(out.strip().splitlines()[-1])
                proc.append({"peer": label, "workload": wl, "jobs": jobs, "workers": n, "rep": r,
                             "process_wall_ms": wall * 1e3, "inprocess_wall_ms": float(d["wall_ms"]), **LAST_USAGE})
            if os.path.exists(flowpool_cli):
                spec = cli_spec(wl, jobs, n)
                wall, out = timed_process([flowpool_cli, "run", spec])
                proc.append({"peer": "flowpool_cli", "workload": wl, "jobs": jobs, "workers": n, "rep": r,
                             "process_wall_ms": wall * 1e3, "spec": os.path.relpath(spec, ROOT), **LAST_USAGE})
    # The CLI with 1 and 3 stages of the empty kernel over the same 300k items: what a
    # stage costs per item (the 3-stage wall over the 1-stage wall).
    if os.path.exists(flowpool_cli):
        for r in range(reps_p):
            for stages in (1, 3):
                spec = cli_spec("empty", 300_000, 2, stages)
                wall, out = timed_process([flowpool_cli, "run", spec])
                proc.append({"peer": "flowpool_cli", "workload": f"empty_{stages}stage", "jobs": 300_000,
                             "workers": 2, "rep": r, "process_wall_ms": wall * 1e3,
                             "spec": os.path.relpath(spec, ROOT), **LAST_USAGE})
    # cancel with 1M queued, Go pattern
    if have_go:
        for r in range(reps_p):
            _, out = timed_process([gopool, "-workload", "cancel", "-jobs", "1000000", "-workers", "2"])
            d = json.loads(out.strip().splitlines()[-1])
            proc.append({"peer": "go", "workload": "cancel_1M", "jobs": 1_000_000, "workers": 2, "rep": r,
                         "cancel_ms": d["cancel_ns"] / 1e6, "cancelled": d["cancelled"], "accounted": d["accounted"]})
    with open(os.path.join(RESULTS, "process.json"), "w") as f:
        json.dump({"context": context(a), "runs": proc}, f, indent=1)

    # 5. Optional: instruction counts (callgrind) of the retry machinery when nothing fails.
    if a.callgrind:
        run_callgrind(a)

    if a.kernels and os.path.exists(os.path.join(ROOT, "bench", "kernels.sh")):
        sh(["bash", os.path.join(ROOT, "bench", "kernels.sh"), flowpool_cli])  # writes docs/benchmarks-kernels.md


def run_callgrind(a):
    """Instruction counts of the retry machinery when nothing fails: the only measure
    here that resolves a few-percent effect on a shared machine."""
    bm_core = os.path.join(a.build_dir, "bench", "bm_core")
    cg = []
    for n in (1, 2):
        for name in ("BM_flowpool_empty", "BM_flowpool_empty_retry_policy"):
            out_file = os.path.join(tempfile.gettempdir(), f"flowpool-bench-cg-{name}-{n}.out")
            sh(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", bm_core,
                f"--benchmark_filter=^{name}/{n}/", "--benchmark_min_time=0.000001"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            total = None
            with open(out_file) as f:
                for line in f:
                    if line.startswith("totals:") or line.startswith("summary:"):
                        total = int(line.split()[1])
            cg.append({"benchmark": f"{name}/{n}", "workers": n, "instructions": total})
    with open(os.path.join(RESULTS, "callgrind.json"), "w") as f:
        json.dump({"context": context(a), "runs": cg}, f, indent=1)


def cli_spec(workload, jobs, n, stages=1):
    """A graph spec for flowpool's CLI with the same workload (range source, count sink),
    the kernel repeated in `stages` stages of N workers each."""
    d = os.path.join(tempfile.gettempdir(), "flowpool-bench")
    os.makedirs(d, exist_ok=True)
    if workload == "sleep50ms":
        stage = {"name": "work", "kernel": "sleep", "workers": n, "params": {"ms": 50}}
    else:
        stage = {"name": "work", "kernel": "spin", "workers": n, "params": {"iterations": 0}}
    chain = [dict(stage, name=f"work{k + 1}") if stages > 1 else stage for k in range(stages)]
    spec = {"name": f"bench-{workload}", "source": {"type": "range", "count": jobs}, "stages": chain,
            "sink": {"type": "count"}, "options": {"capacity": 1024}}
    path = os.path.join(d, f"{workload}-{jobs}-{n}-{stages}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def context(a):
    return {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "machine": machine(), "workers": getattr(a, "workers", None)}


def git_commit():
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "bench", "include", "src"],
                               capture_output=True, text=True).stdout.strip()
        return c.strip() + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    osr = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osr = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB, {osr}, kernel {platform.release()}"


# ---------------------------------------------------------------- report

def load(name):
    p = os.path.join(RESULTS, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def bm_index(doc):
    """{(workload, peer, workers): benchmark entry} preferring the median aggregate."""
    out = {}
    if not doc:
        return out
    for b in doc["benchmarks"]:
        agg = b.get("aggregate_name", "")
        if agg and agg != "median":
            continue
        name = b.get("run_name", b["name"]).split("/")
        if len(name) < 3:
            continue
        wl, peer, n = name[0], name[1], name[2]
        try:
            n = int(n.split(":")[0])
        except ValueError:
            continue
        if agg == "median" or (wl, peer, n) not in out:
            out[(wl, peer, n)] = b
    return out


def npj(b):
    """ns per job: Google Benchmark stores the inverted rate counter in seconds per job."""
    return b["ns_per_job"] * 1e9


def fmt_ns(ns):
    if ns is None:
        return "—"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    if ns < 10:
        return f"{ns:.2f} ns"
    return f"{ns:.0f} ns"


def fmt_rate(r):
    if r is None:
        return "—"
    if r >= 1e6:
        return f"{r / 1e6:.2f} M/s"
    if r >= 1e3:
        return f"{r / 1e3:.1f} k/s"
    return f"{r:.1f} /s"


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def cmd_report(a):
    peers_doc = load("bm_peers.json")
    core_doc = load("bm_core.json")
    rss_doc = load("stream_rss.json")
    proc_doc = load("process.json")
    idx = bm_index(peers_doc)
    ctx = peers_doc["context"] if peers_doc else {}
    runctx = (rss_doc or {}).get("context", {})
    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("<!-- Generated by scripts/bench (bench/bench.py report) from bench/results/*.json. Do not edit by hand. -->")
    w("")
    w(f"Measured {runctx.get('date', '?')} at commit `{runctx.get('commit', '?')}` on: "
      f"{runctx.get('machine', '?')}. Google Benchmark's view of it: {ctx.get('num_cpus', '?')} CPUs at "
      f"{ctx.get('mhz_per_cpu', '?')} MHz, library build `{ctx.get('library_build_type', '?')}`, "
      f"calibrated spin rate {ctx.get('iterations_per_us', '?')} xorshift rounds per µs. Load average when "
      f"`bm_peers` started: {', '.join(f'{x:.2f}' for x in ctx.get('load_avg', [])) or '?'} (on 2 CPUs; other "
      "engineers' builds share this machine, so every efficiency figure below is only as good as that load).")
    w("")
    w("This is a shared 2-core VM whose load is never zero: absolute numbers move by ±20% between "
      "runs, ratios from one run move far less. Every ratio below comes from one run of `scripts/bench`. "
      "Each in-process figure is the median of 3 repetitions (`--benchmark_repetitions=3`) unless the "
      "run was `--quick`.")
    w("")
    w("Reproduce: `scripts/bench` (builds the `bench` preset into `build/bench`, runs everything, "
      "regenerates this page and `docs/img/bench-*.png`; 5 to 10 minutes here). `scripts/bench --help` lists "
      "the options (`--workers 1,2,4,8` on bigger machines).")
    w("")
    w("## Peers")
    w("")
    w("The same workload is written once per runtime (`bench/peers.hpp`, `bench/go/main.go`). Every peer "
      "runs jobs with ids 0..n-1 on N workers and folds the results serially into a sum, which is checked "
      "against a serial run on every iteration.")
    w("")
    w("| peer | what |")
    w("|---|---|")
    for p in PEERS + ["go"]:
        w(f"| `{p}` | {PEER_DESC[p]} |")
    w("")
    w("Workloads (`bench/workloads.hpp`): `empty` (1M jobs, returns its id), `cpu1us` … `cpu1ms` "
      "(deterministic xorshift rounds, calibrated once per process; 200k/20k/2k/200 jobs), `skewed` "
      "(Pareto α=1.5, mean ≈10 µs, seeded; 20k jobs), `sha256` (OpenSSL EVP over 4 KiB; 50k jobs), "
      "`sleep50ms` (8 jobs at N=3, more workers than cores: the seed's case).")
    w("")

    # ---- targets
    w("## Targets of issue 7 (one run, ratios)")
    w("")
    targets(L, idx, rss_doc, proc_doc)

    # ---- the same targets on an idle 2-CPU slice of the 16-core machine
    p_idx = bm_index(load("pinned2-bm_peers.json"))
    if p_idx:
        p_rss, p_proc = load("pinned2-stream_rss.json"), load("pinned2-process.json")
        pctx = (p_proc or {}).get("context", {})
        w("### The same figures on an idle 2-CPU slice")
        w("")
        w(f"Because this machine is shared, the targets were also measured where nothing else ran: "
          f"{pctx.get('machine', '?')}, {pctx.get('date', '?')}, binaries from commit `{pctx.get('commit', '?')}`. "
          "Commands: `bench/device-pinned2.sh pack build/bench DIR` here, `bench/device-pinned2.sh run DIR OUT` "
          "there (`taskset -c 0,1` on `bm_peers --fp_workloads=empty,cpu1us,cpu10us,sleep50ms,cancel_1M "
          "--benchmark_min_time=0.2 --benchmark_repetitions=3` without the slow `cpp_channels` peer, on "
          "`bm_metrics --benchmark_filter=ratio`, on `gopool -workload empty|cancel -jobs 1000000 -workers 2` "
          "and `stream_rss flowpool 1000000 2 empty` (3 times each), and on `stream_rss flowpool "
          "10000|10000000 2 empty`), then `bench/device-pinned2.sh collect OUT ...` here. "
          "Files: `bench/results/pinned2-*.json`.")
        w("")
        targets(L, p_idx, p_rss, p_proc)
        workload_tables(L, p_idx, ["empty", "cpu1us", "cpu10us", "sleep50ms"], "####", " (idle 2-CPU slice)")

    # ---- per-workload tables
    w("## Per workload: ns/job, jobs/s, efficiency, ratio to flowpool")
    w("")
    w("`ns/job` is wall time per job (`ns_per_job`), `jobs/s` is `items_per_second`; efficiency is "
      "T1/(2·T2); `× flowpool` is the peer's N=2 wall time over flowpool's (above 1: slower than flowpool). "
      "Command: `build/bench/bench/bm_peers --benchmark_repetitions=3` (JSON: `bench/results/bm_peers.json`).")
    w("")
    la = ctx.get("load_avg") or [0]
    if la[0] > (ctx.get("num_cpus") or 2):
        w(f"**Caution:** the load average was {la[0]:.1f} on {ctx.get('num_cpus', '?')} CPUs when this run "
          "started, so the benchmark often had about one CPU: N=2 figures and efficiencies below show the "
          "share of the machine each run got as much as the peer, and differences between peers at N=2 "
          "are not reliable. The idle 2-CPU slice above is the clean measurement.")
        w("")
    workload_tables(L, idx, WORKLOADS)
    if os.path.exists(os.path.join(IMG, "bench-throughput.png")):
        w("![throughput against job size, N=2](img/bench-throughput.png)")
        w("")
    if os.path.exists(os.path.join(IMG, "bench-scaling.png")):
        w("![scaling on this machine](img/bench-scaling.png)")
        w("")

    # ---- whole process
    w("## Whole processes: the Go program against flowpool")
    w("")
    w("Each row is a whole process, started and waited for by `bench/bench.py` (wall time from fork to exit, "
      "median of the repetitions). `flowpool_driver` is `build/bench/bench/stream_rss flowpool JOBS N WORKLOAD`: "
      "a small C++ program with the Go program's shape (a range of ids, N workers, one serial fold), so the two "
      "do the same work. `flowpool_cli` is `build/bench/flowpool run SPEC` with a generated graph spec: `range` "
      "source, `spin` kernel with 0 iterations (or `sleep` 50 ms), `count` sink, capacity 1024. The CLI "
      "runs the graph-spec machinery for every item (its item records, the kernel and sink interfaces), so "
      "the driver is the like-for-like comparison; the CLI row shows what a spec user gets. CPU is user + "
      "sys time and context switches are voluntary + involuntary, both from `getrusage` of the child "
      "(median of the repetitions). `empty_1stage` and `empty_3stage` run the CLI over the same 300k "
      "items with 1 and 3 stages of the empty kernel at N=2 each.")
    w("")
    if proc_doc:
        w("| workload | jobs | N | peer | process wall | in-process wall | × Go (process) | CPU | context switches |")
        w("|---|---|---|---|---|---|---|---|---|")
        groups = {}
        for r in proc_doc["runs"]:
            if "process_wall_ms" in r:
                groups.setdefault((r["workload"], r["jobs"], r["workers"], r["peer"]), []).append(r)
        for (wl, jobs, n, peer), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3] != "go", kv[0][3])):
            pw = median([r["process_wall_ms"] for r in rs])
            ip = median([r["inprocess_wall_ms"] for r in rs if "inprocess_wall_ms" in r])
            g = groups.get((wl, jobs, n, "go"))
            ratio = f"{pw / median([r['process_wall_ms'] for r in g]):.2f}" if g else "—"
            cpu = median([r["cpu_ms"] for r in rs if "cpu_ms" in r])
            cs = median([r["context_switches"] for r in rs if "context_switches" in r])
            w(f"| `{wl}` | {jobs:,} | {n} | `{peer}` | {pw:.1f} ms | {'—' if ip is None else f'{ip:.1f} ms'} | {ratio} "
              f"| {'—' if cpu is None else f'{cpu:.0f} ms'} | {'—' if cs is None else f'{cs:,.0f}'} |")
        one = groups.get(("empty_1stage", 300_000, 2, "flowpool_cli"))
        three = groups.get(("empty_3stage", 300_000, 2, "flowpool_cli"))
        if one and three:
            ratio3 = median([r["process_wall_ms"] for r in three]) / median([r["process_wall_ms"] for r in one])
            w("")
            w(f"3 stages against 1 stage of the CLI, same 300k items: **{ratio3:.2f}×** the wall time.")
        w("")

    # ---- RSS
    w("## Peak RSS of a job stream")
    w("")
    w("Peak RSS (VmHWM) of one process that streams empty jobs at N=2: "
      "`build/bench/bench/stream_rss PEER JOBS 2 empty` and `build/bench/bench/go/gopool -workload empty "
      "-jobs JOBS -workers 2 -report-rss` (JSON: `bench/results/stream_rss.json`).")
    w("")
    if rss_doc:
        runs = rss_doc["runs"]
        counts = sorted({r["jobs"] for r in runs})
        hdr = "| peer | " + " | ".join(f"{c:,} jobs" for c in counts) + " | largest / smallest | × flowpool (largest) |"
        w(hdr)
        w("|" + "---|" * (hdr.count("|") - 1))
        by = {(r["peer"], r["jobs"]): r for r in runs}
        fp_big = by.get(("flowpool", counts[-1]))
        for p in PEERS + ["go"]:
            mine = sorted([r for r in runs if r["peer"] == p], key=lambda r: r["jobs"])
            if not mine:
                continue
            cells = [f"{by[(p, c)]['peak_rss_mb']:.1f} MB" if (p, c) in by else "—" for c in counts]
            growth = f"{mine[-1]['peak_rss_mb'] / mine[0]['peak_rss_mb']:.2f}"
            if mine[-1]["jobs"] != counts[-1]:
                growth += f" (at {mine[-1]['jobs']:,})"
            big = mine[-1]
            ratio = f"{big['peak_rss_mb'] / fp_big['peak_rss_mb']:.2f}" if fp_big else "—"
            w(f"| `{p}` | " + " | ".join(cells) + f" | {growth} | {ratio} |")
        w("")
        short = [p for p in PEERS + ["go"] if any(r["peer"] == p for r in runs)
                 and max(r["jobs"] for r in runs if r["peer"] == p) < counts[-1]]
        if short:
            w(", ".join(f"`{p}`" for p in short) + " ran only up to the counts shown (an earlier version of "
              "`bench/bench.py` capped `cpp_channels` at 1M jobs; it now streams the full count).")
            w("")
        w("`asio` posts every job "
          "up front and `raw_tbb` buffers every `try_put`: their memory grows with the stream. The bounded "
          "peers (`flowpool`, `cpp_channels`, `tbb_pipeline`, `moodycamel`, `go`) and the ones that never "
          "materialise jobs (`tbb_for`, `omp`) stay flat.")
        w("")

    # ---- cancel
    w("## Cancel with 1M queued jobs")
    w("")
    w("Time from `cancel()` to `wait()` returning, with 2 jobs running and 1,000,000 queued "
      "(`cancel_1M/*` in `bm_peers`, 5 iterations; Go: `gopool -workload cancel -jobs 1000000 -workers 2`, "
      "cancel() until every goroutine returned).")
    w("")
    w("| peer | cancel → return | accounting |")
    w("|---|---|---|")
    for p in ["flowpool", "raw_tbb", "cpp_channels"]:
        b = idx.get(("cancel_1M", p, 2))
        if b:
            acc = {"flowpool": "every queued job reported as cancelled (checked)",
                   "raw_tbb": "none: the buffered messages are dropped silently",
                   "cpp_channels": "buffered jobs drained and counted (checked)"}[p]
            ms = b["real_time"] * {"us": 1e-3, "ms": 1.0, "ns": 1e-6}[b["time_unit"]]
            w(f"| `{p}` | {ms:.3f} ms | {acc} |")
    if proc_doc:
        gc = [r for r in proc_doc["runs"] if r.get("workload") == "cancel_1M"]
        if gc:
            w(f"| `go` | {median([r['cancel_ms'] for r in gc]):.3f} ms | every queued job received and "
              f"counted as cancelled by the workers ({'checked' if all(r['accounted'] for r in gc) else 'MISMATCH'}) |")
    w("")

    # ---- core
    if core_doc:
        w("## flowpool core: fail-fast and the retry machinery")
        w("")
        w("`build/bench/bench/bm_core` (JSON: `bench/results/bm_core.json`).")
        w("")
        w("| benchmark | time | ns/job |")
        w("|---|---|---|")
        for b in core_doc["benchmarks"]:
            if b.get("aggregate_name") not in (None, "", "median"):
                continue
            w(f"| `{b['name']}` | {b['real_time']:.2f} {b['time_unit']} | {fmt_ns(npj(b)) if 'ns_per_job' in b else '—'} |")
        w("")
        cgd = load("callgrind.json")
        w("Wall time here is too noisy to resolve a few-percent effect, so the retry machinery's cost when "
          "nothing fails is measured in instructions: `scripts/bench --callgrind` runs "
          "`valgrind --tool=callgrind build/bench/bench/bm_core --benchmark_filter=^BM_flowpool_empty/N/ "
          "--benchmark_min_time=0.000001` and the same with `BM_flowpool_empty_retry_policy` (one iteration of "
          "1M empty jobs, whole process; JSON: `bench/results/callgrind.json`).")
        w("")
        if cgd:
            by = {r["benchmark"]: r["instructions"] for r in cgd["runs"]}
            w(f"Measured {cgd['context']['date']} at commit `{cgd['context']['commit']}`.")
            w("")
            w("| 1M empty jobs | no policy | retry policy (never fires) | ratio |")
            w("|---|---|---|---|")
            for n in (1, 2):
                a0, a1 = by.get(f"BM_flowpool_empty/{n}"), by.get(f"BM_flowpool_empty_retry_policy/{n}")
                if a0 and a1:
                    w(f"| N={n}, instructions | {a0:,} | {a1:,} | {a1 / a0:.3f} |")
            w("")
            w("One run each. The micro-batch sizes follow the measured job cost, so the counts of a run are "
              "not exactly repeatable either; a difference of a few percent either way is within that.")
            w("")

    # ---- profile
    prof = os.path.join(RESULTS, "profile-empty.txt")
    if os.path.exists(prof):
        w("## Where flowpool's empty-job time goes")
        w("")
        with open(prof) as f:
            w(f.read().rstrip())
        w("")

    # ---- scaling on a bigger machine
    big = [x for x in sorted(os.listdir(RESULTS)) if x.startswith("scaling16") and x.endswith(".json")]
    if big:
        w("## Scaling beyond 2 cores (a 16-core machine)")
        w("")
        meta = load("scaling16-machine.json") or {}
        w(f"Measured {meta.get('date', '?')} on a different machine: {meta.get('description', '?')}. "
          f"Binaries built here (Release, commit `{meta.get('commit', '?')}`), run there with "
          f"`{meta.get('command', 'bench/device-scaling.sh')}`, one repetition each with `--benchmark_min_time=0.05` "
          "(the device time was short), so single points can be off; the shape of the curves is the finding. "
          "Files: " + ", ".join(f"`bench/results/{x}`" for x in big if x != "scaling16-machine.json") + ".")
        w("")
        sidx = {}
        for x in big:
            if x == "scaling16-machine.json":
                continue
            sidx.update(bm_index(load(x)))
        for wl in ["empty", "cpu1us", "cpu10us", "cpu100us", "skewed", "sha256"]:
            ns_list = sorted({k[2] for k in sidx if k[0] == wl})
            if not ns_list:
                continue
            w(f"### `{wl}`: jobs/s (speed-up over N=1)")
            w("")
            w("| peer | " + " | ".join(f"N={n}" for n in ns_list) + " |")
            w("|" + "---|" * (len(ns_list) + 1))
            for p in PEERS:
                b1 = sidx.get((wl, p, ns_list[0]))
                cells = []
                for n in ns_list:
                    b = sidx.get((wl, p, n))
                    if not b:
                        cells.append("—")
                        continue
                    sp = f" ({b['items_per_second'] / b1['items_per_second']:.1f}×)" if b1 else ""
                    cells.append(fmt_rate(b["items_per_second"]) + sp)
                if any(c != "—" for c in cells):
                    w(f"| `{p}` | " + " | ".join(cells) + " |")
            w("")
        gof = os.path.join(RESULTS, "scaling16-go.jsonl")
        if os.path.exists(gof):
            with open(gof) as f:
                gruns = [json.loads(l) for l in f if l.strip().startswith("{")]
            if gruns:
                w("Go program there (`gopool -workload empty -jobs 200000 -workers N`): " + ", ".join(
                    f"N={r['workers']}: {r['wall_ns'] / r['jobs']:.0f} ns/job" for r in gruns) + ".")
                w("")
        if os.path.exists(os.path.join(IMG, "bench-scaling-16core.png")):
            w("![scaling on the 16-core machine](img/bench-scaling-16core.png)")
            w("")

    if os.path.exists(KERNELS_DOC):  # bench/kernels.sh's page, verbatim (it brings its own heading)
        with open(KERNELS_DOC) as f:
            w(f.read().rstrip())
        w("")

    with open(DOC, "w") as f:
        f.write("\n".join(L) + "\n")
    plots(idx)
    print(f"bench: wrote {os.path.relpath(DOC, ROOT)}")


def workload_tables(L, idx, workloads, heading="###", suffix=""):
    w = L.append
    worker_counts = sorted({k[2] for k in idx})
    for wl in workloads:
        rows = [(p, n) for p in PEERS for n in worker_counts if (wl, p, n) in idx]
        if not rows:
            continue
        ns_list = sorted({n for _, n in rows})
        w(f"{heading} `{wl}`{suffix}")
        w("")
        hdr = "| peer | " + " | ".join(f"N={n} ns/job" for n in ns_list) + " | " + \
              " | ".join(f"N={n} jobs/s" for n in ns_list)
        hdr += " | efficiency |" if (1 in ns_list and 2 in ns_list) else " |"
        hdr += " × flowpool |"
        w(hdr)
        w("|" + "---|" * (hdr.count("|") - 1))
        top = max(ns_list)
        fp = idx.get((wl, "flowpool", top))
        for p in PEERS:
            cells = []
            for n in ns_list:
                b = idx.get((wl, p, n))
                cells.append(fmt_ns(npj(b)) if b and not b.get("error_occurred") else "—")
            for n in ns_list:
                b = idx.get((wl, p, n))
                cells.append(fmt_rate(b.get("items_per_second")) if b and not b.get("error_occurred") else "—")
            if 1 in ns_list and 2 in ns_list:
                b1, b2 = idx.get((wl, p, 1)), idx.get((wl, p, 2))
                cells.append(f"{b1['ns_per_job'] / (2 * b2['ns_per_job']):.2f}" if b1 and b2 else "—")
            b = idx.get((wl, p, top))
            cells.append(f"{b['ns_per_job'] / fp['ns_per_job']:.3g}" if b and fp else "—")
            w(f"| `{p}` | " + " | ".join(cells) + " |")
        w("")


def targets(L, idx, rss_doc, proc_doc):
    w = L.append
    w("| figure | measured | target | met |")
    w("|---|---|---|---|")

    def row(fig, measured, target, ok):
        w(f"| {fig} | {measured} | {target} | {'yes' if ok else 'no' if ok is not None else '—'} |")

    fp2 = idx.get(("empty", "flowpool", 2))
    go_inproc = None
    if proc_doc:
        g = [r["inprocess_wall_ms"] for r in proc_doc["runs"] if r["peer"] == "go" and r.get("workload") == "empty"]
        d = [r["inprocess_wall_ms"] for r in proc_doc["runs"] if r["peer"] == "flowpool_driver" and r.get("workload") == "empty"]
        gp = [r["process_wall_ms"] for r in proc_doc["runs"] if r["peer"] == "go" and r.get("workload") == "empty"]
        dp = [r["process_wall_ms"] for r in proc_doc["runs"] if r["peer"] == "flowpool_driver" and r.get("workload") == "empty"]
        if g and d:
            go_inproc = median(g)
            ratio = median(d) / median(g)
            row("1M empty jobs, N=2: flowpool / Go wall (in-process run time)",
                f"{ratio:.2f} ({median(d) * 1e6 / 1e6:.0f} vs {median(g) * 1e6 / 1e6:.0f} ns/job)", "≤ 0.5", ratio <= 0.5)
        if gp and dp:
            ratio = median(dp) / median(gp)
            row("1M empty jobs, N=2: flowpool / Go wall (whole process)", f"{ratio:.2f} ({median(dp):.0f} vs {median(gp):.0f} ms)",
                "≤ 0.5", ratio <= 0.5)
    if fp2:
        row("1M empty jobs, N=2: flowpool in `bm_peers`", fmt_ns(npj(fp2)) + "/job", "≈ 60 ns/job", npj(fp2) <= 60)
    for wl, tgt in [("cpu10us", 0.97), ("cpu1us", 0.90)]:
        b1, b2 = idx.get((wl, "flowpool", 1)), idx.get((wl, "flowpool", 2))
        if b1 and b2:
            eff = b1["ns_per_job"] / (2 * b2["ns_per_job"])
            row(f"`{wl}` N=2 efficiency T1/(2·T2), flowpool", f"{eff:.2f}", f"≥ {tgt}", eff >= tgt)
    s = idx.get(("sleep50ms", "flowpool", 3))
    if s:
        t = s["real_time"] if s["time_unit"] == "ms" else s["real_time"] * {"us": 1e-3, "ns": 1e-6, "s": 1e3}[s["time_unit"]]
        row("8 × 50 ms sleeps, N=3 (2 cores), flowpool", f"{t:.1f} ms = {t / 150:.3f} × 150 ms", "≤ 1.05 × 150 ms", t <= 157.5)
    if rss_doc:
        fr = sorted([r for r in rss_doc["runs"] if r["peer"] == "flowpool"], key=lambda r: r["jobs"])
        if len(fr) >= 2:
            big, small = fr[-1], fr[0]
            row(f"peak RSS, {big['jobs']:,}-job stream, flowpool", f"{big['peak_rss_mb']:.1f} MB", "≤ 16 MB", big["peak_rss_mb"] <= 16)
            g = big["peak_rss_mb"] / small["peak_rss_mb"]
            row(f"peak RSS {big['jobs']:,} / {small['jobs']:,} jobs, flowpool", f"{g:.3f}", "≤ 1.10", g <= 1.10)
    c = idx.get(("cancel_1M", "flowpool", 2))
    if c:
        ms = c["real_time"] * {"us": 1e-3, "ms": 1.0, "ns": 1e-6}[c["time_unit"]]
        row("cancel → wait return, 1M queued, flowpool (exact accounting checked)", f"{ms:.3f} ms", "≤ 1 ms", ms <= 1.0)
    w("")


def plots(idx):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: python3-matplotlib missing; no plots", file=sys.stderr)
        return
    os.makedirs(IMG, exist_ok=True)
    # throughput against job size, N=2
    fig, ax = plt.subplots(figsize=(8, 5))
    for p in PEERS:
        xs, ys = [], []
        for wl, us in JOB_SIZE_US.items():
            b = idx.get((wl, p, 2))
            if b:
                xs.append(max(us, 0.1))
                ys.append(b["items_per_second"])
        if xs:
            ax.plot(xs, ys, marker="o", label=p, linewidth=2.5 if p == "flowpool" else 1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("job size (µs of CPU work; 0.1 = empty job)")
    ax.set_ylabel("jobs/s, N=2")
    ax.set_title("Throughput against job size, N=2, this 2-core machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "bench-throughput.png"), dpi=100)
    plt.close(fig)
    scaling_plot(plt, idx, "bench-scaling.png", "Scaling on this 2-core machine")
    big = {}
    for x in sorted(os.listdir(RESULTS)):
        if x.startswith("scaling16") and x.endswith(".json") and x != "scaling16-machine.json":
            big.update(bm_index(load(x)))
    if big:
        meta = load("scaling16-machine.json") or {}
        scaling_plot(plt, big, "bench-scaling-16core.png",
                     "Scaling measured on a 16-core machine: " + meta.get("short", "see docs/benchmarks.md"))


def scaling_plot(plt, idx, name, title):
    wls = [wl for wl in ["empty", "cpu1us", "cpu10us"] if any(k[0] == wl for k in idx)]
    if not wls:
        return
    fig, axes = plt.subplots(1, len(wls), figsize=(5 * len(wls), 4.5), squeeze=False)
    for ax, wl in zip(axes[0], wls):
        for p in PEERS:
            pts = sorted((k[2], b["items_per_second"]) for k, b in idx.items() if k[0] == wl and k[1] == p)
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=p,
                        linewidth=2.5 if p == "flowpool" else 1.2)
        ns = sorted({k[2] for k in idx if k[0] == wl})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_yscale("log")
        ax.set_xlabel("workers N")
        ax.set_ylabel("jobs/s")
        ax.set_title(wl)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, name), dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--build-dir", default=os.path.join(ROOT, "build", "bench"))
    r.add_argument("--workers", default="1,2")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--kernels", action="store_true")
    r.add_argument("--callgrind", action="store_true")
    c = sub.add_parser("callgrind")
    c.add_argument("--build-dir", default=os.path.join(ROOT, "build", "bench"))
    p = sub.add_parser("report")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build", "bench"))
    a = ap.parse_args()
    if a.cmd == "run":
        cmd_run(a)
    elif a.cmd == "callgrind":
        run_callgrind(a)
    else:
        cmd_report(a)


if __name__ == "__main__":
    main()
