#!/usr/bin/env python3
"""End-to-end tests of the CLI's observability outputs: --report metrics, --metrics (Prometheus),
--trace (Chrome Trace Event JSON), --timeline (SVG) and `dot --report`.

Run by ctest: test_observability.py FLOWPOOL_BINARY REPO_DIR TestClass."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

BIN = None
REPO = None


def run(*args, timeout=120):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*,?)?\}})? (\S+)(?: (-?\d+))?$")
VALUE = re.compile(r"^[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|Inf|NaN)$")


def check_exposition(text):
    """Checks the Prometheus text exposition format rules (0.0.4). Returns a list of problems."""
    problems = []
    types = {}
    seen = set()
    buckets = {}  # (family, labels without le) -> [(le, value)]
    counts = {}
    families_done = set()
    current = None
    if not text.endswith("\n"):
        problems.append("does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}: {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if not re.fullmatch(NAME, parts[2]):
                    problems.append(f"{where}: bad metric name")
                if parts[1] == "TYPE":
                    if parts[2] in types:
                        problems.append(f"{where}: second TYPE for {parts[2]}")
                    if len(parts) < 4 or parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                        problems.append(f"{where}: bad type")
                    types[parts[2]] = parts[3] if len(parts) == 4 else None
            continue
        if not line.strip():
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append(f"{where}: not a sample line")
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if not VALUE.match(value):
            problems.append(f"{where}: bad value")
            continue
        family = name
        for sfx in ("_bucket", "_sum", "_count"):
            if name.endswith(sfx) and types.get(name[: -len(sfx)]) == "histogram":
                family = name[: -len(sfx)]
        if family not in types:
            problems.append(f"{where}: sample before its TYPE line")
        if family != current:  # a family's samples must be contiguous
            if family in families_done:
                problems.append(f"{where}: samples of {family} are not grouped together")
            if current is not None:
                families_done.add(current)
            current = family
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"', labels)
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            problems.append(f"{where}: repeated label")
        key = (name, tuple(sorted(pairs)))
        if key in seen:
            problems.append(f"{where}: duplicate series")
        seen.add(key)
        v = float(value.replace("Inf", "inf"))
        if types.get(family) == "counter" and v < 0:
            problems.append(f"{where}: negative counter")
        rest = tuple(sorted(p for p in pairs if p[0] != "le"))
        if types.get(family) == "histogram":
            if name.endswith("_bucket"):
                le = dict(pairs).get("le")
                if le is None:
                    problems.append(f"{where}: bucket without le")
                    continue
                buckets.setdefault((family, rest), []).append((float(le.replace("Inf", "inf")), v))
            elif name.endswith("_count"):
                counts[(family, rest)] = v
    for key, bs in buckets.items():
        les = [le for le, _ in bs]
        if les != sorted(les):
            problems.append(f"{key}: buckets not in increasing le order")
        if not math.isinf(les[-1]):
            problems.append(f"{key}: no +Inf bucket")
        vals = [v for _, v in bs]
        if vals != sorted(vals):
            problems.append(f"{key}: bucket counts not cumulative")
        if counts.get(key) != vals[-1]:
            problems.append(f"{key}: +Inf bucket != _count")
    if not types:
        problems.append("no metric families")
    return problems


class ReportMetricsTests(unittest.TestCase):
    def test_report_has_metrics_per_stage(self):
        with tempfile.TemporaryDirectory() as d:
            rep = os.path.join(d, "r.json")
            rc, out, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--report", rep)
            self.assertEqual(rc, 1, err)
            with open(rep) as f:
                r = json.load(f)
            self.assertIn("metrics", r)
            for st in r["stages"]:
                m = st["metrics"]
                for key in ("submitted", "started", "succeeded", "failed", "retried", "cancelled", "queue_depth",
                            "max_queue_depth", "busy_workers", "busy_ms", "saturation", "throughput_per_s"):
                    self.assertIn(key, m)
                self.assertEqual(m["submitted"], m["succeeded"] + m["failed"] + m["cancelled"])
                self.assertEqual(m["succeeded"], st["succeeded"])
                self.assertLessEqual(m["max_queue_depth"], 8)  # options.capacity
                self.assertEqual(m["started"], m["run_time"]["count"])
                for h in ("queue_wait", "run_time"):
                    for p in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
                        self.assertIn(p, m[h])
                    self.assertLessEqual(m[h]["p50_ms"], m[h]["p99_ms"])
                    self.assertLessEqual(m[h]["p99_ms"], m[h]["max_ms"] + 1e-9)
                    self.assertEqual(sum(c for _, c in m[h]["buckets"]), m[h]["count"])
                self.assertGreaterEqual(st["saturation"], 0)
                self.assertLessEqual(st["saturation"], 1.0)
            flaky = r["stages"][0]["metrics"]
            self.assertEqual(flaky["retried"], 6)  # items 3, 7, 11 fail twice each
            self.assertEqual(flaky["started"], 20 + 6)

    def test_dot_annotates_saturation_and_p99(self):
        with tempfile.TemporaryDirectory() as d:
            rep = os.path.join(d, "r.json")
            rc, _, err = run("run", f"{REPO}/graphs/seed.json", "-q", "--report", rep)
            self.assertEqual(rc, 0, err)
            rc, out, err = run("dot", f"{REPO}/graphs/seed.json", "--report", rep)
            self.assertEqual(rc, 0, err)
            self.assertRegex(out, r"saturation 0?\.\d+|saturation 1")
            m = re.search(r"p99 (\d+(?:\.\d+)?) ms", out)
            self.assertIsNotNone(m, out)
            self.assertGreaterEqual(float(m.group(1)), 50.0)  # 50 ms sleeps never take less

    def test_dot_refuses_a_report_of_another_graph(self):
        # Figures are matched to stages by position: a report of another graph
        # would label the wrong stages, so it is refused with both stage lists.
        with tempfile.TemporaryDirectory() as d:
            rep = os.path.join(d, "r.json")
            rc, _, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--report", rep)
            self.assertIn(rc, (0, 1), err)  # job 13 fails by design
            rc, out, err = run("dot", f"{REPO}/graphs/seed.json", "--report", rep)
            self.assertEqual(rc, 2, err)
            self.assertEqual(out, "")
            self.assertIn(rep, err)
            self.assertIn('graph "retries" with stages [flaky, broken], not of "seed" with stages [work]', err)


class PrometheusTests(unittest.TestCase):
    def test_metrics_file_parses(self):
        with tempfile.TemporaryDirectory() as d:
            prom = os.path.join(d, "flowpool.prom")
            rc, _, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--metrics", prom)
            self.assertEqual(rc, 1, err)
            with open(prom) as f:
                text = f.read()
            self.assertEqual(check_exposition(text), [])
            self.assertIn('flowpool_jobs_failed_total{graph="retries",stage="broken"} 1\n', text)
            self.assertIn('flowpool_job_retries_total{graph="retries",stage="flaky"} 6\n', text)
            self.assertRegex(text, r'flowpool_run_time_seconds_bucket\{graph="retries",stage="flaky",le="\+Inf"\} 26\n')
            self.assertFalse(os.path.exists(prom + ".tmp"))
            promtool = shutil.which("promtool")
            if promtool:
                p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                   timeout=60)
                # promtool exits 0 when the format is valid; lint notes (e.g. on naming) go to stdout/stderr.
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            else:
                print("promtool not installed: checked with the format rules only", file=sys.stderr)

    def test_checker_rejects_broken_input(self):
        self.assertTrue(check_exposition("flowpool_x 1\n"))  # no TYPE
        self.assertTrue(check_exposition('# TYPE a counter\na{x="1} 1\n'))
        self.assertTrue(check_exposition('# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="+Inf"} 4\nh_count 4\n'))
        self.assertTrue(check_exposition("# TYPE a counter\na -1\n"))
        self.assertEqual(check_exposition('# TYPE a counter\na{x="y"} 1\n'), [])

    def test_metrics_rewritten_during_the_run(self):
        with tempfile.TemporaryDirectory() as d:
            prom = os.path.join(d, "live.prom")
            spec = ["--set", "source.count=40", "--set", "stages[0].params.ms=30", "-j", "2"]
            p = subprocess.Popen([BIN, "run", f"{REPO}/graphs/seed.json", "-q", "--metrics", prom,
                                  "--metrics-interval", "50ms", *spec],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # 40 jobs of 30 ms on 2 workers take about 600 ms: a 50 ms interval writes
            # the file many times before the end. Every version read must parse, and
            # at least two must be mid-run ones (fewer than 40 succeeded), different
            # from each other: the file is rewritten during the run, not only at the end.
            succeeded_re = re.compile(r'^flowpool_jobs_succeeded_total\{graph="seed",stage="work"\} (\d+)$', re.M)
            mid_run = set()
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline:
                if os.path.exists(prom):
                    try:
                        with open(prom) as f:
                            live = f.read()
                    except FileNotFoundError:
                        live = None
                    if live is not None:
                        self.assertEqual(check_exposition(live), [])  # never half-written (temp file + rename)
                        m = succeeded_re.search(live)
                        self.assertIsNotNone(m, live)
                        if int(m.group(1)) < 40:
                            mid_run.add(int(m.group(1)))
                time.sleep(0.005)
            _, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
            self.assertGreaterEqual(len(mid_run), 2, f"mid-run versions seen: {sorted(mid_run)}")
            with open(prom) as f:
                final = f.read()
            self.assertIn('flowpool_jobs_succeeded_total{graph="seed",stage="work"} 40\n', final)

    def test_bad_interval_is_a_usage_error(self):
        rc, _, err = run("run", f"{REPO}/graphs/seed.json", "-q", "--metrics", "/tmp/x.prom",
                         "--metrics-interval", "soon")
        self.assertEqual(rc, 2)
        self.assertIn("--metrics-interval", err)


def load_trace(path):
    with open(path) as f:
        return json.load(f)


class TraceTests(unittest.TestCase):
    def check_trace(self, doc, expected_attempts):
        events = doc["traceEvents"]
        xs = [e for e in events if e["ph"] == "X"]
        self.assertEqual(len(xs), expected_attempts)
        keys = set()
        by_track = {}
        for e in xs:
            for k in ("job", "attempt", "status"):
                self.assertIn(k, e["args"])
            key = (e["pid"], e["args"]["job"], e["args"]["attempt"])
            self.assertNotIn(key, keys, "one event per attempt")
            keys.add(key)
            start = round(e["ts"] * 1000)
            by_track.setdefault((e["pid"], e["tid"]), []).append((start, start + round(e["dur"] * 1000)))
        for track, spans in by_track.items():
            spans.sort()
            for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
                self.assertGreaterEqual(s1, e0, f"overlapping events on {track}")
        counters = {e["name"] for e in events if e["ph"] == "C"}
        self.assertEqual(counters, {"queue_depth", "busy_workers"})
        names = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
        self.assertGreater(len(names), 0)
        return xs

    def test_trace_retries(self):
        with tempfile.TemporaryDirectory() as d:
            tr, rep = os.path.join(d, "t.json"), os.path.join(d, "r.json")
            rc, _, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--trace", tr, "--report", rep)
            self.assertEqual(rc, 1, err)
            with open(rep) as f:
                r = json.load(f)
            started = sum(st["metrics"]["started"] for st in r["stages"])
            xs = self.check_trace(load_trace(tr), started)
            statuses = {e["args"]["status"] for e in xs}
            self.assertIn("retrying", statuses)
            self.assertIn("failed", statuses)
            self.assertEqual(load_trace(tr)["otherData"]["dropped_events"], 0)

    def test_trace_multi_stage_tracks(self):
        with tempfile.TemporaryDirectory() as d:
            tr = os.path.join(d, "t.json")
            rc, _, err = run("run", f"{REPO}/graphs/multi-stage.json", "-q", "--trace", tr,
                             "--set", "source.count=12", "--set", "stages[1].params.iterations=1000")
            self.assertEqual(rc, 0, err)
            doc = load_trace(tr)
            xs = self.check_trace(doc, 36)
            self.assertEqual({e["pid"] for e in xs}, {1, 2, 3})
            self.assertLessEqual(max(e["tid"] for e in xs if e["pid"] == 3), 1)  # store has 1 worker

    def test_trace_limit_drops_and_says_so(self):
        with tempfile.TemporaryDirectory() as d:
            tr = os.path.join(d, "t.json")
            rc, _, err = run("run", f"{REPO}/graphs/seed.json", "--trace", tr, "--trace-limit", "5",
                             "--set", "source.count=30", "--set", "stages[0].params.ms=1", "--no-progress")
            self.assertEqual(rc, 0, err)
            doc = load_trace(tr)
            kept = sum(1 for e in doc["traceEvents"] if e["ph"] == "X") + \
                sum(1 for e in doc["traceEvents"] if e["ph"] == "C") // 2
            self.assertLessEqual(kept, 5)
            self.assertGreater(doc["otherData"]["dropped_events"], 0)
            self.assertRegex(err, r"trace: kept \d+ events, dropped \d+")


class TimelineTests(unittest.TestCase):
    def test_svg_is_well_formed_with_one_bar_per_attempt(self):
        with tempfile.TemporaryDirectory() as d:
            svg, rep = os.path.join(d, "t.svg"), os.path.join(d, "r.json")
            rc, _, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--timeline", svg, "--report", rep)
            self.assertEqual(rc, 1, err)
            xmllint = shutil.which("xmllint")
            self.assertIsNotNone(xmllint, "xmllint (libxml2-utils) is needed")
            p = subprocess.run([xmllint, "--noout", svg], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(rep) as f:
                r = json.load(f)
            started = sum(st["metrics"]["started"] for st in r["stages"])
            p = subprocess.run([xmllint, "--xpath", "count(//*[local-name()='rect'][@class='attempt'])", svg],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(int(float(p.stdout.strip())), started)
            with open(svg) as f:
                text = f.read()
            for piece in ('class="queue-depth"', 'class="axis"', 'class="legend"', "worker 4", "succeeded",
                          "retrying"):
                self.assertIn(piece, text)
            # The depth label is the run's exact maximum, not the highest 1 ms sample.
            for st in r["stages"]:
                self.assertIn(f'>max {max(1, st["max_queue_depth"])}</text>', text)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
