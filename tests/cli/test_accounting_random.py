#!/usr/bin/env python3
"""Randomized accounting test of the flowpool CLI: random multi-stage graphs, interrupted and resumed.

Run by ctest: test_accounting_random.py FLOWPOOL_BINARY REPO_DIR GROUP.

For each generated graph (a random source, 1 to 4 stages of cheap kernels with retries and backoff,
injected failures, and one of every built-in sink), the test runs:

- a reference: one uninterrupted run with --joblog and --report;
- a chain: a first run stopped at a random moment (SIGINT or SIGTERM, --timeout, a failure
  policy, --halt, on injected failures, or kill -9), then --resume with the same --joblog until
  a run completes (sometimes interrupting a resume too). Sometimes the first run finds a stale
  joblog of an earlier run, which it must start over or refuse.

It checks, for every run: no hang (each process runs under a timeout), the exit code and the
report's status as docs/cli.md documents them, submitted == succeeded + failed + cancelled,
skipped, one joblog line per submitted item; and for the chain: every item's final state in
the joblog equals the reference's (succeeded once, or failed when the reference failed it), and
the chain's output equals the reference's: byte for byte for ordered sinks and aggregates, as a
multiset of lines for unordered print, the final file for the file sink.

Where docs/cli.md leaves it open, the test reads it so: after a failed (--halt) run or kill -9,
an aggregate's resume prints the whole aggregate or refuses (exit 2); line sinks then hold every
line (in another order, and after kill -9 possibly twice); the file sink's file is exact.

Environment:
  FLOWPOOL_TEST_SEED=S          the seed (default: random; printed)
  FLOWPOOL_TEST_GRAPHS=N        graphs in all over the groups (default 400; the stress group 2000)
  FLOWPOOL_TEST_ONLY=I          run only graph I of the seed (any group), to reproduce a failure
  FLOWPOOL_TEST_JOBS=J          graphs run at once in one group (default 2)
  FLOWPOOL_TEST_MAX_FAILURES=M  stop a group after M failing graphs (default 4)
  FLOWPOOL_TEST_STRESS=1        run the AccountingStress group (otherwise it exits 77: skipped)
  FLOWPOOL_TEST_KEEP=DIR        keep the generated specs and inputs under DIR
  FLOWPOOL_TEST_RUN_TIMEOUT=S   seconds one flowpool process may take before it counts as a hang (30)
  FLOWPOOL_TEST_RETRIES=0       no retries, and at most 2 stages (default: retries, up to 4 stages)
"""
import collections
import concurrent.futures
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = None
REPO = None
GROUPS = 4  # AccountingTests0..3 each run every 4th graph

# seconds for one flowpool process; every graph here takes well under 2 s
RUN_TIMEOUT = float(os.environ.get("FLOWPOOL_TEST_RUN_TIMEOUT") or 30)
MAX_RESUMES = 5
SINKS = ["print", "print_ordered", "count", "sum", "topk", "checksums", "file", "concat"]
LINE_SINKS = {"print", "print_ordered", "checksums", "concat"}
STATUS_OF_RC = {0: "ok", 1: "failed", 3: "timed_out", 130: "interrupted", 143: "interrupted"}
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "Nu", "XI", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "x1", "y2"]


