#!/usr/bin/env python3
"""End-to-end tests of --joblog and --resume with every kind of sink: the resume state
stays in step with the joblog (failed runs, kill -9 at a random moment, a stale state),
a fresh run starts a new joblog, write errors fail the run, the file sink never
truncates its input and stays bounded after a gap, and special joblog files work.

Run by ctest: test_resume_sinks.py FLOWPOOL_BINARY REPO_DIR TestClass.
Randomized tests print their seed and honour FLOWPOOL_TEST_SEED."""
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = None
REPO = None
SEED = int(os.environ.get("FLOWPOOL_TEST_SEED", str(random.SystemRandom().randrange(1 << 30))))


def graph(name):
    return os.path.join(REPO, "graphs", name)


def run(*args, timeout=120, stdout=None, text=True, env=None):
    if stdout is None:
        p = subprocess.run([BIN, *args], capture_output=True, timeout=timeout, text=text, env=env)
    else:
        p = subprocess.run([BIN, *args], stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, text=text, env=env)
    return p.returncode, p.stdout, p.stderr


def wait_for(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def logged(path):
    """{id: [statuses]} from a joblog."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split("\t")
            out.setdefault(int(fields[0]), []).append(fields[1])
    return out


def succeeded_ids(path):
    return {i for i, s in logged(path).items() if "succeeded" in s}


def range_graph(count, sink, ms=1, workers=2, extra_stage=None):
    """Arguments for a range source -> sleep stage (-> extra stage) -> sink."""
    stages = [{"name": "work", "kernel": "sleep", "workers": workers, "params": {"ms": ms}}]
    if extra_stage is not None:
        stages.append(extra_stage)
    return ["run", graph("seed.json"), "--set", f"source.count={count}", "--set", f"sink={json.dumps(sink)}",
            "--set", f"stages={json.dumps(stages)}", "--set", "options.timeout=10m"]


def fail_stage(ids):
    return {"name": "flaky", "kernel": "fail", "workers": 2, "params": {"ids": ids}}


def words_file(d, lines=400, seed=1):
    rnd = random.Random(seed)
    vocab = ["w%d" % i for i in range(60)]
    path = os.path.join(d, "words.txt")
    with open(path, "w") as f:
        for _ in range(lines):
            f.write(" ".join(rnd.choice(vocab) for _ in range(8)) + "\n")
    return path


def topk_graph(src, ms=1, extra_stage=None):
    stages = [{"name": "slow", "kernel": "sleep", "workers": 2, "params": {"ms": ms}}]
    if extra_stage is not None:  # before wordcount: `fail` passes its input on as its value
        stages.append(extra_stage)
    stages.append({"name": "count", "kernel": "wordcount", "workers": 2})
    return ["run", graph("wordcount.json"), "--set", f"source={json.dumps({'type': 'lines', 'path': src})}",
            "--set", f"stages={json.dumps(stages)}", "--set", 'sink={"type":"topk","k":15}']


class AggregateResumeTests(unittest.TestCase):
    """Defect 2: a resumed aggregate (count, sum, topk) covers exactly the items it skips."""

    def test_failed_run_prints_no_partial_aggregate_and_resume_is_exact(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            for sink, whole in (({"type": "sum"}, "210"), ({"type": "count"}, "20")):
                with self.subTest(sink=sink["type"]):
                    rc, out, err = run(*range_graph(20, sink, extra_stage=fail_stage([5, 11])), "--joblog", log)
                    self.assertEqual(rc, 1, err)
                    self.assertEqual(out, "", "a failed run prints no partial aggregate")
                    rc, out, err = run(*range_graph(20, sink, extra_stage=fail_stage([])), "--joblog", log,
                                       "--resume")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out.strip(), whole)

    def test_failed_topk_then_resume(self):
        with tempfile.TemporaryDirectory() as d:
            src, log = words_file(d), os.path.join(d, "jobs.log")
            rc, whole, err = run(*topk_graph(src))
            self.assertEqual(rc, 0, err)
            rc, out, err = run(*topk_graph(src, extra_stage=fail_stage([3, 200])), "--joblog", log)
            self.assertEqual(rc, 1, err)
            self.assertEqual(out, "")
            rc, out, err = run(*topk_graph(src, extra_stage=fail_stage([])), "--joblog", log, "--resume")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, whole)

    def kill9_then_resume(self, args, rnd, low, high):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            p = subprocess.Popen([BIN, *args, "--joblog", log], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(rnd.uniform(low, high))
            p.kill()
            p.communicate(timeout=60)
            rc, out, err = run(*args, "--joblog", log, "--resume")
            self.assertEqual(rc, 0, err)
            return out, os.path.exists(log + ".state")

    def test_kill9_at_random_moment_then_resume(self):
        print(f"seed {SEED}", file=sys.stderr)
        rnd = random.Random(SEED)
        args = range_graph(2000, {"type": "sum"}, ms=2, workers=2)
        for attempt in range(4):
            with self.subTest(attempt=attempt):
                out, state_left = self.kill9_then_resume(args, rnd, 0.1, 2.0)
                self.assertEqual(out.strip(), "2001000", f"seed {SEED}")
                self.assertFalse(state_left, "a finished run removes its state")
        args = range_graph(600, {"type": "count"}, ms=2, workers=2)
        out, _ = self.kill9_then_resume(args, rnd, 0.1, 0.7)
        self.assertEqual(out.strip(), "600", f"seed {SEED}")

    def test_kill9_topk_then_resume(self):
        rnd = random.Random(SEED + 1)
        with tempfile.TemporaryDirectory() as d:
            src = words_file(d, lines=600)
            rc, whole, err = run(*topk_graph(src))
            self.assertEqual(rc, 0, err)
            out, _ = self.kill9_then_resume(topk_graph(src, ms=3), rnd, 0.2, 1.4)
            self.assertEqual(out, whole, f"seed {SEED}")

    def test_stale_state_with_newer_joblog(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            args = [*range_graph(2000, {"type": "sum"}, ms=2, workers=2), "--joblog", log]
            p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.4)
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130)
            self.assertEqual(out, b"")
            with open(log + ".state", "rb") as f:
                stale = f.read()
            with open(log) as f:
                old_log = f.read()
            # A second stretch of the run, resumed and interrupted: the joblog now records more.
            p = subprocess.Popen([BIN, *args, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.6)
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130)
            self.assertGreater(len(succeeded_ids(log)), old_log.count("\tsucceeded\t"))
            with open(log + ".state", "rb") as f:
                newer = f.read()
            # The stale state with the newer joblog: the items it does not cover run again.
            with open(log + ".state", "wb") as f:
                f.write(stale)
            rc, out, err = run(*args, "--resume")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.strip(), "2001000")
            # A state newer than its joblog does not belong to it: refused, nothing runs.
            with open(log, "w") as f:
                f.write(old_log)
            with open(log + ".state", "wb") as f:
                f.write(newer)
            rc, out, err = run(*args, "--resume")
            self.assertEqual(rc, 2, err)
            self.assertEqual(out, "")
            self.assertIn("does not record as succeeded", err)
            self.assertIn(log + ".state", err)

    def test_state_of_another_sink_or_garbage_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            rc, out, err = run(*range_graph(10, {"type": "sum"}, extra_stage=fail_stage([2])), "--joblog", log)
            self.assertEqual(rc, 1, err)
            rc, out, err = run(*range_graph(10, {"type": "count"}), "--joblog", log, "--resume")
            self.assertEqual(rc, 2, err)
            self.assertIn('the state of a "sum" sink', err)
            for garbage in ("", "{", "[1,2]"):
                with open(log + ".state", "w") as f:
                    f.write(garbage)
                rc, out, err = run(*range_graph(10, {"type": "sum"}), "--joblog", log, "--resume")
                self.assertEqual(rc, 2, err)
                self.assertIn("cannot use the saved sink state", err)


class FreshJoblogTests(unittest.TestCase):
    """Defect 3: a run without --resume starts a new joblog and drops a stale FILE.state."""

    def test_fresh_run_truncates_joblog_and_removes_state(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            rc, out, err = run(*range_graph(400, {"type": "print", "format": "{id}"}, ms=0), "--joblog", log)
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(succeeded_ids(log)), 400)
            with open(log + ".state", "w") as f:
                f.write('{"stale": true}')
            args = [*range_graph(400, {"type": "print", "format": "{id}"}, ms=5, workers=2), "--joblog", log]
            p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.4)
            p.send_signal(signal.SIGINT)
            first, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130, err)
            self.assertFalse(os.path.exists(log + ".state"))
            with open(log) as f:
                self.assertEqual(sum(1 for line in f if line.startswith("#")), 1, "one header: a new joblog")
            self.assertLess(len(succeeded_ids(log)), 400)
            rc, second, err = run(*args, "--resume")
            self.assertEqual(rc, 0, err)
            ids = [int(x) for x in (first + second).split()]
            self.assertEqual(sorted(ids), list(range(1, 401)))


class WriteErrorTests(unittest.TestCase):
    """Defect 4: a write error on stdout fails the run, names the cause, and no item it
    did not write is logged as succeeded."""

    def check_full(self, args, log, what):
        with open("/dev/full", "w") as full:
            rc, out, err = run(*args, "--joblog", log, stdout=full)
        self.assertEqual(rc, 1, f"{what}: {err}")
        self.assertIn("No space left on device", err, what)
        self.assertIn(f"{what}: cannot write the output", err)
        self.assertEqual(succeeded_ids(log), set(), f"{what}: nothing was written, nothing succeeded")
        self.assertIn("failed", {s for v in logged(log).values() for s in v})

    def test_dev_full_print_checksums_concat(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            self.check_full(range_graph(50, {"type": "print"}, ms=0), log, "print")
            self.check_full([*range_graph(50, {"type": "print"}, ms=0), "--keep-order"], log, "print")
            self.check_full(range_graph(50, {"type": "concat"}, ms=0), log, "concat")
            tree = os.path.join(d, "tree")
            os.mkdir(tree)
            for i in range(20):
                with open(os.path.join(tree, f"f{i:02d}"), "w") as f:
                    f.write("x" * i)
            self.check_full(["run", graph("sha256-tree.json"), "--set", f"source.path={tree}"], log,
                            "checksums")

    def test_closed_pipe_is_an_interrupt_and_resume_completes(self):
        # `flowpool run ... | head -1`: the write fails with EPIPE after SIGPIPE; the run ends
        # as interrupted by SIGPIPE (141), and the item whose line was lost is not succeeded.
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            # 200000 lines: far more than a pipe holds, so the writes meet the closed pipe.
            args = [*range_graph(200000, {"type": "print", "format": "{id}"}, ms=0), "--keep-order", "--joblog", log]
            p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            first = p.stdout.readline()
            p.stdout.close()
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 141, err)
            self.assertEqual(first, b"1\n")
            done = succeeded_ids(log)
            self.assertIn(1, done)
            self.assertLess(len(done), 200000)
            rc, second, err = run(*args, "--resume")
            self.assertEqual(rc, 0, err)
            self.assertEqual([int(x) for x in second.split()], [i for i in range(1, 200001) if i not in done])

    def test_dev_full_aggregates(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "jobs.log")
            for sink in ("sum", "count"):
                with open("/dev/full", "w") as full:
                    rc, out, err = run(*range_graph(10, {"type": sink}, ms=0), "--joblog", log, stdout=full)
                self.assertEqual(rc, 1, err)
                self.assertIn(f"{sink}: cannot write the output: No space left on device", err)
                self.assertIn("(the sink could not commit its output)", err)
                # The state is kept: a resume prints the total without running any item again.
                rc, out, err = run(*range_graph(10, {"type": sink}, ms=0), "--joblog", log, "--resume")
                self.assertEqual(rc, 0, err)
                self.assertEqual(out.strip(), "55" if sink == "sum" else "10")


class FileSinkTests(unittest.TestCase):
    """Defects 6, 7 and 12 (the state part): the file sink."""

    def test_refuses_to_truncate_its_input(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out.bin")
            data = os.urandom(3 << 20)
            for name in ("out.bin.partial", "hardlink"):
                with self.subTest(input=name):
                    src = os.path.join(d, "out.bin.partial")
                    with open(src, "wb") as f:
                        f.write(data)
                    if name == "hardlink":
                        os.link(src, os.path.join(d, "hardlink"))
                    rc, _, err = run("run", graph("compress.json"), "-q", "--set",
                                     f"source.path={os.path.join(d, name)}", "--set", f"sink.path={out}")
                    self.assertEqual(rc, 2, err)
                    self.assertIn("is the input", err)
                    with open(os.path.join(d, name), "rb") as f:
                        self.assertEqual(f.read(), data, "the input is intact")
                    self.assertFalse(os.path.exists(out))
                    for n in os.listdir(d):
                        os.unlink(os.path.join(d, n))

    def test_refuses_a_partial_inside_the_directory_it_reads(self):
        # A files source walks the directory: a .partial there (left by an interrupted run, or
        # about to be created) is an input, and writing it would corrupt the input and output.
        with tempfile.TemporaryDirectory() as d:
            tree = os.path.join(d, "tree")
            os.makedirs(os.path.join(tree, "sub"))
            with open(os.path.join(tree, "a"), "w") as f:
                f.write("a\n")
            data = os.urandom(600_000)
            for out in (os.path.join(tree, "out"), os.path.join(tree, "sub", "out")):
                with self.subTest(out=out):
                    with open(out + ".partial", "wb") as f:
                        f.write(data)
                    rc, _, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={tree}",
                                     "--set", json.dumps({"type": "file", "path": out}).join(["sink=", ""]))
                    self.assertEqual(rc, 2, err)
                    self.assertIn("is inside the input directory", err)
                    with open(out + ".partial", "rb") as f:
                        self.assertEqual(f.read(), data, "the input is intact")
                    self.assertFalse(os.path.exists(out))
                    os.unlink(out + ".partial")
            # next to the tree, not in it: fine
            out = os.path.join(d, "tree-sums")
            rc, _, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={tree}",
                             "--set", json.dumps({"type": "file", "path": out}).join(["sink=", ""]))
            self.assertEqual(rc, 0, err)
            self.assertTrue(os.path.exists(out))

    def test_empty_or_directory_path_is_refused_by_validate(self):
        for path, want in (("", 'sink.path: must name a file, got ""'), ("outdir/", "must name a file, not a directory")):
            with self.subTest(path=path):
                sink = json.dumps({"type": "file", "path": path})
                for cmd in ("validate", "run"):
                    rc, _, err = run(cmd, graph("compress.json"), "--set", "source.path=/dev/null", "--set",
                                     f"sink={sink}")
                    self.assertEqual(rc, 2, err)
                    self.assertIn(want, err)
                self.assertFalse(os.path.exists(".partial"))

    def test_memory_bounded_after_a_failed_item(self):
        # 400 one-MiB items (a sparse file), item 2 failing: nothing past the gap is held.
        with tempfile.TemporaryDirectory() as d:
            src, out = os.path.join(d, "sparse"), os.path.join(d, "out.bin")
            with open(src, "wb") as f:
                f.truncate(400 << 20)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # An AddressSanitizer build keeps up to 256 MiB of freed memory by default.
            env = dict(os.environ)
            env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=8"]))
            rc, _, err = run("run", graph("compress.json"), "--set", f"source.path={src}",
                             "--set", f"sink.path={out}", "--set", "options.capacity=4",
                             "--set", 'stages=[{"name":"flaky","kernel":"fail","workers":2,"params":{"ids":[2]}}]',
                             env=env)
            self.assertEqual(rc, 1, err)
            self.assertIn("item 2 failed", err)
            rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            self.assertLess(before, 150 * 1024, "this test's earlier children stayed small")
            self.assertLess(rss_kib, 150 * 1024, f"peak RSS {rss_kib} KiB for 400 MiB of output past the gap")
            self.assertEqual(os.path.getsize(out + ".partial"), 1 << 20, "only item 1, before the gap")

    def test_failed_file_run_resumes_from_its_prefix(self):
        with tempfile.TemporaryDirectory() as d:
            src, out, log = os.path.join(d, "in"), os.path.join(d, "out.bin"), os.path.join(d, "log")
            data = os.urandom(200 * 4096)
            with open(src, "wb") as f:
                f.write(data)
            base = ["run", graph("compress.json"), "-q", "--set", f"source.path={src}", "--set", f"sink.path={out}",
                    "--set", "source.size=4096", "--joblog", log]
            rc, _, err = run(*base, "--set", f"stages=[{json.dumps(fail_stage([50, 120]))}]")
            self.assertEqual(rc, 1, err)
            self.assertEqual(os.path.getsize(out + ".partial"), 49 * 4096)
            rc, _, err = run(*base, "--set", f"stages=[{json.dumps(fail_stage([]))}]", "--resume")
            self.assertEqual(rc, 0, err)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)

    def slow_file_args(self, d, name):
        src = os.path.join(d, "in")
        data = os.urandom(300 * 4096)
        with open(src, "wb") as f:
            f.write(data)
        out = os.path.join(os.fsencode(d), name)
        args = ["run", graph("compress.json"), "-q", "--set", f"source.path={src}",
                b"--set", b"sink.path=" + out, "--set", "source.size=4096", "--set", "options.capacity=4",
                "--set", 'stages=[{"name":"slow","kernel":"sleep","workers":2,"params":{"ms":5}}]']
        return data, out, args

    def test_non_utf8_name_state_is_written_and_resumes(self):
        with tempfile.TemporaryDirectory() as d:
            data, out, args = self.slow_file_args(d, b"out\xff\xfe.bin")
            log = os.path.join(d, "log")
            p = subprocess.Popen([BIN, *args, "--joblog", log], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.assertTrue(wait_for(lambda: os.path.exists(out + b".partial") and
                                     os.path.getsize(out + b".partial") > 0, 30))
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130, err)
            with open(log + ".state") as f:
                state = json.load(f)  # whole, valid JSON
            self.assertEqual(bytes.fromhex(state["state"]["path_hex"]), out)
            self.assertFalse(os.path.exists(log + ".state.tmp"))
            p = subprocess.run([BIN, *args, "--joblog", log, "--resume"], capture_output=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)

    def test_kill9_file_sink_then_resume(self):
        rnd = random.Random(SEED + 2)
        print(f"seed {SEED}", file=sys.stderr)
        for attempt in range(3):
            with self.subTest(attempt=attempt), tempfile.TemporaryDirectory() as d:
                data, out, args = self.slow_file_args(d, b"out.bin")
                log = os.path.join(d, "log")
                p = subprocess.Popen([BIN, *args, "--joblog", log], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                time.sleep(rnd.uniform(0.05, 1.5))
                p.kill()
                p.communicate(timeout=60)
                p = subprocess.run([BIN, *args, "--joblog", log, "--resume"], capture_output=True, timeout=120)
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(out, "rb") as f:
                    self.assertEqual(f.read(), data, f"seed {SEED}")


class StreamSinkCrashTests(unittest.TestCase):
    """Stream sinks are at-least-once after kill -9: every item comes out, at most one twice."""

    def test_kill9_print_then_resume(self):
        rnd = random.Random(SEED + 3)
        print(f"seed {SEED}", file=sys.stderr)
        for keep_order in (False, True):
            with self.subTest(keep_order=keep_order), tempfile.TemporaryDirectory() as d:
                log = os.path.join(d, "log")
                args = [*range_graph(1500, {"type": "print", "format": "{id}"}, ms=2, workers=2), "--joblog", log]
                if keep_order:
                    args.append("--keep-order")
                p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(rnd.uniform(0.1, 1.2))
                p.kill()
                first, _ = p.communicate(timeout=60)
                rc, second, err = run(*args, "--resume")
                self.assertEqual(rc, 0, err)
                ids = [int(x) for x in (first + second).split()]
                self.assertEqual(sorted(set(ids)), list(range(1, 1501)), f"seed {SEED}")
                self.assertLessEqual(len(ids) - 1500, 1, f"seed {SEED}: at most the one item in hand")


class SpecialJoblogTests(unittest.TestCase):
    """Defect 22: --joblog /dev/null, /dev/stderr and a FIFO."""

    def test_dev_null_and_dev_stderr(self):
        rc, out, err = run(*range_graph(5, {"type": "count"}, ms=0), "--joblog", "/dev/null")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "5")
        rc, out, err = run(*range_graph(5, {"type": "sum"}, ms=0), "--joblog", "/dev/stderr")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "15")
        self.assertEqual(err.count("\tsucceeded\t"), 5, err)
        self.assertFalse(os.path.exists("/dev/stderr.state"))

    def test_dev_stderr_redirected_to_a_file_is_appended_to(self):
        # /dev/stderr then resolves to a regular file: it is still the shell's stream, never
        # truncated and with no FILE.state beside it.
        with tempfile.TemporaryDirectory() as d:
            errfile = os.path.join(d, "err.txt")
            with open(errfile, "w") as f:
                f.write("earlier output\n")
            with open(errfile, "a") as f:
                p = subprocess.run([BIN, *range_graph(4, {"type": "sum"}, ms=0), "--joblog", "/dev/stderr"],
                                   stdout=subprocess.PIPE, stderr=f, text=True, timeout=60)
            self.assertEqual(p.returncode, 0)
            self.assertEqual(p.stdout.strip(), "10")
            with open(errfile) as f:
                text = f.read()
            self.assertTrue(text.startswith("earlier output\n"), text)
            self.assertEqual(text.count("\tsucceeded\t"), 4, text)
            self.assertFalse(os.path.exists("/dev/stderr.state"))
            with open(errfile, "a") as f:
                p = subprocess.run([BIN, *range_graph(4, {"type": "sum"}, ms=0), "--joblog", "/dev/stderr",
                                    "--resume"], stdout=subprocess.PIPE, stderr=f, text=True, timeout=60)
            self.assertEqual(p.returncode, 2)
            with open(errfile) as f:
                self.assertIn("is not a regular file", f.read())

    def test_fifo(self):
        with tempfile.TemporaryDirectory() as d:
            fifo = os.path.join(d, "fifo")
            os.mkfifo(fifo)
            got = []
            reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
            reader.start()
            rc, out, err = run(*range_graph(7, {"type": "print"}, ms=0), "--joblog", fifo, timeout=60)
            reader.join(30)
            self.assertEqual(rc, 0, err)
            self.assertEqual(got[0].count("\tsucceeded\t"), 7)
            self.assertTrue(os.path.exists(fifo), "a FIFO is not replaced")

    def test_resume_from_non_regular_joblog_is_refused(self):
        rc, out, err = run(*range_graph(5, {"type": "count"}, ms=0), "--joblog", "/dev/null", "--resume")
        self.assertEqual(rc, 2, err)
        self.assertEqual(out, "")
        self.assertIn('--joblog "/dev/null" is not a regular file', err)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
