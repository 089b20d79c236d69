#!/usr/bin/env python3
"""End-to-end tests of engine defects (issue 13). Run by ctest: test_engine_defects.py FLOWPOOL_BINARY REPO_DIR TestClass."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = None
REPO = None


def run(*args, timeout=120, stdin=None):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, stdin=stdin)
    return p.returncode, p.stdout, p.stderr


class OrderedResumeTests(unittest.TestCase):
    """An interrupted ordered run plus its --resume prints exactly one uninterrupted run."""

    # Item 5 sleeps (the head of the reorder window) while 6..20 finish behind it.
    SCRIPT = '[ "$1" = 5 ] && sleep 4; echo "item $1"'

    def args(self, log=None):
        a = ["run", f"{REPO}/graphs/exec.json", "-q", "--keep-order", "-j", "4",
             "--set", "source.path=-", "--set", f"stages[0].params.argv={self.argv_json()}"]
        if log:
            a += ["--joblog", log]
        return a

    def argv_json(self):
        import json
        return json.dumps(["/bin/sh", "-c", self.SCRIPT, "sh", "{input}"])

    def test_sigint_while_the_head_runs_then_resume(self):
        with tempfile.TemporaryDirectory() as d:
            inp = os.path.join(d, "in.txt")
            with open(inp, "w") as f:
                f.write("".join(f"{i}\n" for i in range(1, 21)))
            log = os.path.join(d, "jobs.log")
            with open(inp) as fin:
                p = subprocess.Popen([BIN, *self.args(log)], stdin=fin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                time.sleep(1.5)  # 1-4 and 6-20 are done; 5 sleeps
                p.send_signal(signal.SIGINT)
                first, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130, err)
            with open(inp) as fin:
                rc, second, err = run(*self.args(log), "--resume", stdin=fin)
            self.assertEqual(rc, 0, err)
            with open(inp) as fin:
                rc, whole, err = run(*self.args(), stdin=fin)
            self.assertEqual(rc, 0, err)
            self.assertEqual(whole, "".join(f"item {i}\n" for i in range(1, 21)))
            self.assertEqual(first + second, whole, f"interrupted run printed:\n{first}")


class ChainedRetryTests(unittest.TestCase):
    """A later stage that retries never hangs the run (it used to, most runs)."""

    def spec(self, second_workers):
        return {
            "name": "chained-retries",
            "source": {"type": "range", "count": 200},
            "stages": [
                {"name": "s", "kernel": "sleep", "workers": 2, "params": {"ms": 0}},
                {"name": "f", "kernel": "fail", "workers": second_workers,
                 "params": {"probability": 0.5, "fail_attempts": 1}},
            ],
            "sink": {"type": "count"},
            "options": {"capacity": 3, "retries": 1, "backoff": "1ms", "timeout": "1m"},
        }

    def test_minimal_chain_never_hangs(self):
        import json
        with tempfile.TemporaryDirectory() as d:
            for second_workers in (2, 1):
                path = os.path.join(d, f"chain{second_workers}.json")
                with open(path, "w") as f:
                    json.dump(self.spec(second_workers), f)
                for rep in range(6):
                    with self.subTest(second_workers=second_workers, rep=rep):
                        try:
                            rc, out, err = run("run", path, "-q", timeout=30)
                        except subprocess.TimeoutExpired:
                            self.fail(f"hung (second stage {second_workers} workers, run {rep})")
                        self.assertEqual(rc, 0, err)
                        self.assertEqual(out.strip(), "200")

    def test_four_stage_chain_with_retries_never_hangs(self):
        # The shape that still hung when every stage was its own pool fed by a blocking
        # submit() from the previous stage's aggregator: capacity 1, two retrying stages.
        import json
        spec = {
            "name": "four-stage-retries",
            "source": {"type": "range", "count": 400},
            "stages": [
                {"name": "a", "kernel": "fail", "workers": 2, "params": {"seed": 7, "probability": 0.5,
                                                                          "fail_attempts": 1}},
                {"name": "b", "kernel": "sleep", "workers": 1, "params": {"ms": 0}},
                {"name": "c", "kernel": "fail", "workers": 2, "retries": 3,
                 "params": {"seed": 9, "probability": 0.5, "fail_attempts": 1}},
                {"name": "d", "kernel": "sleep", "workers": 2, "params": {"ms": 0}},
            ],
            "sink": {"type": "count"},
            "options": {"capacity": 1, "retries": 1, "backoff": "1ms", "timeout": "1m"},
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "chain4.json")
            with open(path, "w") as f:
                json.dump(spec, f)
            for rep in range(6):
                with self.subTest(rep=rep):
                    try:
                        rc, out, err = run("run", path, "-q", timeout=30)
                    except subprocess.TimeoutExpired:
                        self.fail(f"hung (run {rep})")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out.strip(), "400")

    def test_retries_graph_with_flaky_second_stage(self):
        for rep in range(4):
            with self.subTest(rep=rep):
                try:
                    rc, out, err = run("run", f"{REPO}/graphs/retries.json", "-q", "--set", "source.count=2000",
                                       "--set", "stages[1].params.probability=0.3",
                                       "--set", "stages[1].params.fail_attempts=1", timeout=60)
                except subprocess.TimeoutExpired:
                    self.fail(f"hung (run {rep})")
                self.assertIn(rc, (0, 1), err)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