class GraphFailure(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Generation


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def text_lines(rng, n, numbers):
    if numbers:
        return [str(rng.randint(-1000, 100000)) for _ in range(n)]
    return [" ".join(rng.choice(WORDS[: rng.randint(3, len(WORDS))]) for _ in range(rng.randint(0, 8)))
            for _ in range(n)]


def make_source(rng, d, kind, stress):
    """Returns (source spec, expected item count or None)."""
    hi = 1500 if stress else 300
    if kind == "range":
        n = rng.randint(10, hi)
        return {"type": "range", "count": n, "start": rng.choice([1, 1, 0, -50, 1000])}, n
    if kind in ("lines", "lines_numbers"):
        n = rng.randint(10, min(hi, 200))
        lines = text_lines(rng, n, kind == "lines_numbers")
        write(f"{d}/in.txt", ("\n".join(lines) + "\n").encode())
        return {"type": "lines", "path": f"{d}/in.txt"}, n
    if kind == "files":
        n = rng.randint(10, 60)
        for i in range(n):
            sub = rng.choice(["", "a/", "b/", "a/c/"])
            body = "\n".join(text_lines(rng, rng.randint(0, 12), False)).encode()
            write(f"{d}/tree/{sub}f{i:03d}.txt", body)
        return {"type": "files", "path": f"{d}/tree"}, n
    if kind == "chunks":
        size = rng.randint(64, 512)
        n = rng.randint(10, 100)
        data = ("\n".join(text_lines(rng, size * n // 20, False)) + "\n").encode()
        data = data[: size * n - rng.randint(0, size - 1)]
        write(f"{d}/in.bin", data)
        boundary = rng.choice(["none", "line"])
        expected = max(1, -(-len(data) // size)) if boundary == "none" else None
        return {"type": "chunks", "path": f"{d}/in.bin", "size": size, "boundary": boundary}, expected
    raise AssertionError(kind)


def plain_stage(rng, n_items, allow_exec, permanent_ok, retries):
    """A stage whose kernel leaves value = input: sleep, spin, fail, or exec printf."""
    r = rng.random()
    if r < 0.35:
        ms = rng.choice([0, 1, 1, 2, 3])
        return {"kernel": "sleep", "params": {"ms": ms}}
    if r < 0.55:
        return {"kernel": "spin", "params": {"iterations": rng.choice([0, 100, 5000, 20000])}}
    if r < 0.93 or not allow_exec:
        params = {"seed": rng.randint(0, 10**9)}
        if rng.random() < 0.8:
            params["probability"] = rng.choice([0.05, 0.1, 0.3, 0.5])
        if rng.random() < 0.5:
            params["ids"] = sorted(rng.sample(range(1, n_items + 1), rng.randint(1, min(5, n_items))))
        if permanent_ok and rng.random() < 0.5:
            params["fail_attempts"] = rng.choice([0, retries + 1])  # fails for good
            params["probability"] = min(params.get("probability", 0.0), 0.1)
        elif retries > 0:
            params["fail_attempts"] = rng.randint(1, retries)  # the retries always recover it
        else:
            params.pop("probability", None)
            params.pop("ids", None)
        return {"kernel": "fail", "params": params}
    return {"kernel": "exec", "params": {"argv": ["printf", "%s", "{input}"]}}


# In ordered mode a stage's workers run at most `capacity` items ahead of the oldest one not yet
# delivered (the reorder window; docs/pool.md). An item waiting out a backoff holds that window,
# so probabilistic retries cost about  items * probability * total backoff / capacity  of wall
# time: 1,446 items, 30% failing twice at 100 ms backoff and capacity 3 take 74 s, by design, more
# than the hang timeout. This keeps that cost under ORDERED_BACKOFF_BUDGET seconds by lowering
# the probability of such stages (the few fixed ids of the gap stages cost almost nothing).
ORDERED_BACKOFF_BUDGET = 3.0


def bound_ordered_backoff(stages, options, flags, n_items):
    capacity = int(flags[flags.index("--capacity") + 1]) if "--capacity" in flags else options["capacity"]
    base = float(options["backoff"].removesuffix("ms")) / 1000
    for st in stages:
        params = st["params"]
        if st["kernel"] != "fail" or not params.get("probability") or not params.get("fail_attempts"):
            continue  # no probabilistic retries (fail_attempts 0: fails for good, no backoff wait)
        attempts = min(params["fail_attempts"], st.get("retries", options["retries"]))
        cost = n_items * params["probability"] * base * (2 ** attempts - 1) / capacity
        if cost > ORDERED_BACKOFF_BUDGET:
            params["probability"] = math.floor(params["probability"] * ORDERED_BACKOFF_BUDGET / cost * 1000) / 1000


# Graphs with retries (backoff on each stage's timer) and chains of up to 4 stages are the
# default. FLOWPOOL_TEST_RETRIES=0 leaves them out (1 and 2 stages, no retries), to tell a
# retry problem from another one.
WITH_RETRIES = os.environ.get("FLOWPOOL_TEST_RETRIES", "1") != "0"
MAX_STAGES = 4 if WITH_RETRIES else 2


def generate(rng, d, stress):
    """Returns a dict describing one graph: spec, CLI flags, sink kind, expected count."""
    sink = rng.choice(SINKS)
    finisher = None
    exec_ok = True
    if sink in ("print", "print_ordered"):
        kind = rng.choice(["range", "range", "lines", "files"])
    elif sink == "count":
        kind = rng.choice(["range", "lines", "files", "chunks"])
    elif sink == "sum":
        kind = rng.choice(["range", "lines_numbers"])
    elif sink == "topk":
        kind = rng.choice(["lines", "chunks", "files"])
        finisher = {"kernel": "wordcount", "params": {"input": "path" if kind == "files" else "bytes"}}
    elif sink == "checksums":
        kind = "files"
        finisher = {"kernel": "sha256", "params": {"input": "path"}}
    else:  # file, concat: values are bytes
        kind = rng.choice(["chunks", "chunks", "range", "files"])
        if kind == "chunks" and rng.random() < 0.4:
            finisher = {"kernel": "zstd", "params": {"level": rng.randint(1, 3)}}
        elif kind == "files" and rng.random() < 0.5:
            finisher = {"kernel": "exec", "params": {"argv": ["cat", "{input}"]}}
    if kind == "chunks":
        exec_ok = False  # a chunk is bytes, not an argument
    src, expected_n = make_source(rng, d, kind, stress)
    n_est = expected_n or 100
    if n_est > 80:
        exec_ok = False  # a process per item: keep exec to small graphs
    if finisher and finisher["kernel"] == "exec" and n_est > 80:
        finisher = None

    opt_retries = rng.randint(0, 3) if WITH_RETRIES else 0
    # Items that fail for good make the reference exit 1: fine for every sink but file
    # (a failed file run commits nothing) and never with a failure policy in the graph itself.
    permanent_ok = sink != "file" and rng.random() < 0.3
    n_stages = rng.randint(1, MAX_STAGES)  # in all, the gap and finisher stages below included
    gap = WITH_RETRIES and sink in ("print_ordered", "checksums", "concat") and rng.random() < 0.5
    n_plain = max(0, n_stages - (1 if finisher else 0) - (1 if gap else 0))
    stages = []
    for i in range(n_plain):
        st_retries = rng.randint(0, 3) if WITH_RETRIES and rng.random() < 0.3 else None
        eff = opt_retries if st_retries is None else st_retries
        st = plain_stage(rng, n_est, exec_ok, permanent_ok, eff)
        if st_retries is not None:
            st["retries"] = st_retries
        stages.append(st)
    if gap:  # a few items wait out a long backoff while later ones finish: a gap in ordered output
        ids = sorted(rng.sample(range(1, n_est // 2 + 1), rng.randint(1, 3)))  # early: later items pass them
        # mostly last: only the last stage's gaps can reach the sink (a cancelled stage refuses input)
        at = len(stages) if rng.random() < 0.7 else rng.randint(0, len(stages))
        stages.insert(at, {"kernel": "fail", "retries": rng.randint(1, 2), "params": {"ids": ids, "fail_attempts": 1}})
    if finisher:
        stages.append(dict(finisher))
    if not any(st["kernel"] == "sleep" for st in stages) and (not finisher or rng.random() < 0.5):
        # a sleep stage somewhere makes the run last long enough for an interrupt to land in it
        plain = [k for k, st in enumerate(stages[:n_plain]) if st["kernel"] != "fail" or "seed" in st["params"]]
        if len(stages) < MAX_STAGES:
            stages.insert(rng.randint(0, n_plain), {"kernel": "sleep", "params": {"ms": 1}})
        elif plain:
            stages[rng.choice(plain)] = {"kernel": "sleep", "params": {"ms": 1}}
    target_ms = rng.uniform(40, 400) * (3 if stress else 1)  # the slowest stage's share of one run
    for i, st in enumerate(stages):
        st["name"] = f"s{i}-{st['kernel']}"
        st["workers"] = rng.randint(1, 4)
        if st["kernel"] == "sleep":
            st["params"]["ms"] = max(0, min(30, round(target_ms * st["workers"] / n_est * rng.uniform(0.3, 1.0))))
    options = {"capacity": rng.choice([1, 2, 3, 4, 8, 16, 64]), "retries": opt_retries,
               "backoff": rng.choice(["50ms", "100ms"] if gap else ["1ms", "2ms", "5ms", "20ms", "50ms"])}
    flags = []
    ordered = sink in ("print_ordered", "checksums", "file", "concat")
    if sink == "print_ordered" or (ordered and rng.random() < 0.3):
        if rng.random() < 0.5:
            flags.append("--keep-order")
        else:
            options["ordered"] = True
    if rng.random() < 0.2:
        flags += ["--capacity", str(rng.randint(1, 8))]
    if rng.random() < 0.1:
        flags += ["-j", str(rng.randint(1, 3))]
    sink_spec = {"type": "print" if sink.startswith("print") else sink}
    if sink_spec["type"] == "print":
        sink_spec["format"] = rng.choice(["{value}", "{id} {value}", "item={id} in={input} v={value}", "{id}"])
    elif sink == "topk":
        sink_spec["k"] = rng.randint(1, 15)
    elif sink == "file":
        sink_spec["path"] = f"{d}/out/result.bin"  # the chain uses its own copy of the path (see run_chain)
    if ordered:
        bound_ordered_backoff(stages, options, flags, n_est)
    spec = {"name": f"random-{sink}", "source": src, "stages": stages, "sink": sink_spec, "options": options}
    return {"spec": spec, "flags": flags, "sink": sink, "ordered": ordered, "expected_n": expected_n,
            "variant": None}


# ---------------------------------------------------------------------------------------------
# Running


class Run:
    """One flowpool process: its command line, how it was stopped, and what came out."""

    def __init__(self, argv, label):
        self.argv, self.label = argv, label
        self.stop = ""
        self.rc = None
        self.out = b""
        self.err = b""
        self.report = None
        self.log_lines = []  # the joblog's data lines this run added

    def command(self):
        s = " ".join(shlex.quote(a) for a in self.argv)
        return f"{self.label}: {s}" + (f"   [{self.stop}]" if self.stop else "")


def run_process(argv, label, sig=None, delay=0.0):
    r = Run(argv, label)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    ended = None
    if sig is not None:
        r.stop = f"{signal.Signals(sig).name} after {delay * 1000:.0f} ms"
        try:
            ended = p.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
        else:
            r.stop += " (it had already ended)"
    try:
        out, err = ended if ended is not None else p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        r.rc, r.out, r.err = "hang", out, err
        raise GraphFailure(f"hang: {label} did not end within {RUN_TIMEOUT:.0f} s (killed)\n  {r.command()}")
    r.rc, r.out, r.err = p.returncode, out, err
    if sig == signal.SIGKILL and ended is None and r.rc != -signal.SIGKILL:
        # The process exited on its own between the delay running out and the kill (a kill of
        # a process that has already exited does nothing): SIGKILL cannot be caught, so any
        # other exit status means the run ended by itself.
        r.stop += " (it had already ended)"
    return r


def parse_joblog(text):
    lines = []
    for raw in text.splitlines():
        if not raw or raw.startswith("#"):
            continue
        f = raw.split("\t")
        if len(f) < 5:
            raise GraphFailure(f"joblog: malformed line {raw!r}")
        lines.append((int(f[0]), f[1]))
    return lines


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


class Checker:
    def __init__(self, g, d):
        self.g, self.d = g, d
        self.runs = []

    def may_rerun(self):
        """Whether a resume may run again items that succeeded: the file sink runs again every item
        after its saved prefix (docs/graph-spec.md), and after a failed run, whose aggregate is not
        saved (nor after kill -9), an aggregate sink may run everything again rather than refuse."""
        sink = self.g["sink"]
        unsaved = self.g["variant"].startswith(("halt", "kill9"))
        return sink == "file" or (unsaved and sink in ("count", "sum", "topk"))

    def fail(self, what):
        raise GraphFailure(what)

    def expect(self, cond, what):
        if not cond:
            self.fail(what)

    def execute(self, label, spec_path, extra, joblog, report, sig=None, delay=0.0):
        argv = [BIN, "run", spec_path, "-q", *self.g["flags"], *extra, "--joblog", joblog, "--report", report]
        before = read(joblog) if os.path.exists(joblog) else ""
        if os.path.exists(report):
            os.remove(report)
        r = run_process(argv, label, sig, delay)
        self.runs.append(r)
        r.before_start = False
        if sig not in (None, signal.SIGKILL) and r.rc == -sig and not os.path.exists(report):
            # The signal came before flowpool set up its handlers (it dies by the signal, as
            # any program does then): accepted only if the run had not started.
            self.expect(read(joblog) == before if os.path.exists(joblog) else True,
                        f"{label}: killed by {signal.Signals(sig).name} after it had written to the joblog")
            r.before_start = True
            self.g["early"] = self.g.get("early", 0) + 1
        after = read(joblog) if os.path.exists(joblog) else ""
        if r.rc == -signal.SIGKILL:
            after = after[: after.rfind("\n") + 1]  # kill -9 may cut the last line short
        r.kept_old_lines = bool(parse_joblog(before)) and after.startswith(before)
        if after.startswith(before):
            r.log_lines = parse_joblog(after[len(before):])
        else:  # the run started the joblog over
            r.log_lines = parse_joblog(after)
            r.log_restarted = True
        if os.path.exists(report):
            r.report = json.loads(read(report))
        return r

    def check_run(self, r, n, resumed, done_before, completed_expected=None):
        """Per-run checks: exit code and status, counts, one joblog line per submitted item."""
        who = r.label
        if r.before_start or r.rc == -signal.SIGKILL:  # nothing to check: no report, the joblog so far
            return
        if r.rc not in STATUS_OF_RC:
            self.fail(f"{who}: exit code {r.rc} (stderr: {r.err.decode(errors='replace')[-400:]!r})")
        if r.stop.startswith("SIGINT") and "already ended" not in r.stop:
            self.expect(r.rc in (0, 1, 130), f"{who}: exit {r.rc} after SIGINT (want 130, or 0/1 if it had ended)")
        if r.stop.startswith("SIGTERM") and "already ended" not in r.stop:
            self.expect(r.rc in (0, 1, 143), f"{who}: exit {r.rc} after SIGTERM (want 143, or 0/1 if it had ended)")
        if r.report is None:
            self.fail(f"{who}: no --report written (exit {r.rc})")
        rep = r.report
        self.expect(rep["status"] == STATUS_OF_RC[r.rc],
                    f"{who}: exit {r.rc} but report status {rep['status']!r} (want {STATUS_OF_RC[r.rc]!r})")
        s, ok, fl, ca, sk = (rep[k] for k in ("submitted", "succeeded", "failed", "cancelled", "skipped"))
        self.expect(s == ok + fl + ca, f"{who}: counts do not add up: submitted {s} != {ok} + {fl} + {ca}")
        self.expect(s + sk <= n, f"{who}: submitted {s} + skipped {sk} > {n} source items")
        if not resumed:
            self.expect(sk == 0, f"{who}: a fresh run reports skipped {sk}")
            self.expect(not r.kept_old_lines, f"{who}: a fresh run (no --resume) appended to an existing joblog")
        if rep["status"] in ("ok", "failed") and not r.stop.startswith("halt"):
            self.expect(s + sk == n, f"{who}: a complete run covered submitted {s} + skipped {sk} of {n} items")
            if resumed and not self.may_rerun():
                self.expect(sk == len(done_before),
                            f"{who}: skipped {sk}, but the joblog had {len(done_before)} succeeded items")
        if rep["status"] == "ok":
            self.expect(fl == 0 and ca == 0, f"{who}: status ok with {fl} failed, {ca} cancelled")
        if rep["status"] == "interrupted":
            self.expect("signal" in rep, f"{who}: interrupted report without 'signal'")
        # the joblog: one line per submitted item, none for a skipped one
        ids = [i for i, _ in r.log_lines]
        dup = [i for i, c in collections.Counter(ids).items() if c > 1]
        self.expect(not dup, f"{who}: joblog has several lines for items {sorted(dup)[:10]}")
        self.expect(len(ids) == s, f"{who}: {len(ids)} joblog lines for {s} submitted items")
        bad = [i for i in ids if i < 1 or i > n]
        self.expect(not bad, f"{who}: joblog ids out of 1..{n}: {bad[:10]}")
        tally = collections.Counter(st for _, st in r.log_lines)
        self.expect((tally["succeeded"], tally["failed"], tally["cancelled"]) == (ok, fl, ca),
                    f"{who}: joblog says {dict(tally)}, report says {ok} succeeded, {fl} failed, {ca} cancelled")
        if resumed and not self.may_rerun():
            again = sorted(set(ids) & done_before)
            self.expect(not again, f"{who}: ran again items that had succeeded: {again[:10]}")
        if getattr(r, "log_restarted", False) and resumed:
            self.fail(f"{who}: --resume did not append to the joblog")


def lines_multiset(b):
    return collections.Counter(b.split(b"\n"))


def compare_output(ck, ref_out, chain_out, exact, what):
    if exact:
        if ref_out != chain_out:
            at = next((k for k, (a, b) in enumerate(zip(ref_out, chain_out)) if a != b),
                      min(len(ref_out), len(chain_out)))
            lo = max(0, at - 40)
            ck.fail(f"output differs ({what}): reference {len(ref_out)} bytes, chain {len(chain_out)} bytes, "
                    f"first difference at byte {at}\n  reference[{lo}:]: {ref_out[lo:lo + 200]!r}\n"
                    f"  chain[{lo}:]:     {chain_out[lo:lo + 200]!r}")
    else:
        a, b = lines_multiset(ref_out), lines_multiset(chain_out)
        if a != b:
            ck.fail(f"output differs as a multiset of lines ({what}): only in the reference: "
                    f"{list((a - b).elements())[:5]}, only in the chain: {list((b - a).elements())[:5]}")


def validate_flags(g):
    """`validate` takes only --set: the run flags as the overrides they stand for (docs/cli.md)."""
    out, f = [], g["flags"]
    for k, a in enumerate(f):
        if a == "--keep-order":
            out += ["--set", "options.ordered=true"]
        elif a == "--capacity":
            out += ["--set", f"options.capacity={f[k + 1]}"]
        elif a == "-j":
            for s in range(len(g["spec"]["stages"])):
                out += ["--set", f"stages[{s}].workers={f[k + 1]}"]
    return out


def run_graph(seed, index, base, stress):
    rng = random.Random(f"{seed}:{index}")
    d = os.path.join(base, f"g{index}")
    os.makedirs(d)
    g = generate(rng, d, stress)
    spec = g["spec"]
    ck = Checker(g, d)
    spec_path = f"{d}/spec.json"
    write(spec_path, json.dumps(spec, indent=1).encode())
    try:
        v = subprocess.run([BIN, "validate", spec_path, *validate_flags(g)], capture_output=True, timeout=RUN_TIMEOUT)
        if v.returncode != 0:
            raise GraphFailure(f"validate: exit {v.returncode}: {v.stderr.decode(errors='replace')}")
        check_graph(rng, g, ck, d, spec_path)
        return None, g
    except GraphFailure as e:
        g["failure"] = re.sub(r"[0-9]+", "N", str(e).split("\n")[0])[:70]  # its class, for the summary
        return failure_text(seed, index, g, ck, spec_path, str(e), stress), g


def failure_text(seed, index, g, ck, spec_path, why, stress):
    group = "AccountingStress" if stress else "AccountingTests0"
    t = [f"graph {index} of seed {seed} ({g['sink']} sink, chain: {g['variant']}): {why}",
         f"  reproduce: {'FLOWPOOL_TEST_STRESS=1 ' if stress else ''}FLOWPOOL_TEST_SEED={seed} "
         f"FLOWPOOL_TEST_ONLY={index} FLOWPOOL_TEST_KEEP=/tmp/fp-repro "
         f"python3 {os.path.abspath(__file__)} {BIN} {REPO} {group}",
         f"  spec ({spec_path}): {json.dumps(g['spec'], separators=(',', ':'))}",
         "  runs:"]
    for r in ck.runs:
        err = r.err.decode(errors="replace").strip().replace("\n", " | ")[-300:]
        t.append(f"    {r.command()}\n      -> exit {r.rc}, {len(r.out)} bytes out"
                 + (f", stderr: {err}" if err else ""))
    return "\n".join(t)


def check_graph(rng, g, ck, d, spec_path):
    sink = g["sink"]
    # (a) the reference: one uninterrupted run
    ref_log, ref_rep = f"{d}/ref.joblog", f"{d}/ref.report.json"
    spec = g["spec"]
    if sink == "file":
        ref_file = spec["sink"]["path"]
        os.makedirs(os.path.dirname(ref_file), exist_ok=True)
    t0 = time.monotonic()
    ref = ck.execute("reference", spec_path, [], ref_log, ref_rep)
    ref_wall = time.monotonic() - t0
    n = ref.report["submitted"] if ref.report else 0
    if g["expected_n"] is not None:
        ck.expect(n == g["expected_n"], f"reference: submitted {n}, the source has {g['expected_n']} items")
    ck.expect(ref.rc in (0, 1), f"reference: exit {ref.rc} (stderr: {ref.err.decode(errors='replace')[-300:]!r})")
    ck.check_run(ref, n, False, set())
    ref_failed = {i for i, st in ref.log_lines if st == "failed"}
    ck.expect((ref.rc == 1) == bool(ref_failed),
              f"reference: exit {ref.rc} with failed items {sorted(ref_failed)[:10]}")
    ck.expect(ref.report["cancelled"] == 0, "reference: cancelled items in a run nothing stopped")
    if sink == "file":
        ck.expect(ref.rc == 0, "reference: the file sink graph failed")
        ref_out = read(ref_file, "rb")
        ck.expect(ref.out == b"", "reference: the file sink wrote to stdout")
        ck.expect(not os.path.exists(ref_file + ".partial"), "reference: .partial left after a successful run")
    else:
        ref_out = ref.out
    ok = ref.report["succeeded"]
    if sink == "count" and ref.rc == 0:  # (what a failed run prints for an aggregate is not pinned down here)
        ck.expect(ref_out == f"{ok}\n".encode(), f"reference: count printed {ref_out!r} for {ok} succeeded")
    if sink in ("print", "print_ordered", "checksums"):
        nl = ref_out.count(b"\n")
        ck.expect(nl == ok, f"reference: {nl} lines for {ok} succeeded")
    if sink == "print_ordered" and spec["sink"]["format"].startswith("{id}"):
        got = [int(l.split()[0]) for l in ref_out.decode().splitlines()]
        ck.expect(got == sorted(got), "reference: ordered print is out of order")
    if sink == "sum" and spec["source"]["type"] == "range" and not ref_failed:
        st, c = spec["source"]["start"], spec["source"]["count"]
        ck.expect(ref_out == f"{sum(range(st, st + c))}\n".encode(), f"reference: sum printed {ref_out!r}")

    # (b) the chain: stopped at a random moment, then --resume until a run completes
    fail_stages = [k for k, st in enumerate(spec["stages"]) if st["kernel"] == "fail"]
    choices = ["sigint"] * 6 + ["sigterm", "timeout", "kill9"]
    if fail_stages and not ref_failed:
        choices.append("halt")
    variant = g["variant"] = rng.choice(choices)
    log, rep = f"{d}/chain.joblog", f"{d}/chain.report.json"
    chain_spec_path = spec_path
    if sink == "file":  # the chain writes its own output file
        chain_spec = json.loads(json.dumps(spec))
        chain_file = chain_spec["sink"]["path"] = f"{d}/out2/result.bin"
        os.makedirs(os.path.dirname(chain_file))
        chain_spec_path = f"{d}/chain-spec.json"
        write(chain_spec_path, json.dumps(chain_spec, indent=1).encode())
    if variant != "kill9" and rng.random() < 0.1:  # a stale joblog: a fresh run must start over or refuse
        shutil.copy(ref_log, log)
        g["variant"] += "+stale-joblog"
    first_extra, sig, delay = [], None, 0.0
    if variant in ("sigint", "sigterm", "kill9"):
        sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "kill9": signal.SIGKILL}[variant]
        delay = max(0.02, rng.uniform(0.1, 1.0) * ref_wall)  # after start-up (about 15 ms), mostly
    elif variant == "timeout":
        first_extra = ["--timeout", f"{max(5, int(rng.uniform(0.2, 1.0) * ref_wall * 1000))}ms"]
    else:  # halt: the first run has items that fail for good, and a failure policy stops it
        k = rng.choice(fail_stages)
        bad = sorted(rng.sample(range(1, n + 1), rng.randint(1, min(3, n))))
        first_extra = ["--set", f"stages[{k}].params.ids={json.dumps(bad)}", "--set",
                       f"stages[{k}].params.fail_attempts=0", "--set", f"stages[{k}].params.probability=0"]
        first_extra += ["--halt", rng.choice(["now", f"soon,fail={rng.randint(1, len(bad))}"])]
    first = ck.execute("run 1", chain_spec_path, first_extra, log, rep, sig, delay)
    if first.rc == 2 and os.path.exists(log) and "+stale-joblog" in g["variant"]:
        ck.expect(b"joblog" in first.err, f"run 1: exit 2 on a stale joblog without naming it: {first.err!r}")
        os.remove(log)  # the refusal is documented behaviour: start over, as a user would
        ck.runs.pop()
        first = ck.execute("run 1 (joblog removed)", chain_spec_path, first_extra, log, rep, sig, delay)
    if first.before_start and "+stale-joblog" in g["variant"]:
        os.remove(log)  # it never started, so it never started the joblog over either
    first.stop = first.stop or ("halt: " + " ".join(first_extra[-2:]) if variant == "halt" else variant)
    ck.check_run(first, n, False, set())
    if variant == "halt":
        ck.expect(first.rc == 1, f"run 1: exit {first.rc} where --halt stopped the run (want 1)")
        ck.expect("cause" in first.report, "run 1: a run --halt stopped has no 'cause' in its report")
    if variant == "timeout":
        ck.expect(first.rc in (0, 1, 3), f"run 1: exit {first.rc} with --timeout (want 3, or 0/1 if it ended)")
    runs = [first]
    g["stopped"] = first.rc not in (0, 1) or variant == "halt"
    done = {i for i, st in first.log_lines if st == "succeeded"}
    refused = False
    while runs[-1].rc not in (0, 1) or (variant == "halt" and len(runs) == 1):
        if len(runs) > MAX_RESUMES:
            ck.fail(f"the chain did not complete after {MAX_RESUMES} resumes")
        last = len(runs) == MAX_RESUMES
        rsig = None if last or rng.random() < 0.7 else rng.choice([signal.SIGINT, signal.SIGTERM])
        rdelay = max(0.02, rng.uniform(0.1, 0.8) * ref_wall)
        r = ck.execute(f"run {len(runs) + 1}", chain_spec_path, ["--resume"], log, rep, rsig, rdelay)
        if r.rc == 2 and variant in ("halt", "kill9") and sink in ("count", "sum", "topk"):
            # "The resume must either restore an aggregate that covers exactly the items it
            # skips, or refuse with a clear message" (after a failed or killed run, no state
            # was saved).
            ck.expect(r.err.startswith(b"flowpool: "), f"{r.label}: exit 2 without a message")
            refused = True
            break
        ck.check_run(r, n, True, done)
        runs.append(r)
        done |= {i for i, st in r.log_lines if st == "succeeded"}
    g["resumes"] = len(runs) - 1 + (1 if refused else 0)
    if refused:
        g["refused"] = True
        return
    final = runs[-1]
    ck.expect(final.rc == ref.rc, f"{final.label}: the chain ends with exit {final.rc}, the reference with {ref.rc}")

    # every item's final state equals the reference's, and succeeded once (the file sink
    # runs again the items after its saved prefix)
    last_state, succ = {}, collections.Counter()
    for r in runs:
        for i, st in r.log_lines:
            last_state[i] = st
            if st == "succeeded":
                succ[i] += 1
    want = {i: ("failed" if i in ref_failed else "succeeded") for i in range(1, n + 1)}
    wrong = sorted(i for i in want if last_state.get(i) != want[i])
    ck.expect(not wrong, f"final joblog state differs from the reference for items {wrong[:10]} "
                         f"(e.g. {wrong[0] if wrong else 0}: {last_state.get(wrong[0]) if wrong else ''} "
                         f"where the reference has {want[wrong[0]] if wrong else ''})")
    if not ck.may_rerun():
        twice = sorted(i for i, c in succ.items() if c > 1)
        ck.expect(not twice, f"items succeeded in several runs of the chain: {twice[:10]}")
    chain_failed = {i for i, st in last_state.items() if st == "failed"}
    ck.expect(chain_failed == ref_failed, f"failed items: chain {sorted(chain_failed)[:10]}, "
                                          f"reference {sorted(ref_failed)[:10]}")

    # the output
    if sink == "file":
        for r in runs:
            ck.expect(r.out == b"", f"{r.label}: the file sink wrote to stdout")
        ck.expect(os.path.exists(chain_file), f"the chain left no {chain_file}")
        ck.expect(not os.path.exists(chain_file + ".partial"), "the chain left a .partial after it ended")
        compare_output(ck, ref_out, read(chain_file, "rb"), True, "file")
        return
    chain_out = b"".join(r.out for r in runs)
    if variant in ("halt", "kill9") and sink in ("count", "sum", "topk"):
        # Interpretation: a failed run is no interrupt; whatever partial aggregate it prints,
        # the resume (with its own interrupted resumes) must print the whole run's aggregate.
        # A kill -9 that came after the run had ended on its own leaves that run's aggregate.
        counted = runs if "already ended" in (first.stop or "") else runs[1:]
        compare_output(ck, ref_out, b"".join(r.out for r in counted), True, f"{sink} after a {variant} run")
    elif variant == "kill9":
        # Interpretation: after kill -9, the line sinks are at least once (an item counts as
        # succeeded only once its output is written): nothing lost, nothing foreign.
        unit = (lambda b: collections.Counter(b)) if sink == "concat" else lines_multiset
        lost = unit(ref_out) - unit(chain_out)
        foreign = set(unit(chain_out)) - set(unit(ref_out))
        if lost or foreign:
            ck.fail(f"output after kill -9 and --resume ({sink}): lost {list(lost.elements())[:5]}, "
                    f"foreign {list(foreign)[:5]}")
    elif variant == "halt" and sink == "concat":
        # the resume fills the failed run's gaps after it: the same bytes, in another order
        if sorted(ref_out) != sorted(chain_out):
            ck.fail(f"output differs (concat after a failed run, as a multiset of bytes): reference "
                    f"{len(ref_out)} bytes, chain {len(chain_out)} bytes")
    else:
        # after a failed run, a resume fills the gaps later, so ordered lines come out of order
        exact = sink != "print" and variant != "halt"
        compare_output(ck, ref_out, chain_out, exact, sink)


# ---------------------------------------------------------------------------------------------
# The test groups


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


class Accounting(unittest.TestCase):
    group = 0
    stress = False

    def test_random_graphs(self):
        seed = env_int("FLOWPOOL_TEST_SEED", random.SystemRandom().randint(1, 2**31))
        only = os.environ.get("FLOWPOOL_TEST_ONLY")
        if only not in (None, ""):
            indices = [int(only)]
        elif self.stress:
            indices = list(range(env_int("FLOWPOOL_TEST_GRAPHS", 2000)))
        else:
            total = env_int("FLOWPOOL_TEST_GRAPHS", 400)
            indices = [i for i in range(total) if i % GROUPS == self.group]
        jobs = env_int("FLOWPOOL_TEST_JOBS", 2)
        max_failures = env_int("FLOWPOOL_TEST_MAX_FAILURES", 4)
        print(f"seed {seed}: {len(indices)} graphs (FLOWPOOL_TEST_SEED={seed} reproduces them)", flush=True)
        keep = os.environ.get("FLOWPOOL_TEST_KEEP")
        base = tempfile.mkdtemp(prefix="fp-acct-", dir=keep if keep else None)
        failures = []
        stats = collections.Counter()
        kinds = collections.Counter()  # failures by class
        lock = threading.Lock()
        stop = threading.Event()
        t0 = time.monotonic()

        def one(i):
            if stop.is_set():
                return
            t = time.monotonic()
            f, g = run_graph(seed, i, base, self.stress)
            with lock:
                stats["seconds in graphs that hung"] += round(time.monotonic() - t) if f and "hang:" in f else 0
                stats[f"sink {g['sink']}"] += 1
                stats[f"chain {g['variant']}"] += 1
                stats["stopped mid-run"] += bool(g.get("stopped"))
                stats["resumes"] += g.get("resumes", 0)
                stats["signalled before start-up"] += g.get("early", 0)
                stats["resume refused"] += bool(g.get("refused"))
                if g.get("failure"):
                    kinds[f"{g['sink']} sink, {str(g['variant']).split('+')[0]}: {g['failure']}"] += 1
            if f:
                with lock:
                    failures.append(f)
                    print(f"\nFAIL {f}\n", flush=True)
                    if len(failures) >= max_failures:
                        stop.set()

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
                list(ex.map(one, indices))
        finally:
            if not keep:
                shutil.rmtree(base, ignore_errors=True)
        print(f"seed {seed}: {len(indices)} graphs in {time.monotonic() - t0:.1f} s, {len(failures)} failed"
              + (" (stopped early)" if stop.is_set() else ""), flush=True)
        print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())), flush=True)
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"  {v:4d} x {k}", flush=True)
        self.assertEqual(failures, [], f"seed {seed}: {len(failures)} graphs failed (see above)")


for _g in range(GROUPS):
    globals()[f"AccountingTests{_g}"] = type(f"AccountingTests{_g}", (Accounting,), {"group": _g})


class AccountingStress(Accounting):
    stress = True


del Accounting  # only the concrete groups are test classes

if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if sys.argv[3:] == ["AccountingStress"] and os.environ.get("FLOWPOOL_TEST_STRESS") != "1":
        print("AccountingStress runs only with FLOWPOOL_TEST_STRESS=1 (skipped)")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
