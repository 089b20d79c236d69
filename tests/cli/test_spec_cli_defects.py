#!/usr/bin/env python3
"""End-to-end tests of the spec reader, the validator and the CLI's outputs against hostile input:
deep JSON, bytes that are not UTF-8, unwritable output files, spec errors that only `run` used to
find, -q hiding a failure, oversized specs on a pipe, and exact integer limits.

Run by ctest: test_spec_cli_defects.py FLOWPOOL_BINARY REPO_DIR TestClass."""
import codecs
import errno
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = None
REPO = None


def run(*args, timeout=60, stdin=None, input=None, preexec_fn=None):
    p = subprocess.run([BIN, *args], capture_output=True, timeout=timeout, stdin=stdin, input=input,
                       preexec_fn=preexec_fn)
    # stdout is data (a sink may print the bytes of a file name) and messages may quote names:
    # undecodable bytes are kept as surrogates.
    return p.returncode, p.stdout.decode("utf-8", "surrogateescape"), p.stderr.decode("utf-8", "surrogateescape")


def remove_tree_being_written(path):
    """rmtree of a directory a running flowpool still writes into (PATH.tmp, then a rename
    over PATH): an entry can vanish between rmtree listing it and unlinking it, or a new
    one appear before the rmdir. Retries until the directory is gone."""
    for _ in range(200):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            if not os.path.exists(path):
                return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
    shutil.rmtree(path)


def graph(name):
    return f"{REPO}/graphs/{name}"


def unescape(s):
    """The bytes of a string written with the CLI's escapes (docs/cli.md, "Names are bytes")."""
    return codecs.escape_decode(s.encode("utf-8"))[0] if "\\x" in s else s.encode("utf-8")


def unquote_names(message):
    """A message's bytes with each name quoted in bash's $'...' form (docs/cli.md, "Data-processing
    errors") turned back into the name's bytes, after the JSON escapes are undone."""
    raw = unescape(message)
    return re.sub(rb"\$'((?:[^'\\]|\\.)*)'", lambda m: codecs.escape_decode(m.group(1))[0], raw)


def source_params(validate_out):
    """The source's parameters (JSON) from `flowpool validate`'s "  source  TYPE {...}" line."""
    line = next(l for l in validate_out.splitlines() if l.strip().startswith("source"))
    return json.loads(line[line.index("{"):])


def small_stack():
    # A 1 MiB stack: a parser or printer that recursed once per nesting level of 60,000
    # levels overflows it; code bounded to the spec's 64 levels does not.
    resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))


class DeepJsonTests(unittest.TestCase):
    """Defect 11: every JSON value read is held to the spec's depth limit."""

    DEEP = "[" * 60000 + "]" * 60000  # fits in one argument (under 128 KiB)

    def test_deep_set_value(self):
        for cmd in ("validate", "run"):
            for assignment in (f"source.count={self.DEEP}", f"stages[0]={self.DEEP}"):
                with self.subTest(cmd=cmd, assignment=assignment[:20]):
                    extra = ["-q"] if cmd == "run" else []
                    rc, out, err = run(cmd, graph("retries.json"), *extra, "--set", assignment,
                                       preexec_fn=small_stack)
                    self.assertEqual(rc, 2, f"signal {-rc}" if rc < 0 else err)
                    self.assertIn("nested deeper than 64 levels", err)
                    self.assertIn("graphs/retries.json", err)

    def test_deep_set_path_and_combined_depth(self):
        path = ".".join(["a"] * 100)
        rc, _, err = run("validate", graph("seed.json"), "--set", f"description.{path}=1")
        self.assertEqual(rc, 2, err)
        self.assertIn("nested deeper than 64 levels", err)
        # 40 levels of path plus 40 of value: over 64 in all.
        rc, _, err = run("validate", graph("seed.json"), "--set",
                         "options." + ".".join(["x"] * 39) + "=" + "[" * 40 + "]" * 40)
        self.assertEqual(rc, 2, err)
        self.assertIn("nested deeper than 64 levels", err)
        # A value within the limit is still taken.
        rc, _, err = run("validate", graph("seed.json"), "--set", "stages[0].params.ms=[[[1]]]")
        self.assertEqual(rc, 2, err)
        self.assertIn("stages[0].params.ms: must be an integer", err)

    def test_deep_report_for_dot(self):
        with tempfile.TemporaryDirectory() as d:
            rep = os.path.join(d, "report.json")
            with open(rep, "w") as f:
                f.write('{"graph": "seed", "stages": ' + "[" * 5000 + "]" * 5000 + "}")
            rc, out, err = run("dot", graph("seed.json"), "--report", rep, preexec_fn=small_stack)
            self.assertEqual(rc, 2, err)
            self.assertIn("nested deeper than 64 levels", err)
            self.assertIn(rep, err)


class BytesTests(unittest.TestCase):
    """Defect 12: names are bytes; JSON output encodes them losslessly and never fails."""

    def test_validate_path_with_byte_ff(self):
        rc, out, err = run("validate", graph("sha256-tree.json"), "--set", b"source.path=/tmp/x\xff")
        self.assertEqual(rc, 0, err)
        out.encode("utf-8")  # strict: validate's output is valid UTF-8
        params = source_params(out)
        self.assertEqual(params["path"], "/tmp/x\\xff")
        self.assertEqual(unescape(params["path"]), b"/tmp/x\xff")

    def test_escapes_are_lossless(self):
        # A valid name holding the two characters \x is escaped too, so that it cannot be
        # mistaken for an escaped byte.
        rc, out, err = run("validate", graph("sha256-tree.json"), "--set", "source.path=/tmp/a\\xff\\b")
        self.assertEqual(rc, 0, err)
        params = source_params(out)
        self.assertEqual(unescape(params["path"]), b"/tmp/a\\xff\\b")
        rc, out, err = run("validate", graph("sha256-tree.json"), "--set", "source.path=/tmp/plain\\name")
        self.assertEqual(rc, 0, err)
        self.assertEqual(source_params(out)["path"], "/tmp/plain\\name")

    def test_report_over_latin1_tree(self):
        with tempfile.TemporaryDirectory() as d:
            tree = os.path.join(d, "tree").encode()
            os.mkdir(tree)
            with open(tree + b"/caf\xe9.txt", "wb") as f:
                f.write(b"hello\n")
            with open(tree + b"/plain.txt", "wb") as f:
                f.write(b"world\n")
            # A file that cannot be read, so that its Latin-1 name goes into the report's errors.
            os.symlink("/proc/self/mem", tree + b"/m\xe9m")
            rep = os.path.join(d, "report.json")
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", b"source.path=" + tree,
                               "--set", "source.follow_symlinks=true", "--report", rep)
            self.assertIn(rc, (0, 1), err)
            self.assertEqual(sorted(os.listdir(d)), ["report.json", "tree"], "no .tmp left behind")
            with open(rep, encoding="utf-8") as f:
                report = json.load(f)
            self.assertEqual(report["submitted"], 3)
            self.assertEqual(report["succeeded"] + report["failed"], 3)
            if report["failed"]:
                msg = report["errors"][0]["message"]
                self.assertIn(tree + b"/m\xe9m", unquote_names(msg))

    def test_report_error_with_latin1_name(self):
        # exec of a file that is not executable fails naming it: "cannot run "<name>"".
        with tempfile.TemporaryDirectory() as d:
            tree = os.path.join(d, "tree").encode()
            os.mkdir(tree)
            with open(tree + b"/caf\xe9.sh", "wb") as f:
                f.write(b"echo hi\n")
            os.chmod(tree + b"/caf\xe9.sh", 0o644)
            rep = os.path.join(d, "report.json")
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", b"source.path=" + tree,
                               "--set", 'stages[0]={"name":"hash","kernel":"exec","params":{"argv":["{input}"]}}',
                               "--set", 'sink={"type":"concat"}', "--report", rep)
            self.assertEqual(rc, 1, err)
            self.assertEqual(sorted(os.listdir(d)), ["report.json", "tree"])
            with open(rep, encoding="utf-8") as f:
                report = json.load(f)
            self.assertEqual(report["failed"], 1)
            self.assertIn(tree + b"/caf\xe9.sh", unquote_names(report["errors"][0]["message"]))

    def test_names_must_be_utf8(self):
        for assignment in (b"name=caf\xe9", b"stages[0].name=caf\xe9"):
            with self.subTest(assignment=assignment):
                rc, out, err = run("validate", graph("seed.json"), "--set", assignment)
                self.assertEqual(rc, 2, err)
                self.assertIn("must be valid UTF-8 text", err)
                self.assertIn("caf\\\\xe9", err)  # the JSON string "caf\\xe9"


class OutputPathTests(unittest.TestCase):
    """Defect 15: output files are checked before the run, never leave .tmp, fail loudly."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_directory_refused_before_the_run(self):
        target = os.path.join(self.dir, "out")
        os.mkdir(target)
        for flag in ("--report", "--metrics", "--trace", "--timeline"):
            with self.subTest(flag=flag):
                t0 = time.monotonic()
                rc, out, err = run("run", graph("seed.json"), "-q", flag, target)
                self.assertEqual(rc, 2, err)
                self.assertEqual(out, "", "nothing may run")
                self.assertIn(f'{flag}: cannot write "{target}": Is a directory', err)
                self.assertEqual(sorted(os.listdir(self.dir)), ["out"], "no .tmp left behind")

    def test_missing_directory_refused_before_the_run(self):
        target = os.path.join(self.dir, "no", "such", "r.json")
        rc, out, err = run("run", graph("seed.json"), "-q", "--report", target)
        self.assertEqual(rc, 2, err)
        self.assertEqual(out, "")
        self.assertIn("No such file or directory", err)

    def slow_run(self, *extra):
        # 12 items of 100 ms on one worker: about 1.2 s, time to remove the output directory.
        return subprocess.Popen([BIN, "run", graph("seed.json"), "-q", "-j", "1", "--set", "source.count=12",
                                 "--set", "stages[0].params.ms=100", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_report_write_failure_at_the_end(self):
        sub = os.path.join(self.dir, "sub")
        os.mkdir(sub)
        p = self.slow_run("--report", os.path.join(sub, "r.json"))
        time.sleep(0.3)
        shutil.rmtree(sub)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("--report: cannot write", err)
        self.assertIn("No such file or directory", err)

    def test_failing_metrics_reported_once(self):
        sub = os.path.join(self.dir, "sub")
        os.mkdir(sub)
        p = self.slow_run("--metrics", os.path.join(sub, "m.prom"), "--metrics-interval", "20ms")
        time.sleep(0.3)
        remove_tree_being_written(sub)  # written every 20 ms: plain rmtree can race the rename
        out, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0, err)
        self.assertEqual(err.count("--metrics: cannot write"), 1, err)
        self.assertIn("No such file or directory", err)

    def test_fifo_report_written_in_place(self):
        fifo = os.path.join(self.dir, "report.fifo")
        os.mkfifo(fifo)
        got = {}

        def reader():
            with open(fifo) as f:
                got["text"] = f.read()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        rc, out, err = run("run", graph("seed.json"), "-q", "--report", fifo)
        if t.is_alive():  # the CLI never opened the FIFO: unblock the reader
            with open(fifo, "w"):
                pass
        t.join(timeout=10)
        self.assertEqual(rc, 0, err)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced")
        self.assertEqual(json.loads(got.get("text") or "null")["status"], "ok")
        self.assertEqual(sorted(os.listdir(self.dir)), ["report.fifo"])


class ValidateFindsAllTests(unittest.TestCase):
    """Defects 16 and 17 (and the exact integer limit, and a zero timeout): `validate` finds
    everything `run` would refuse, naming the file and the JSON path."""

    CASES = [
        ("retries.json", ["--set", 'stages[0].params.ids=["x"]'], "stages[0].params.ids[0]: must be an item id"),
        ("retries.json", ["--set", "stages[0].params.ids=[0]"], "stages[0].params.ids[0]: must be an item id"),
        ("exec.json", ["--set", "source.path=-", "--set", "stages[0].params.argv=[]"], "stages[0].params.argv: must name a command"),
        ("exec.json", ["--set", "source.path=-", "--set", 'stages[0].params.argv=[""]'], "stages[0].params.argv: must name a command"),
        ("exec.json", ["--set", "source.path=-", "--set", 'stages[0].params.argv=["echo","x"]', "--set",
                       "stages[0].params.shell=true"],
         "stages[0].params.argv: with shell: true, must be one string"),
        ("retries.json", ["--set", "stages[1].name=flaky"], 'stages[1].name: duplicate stage name "flaky"'),
        ("seed.json", ["--set", "sink.format={idd}"], 'sink.format: unknown placeholder "{idd}"'),
        ("seed.json", ["--set", "source.count=4000000000000000001"],
         "source.count: must be an integer from 0 to 4000000000000000000"),
        ("seed.json", ["--timeout", "0s"], "options.timeout: must be greater than 0"),
        ("seed.json", ["--job-timeout", "0ms"], "options.job_timeout: must be greater than 0"),
        ("seed.json", ["--set", "stages[0].timeout=0s"], "stages[0].timeout: must be greater than 0"),
    ]

    def test_validate_and_run_refuse(self):
        for g, args, fragment in self.CASES:
            for cmd in ("validate", "run"):
                with self.subTest(cmd=cmd, args=args):
                    if cmd == "validate" and args[0] != "--set":
                        continue  # --timeout and --job-timeout are run options
                    extra = ["-q"] if cmd == "run" else []
                    rc, out, err = run(cmd, graph(g), *extra, *args, stdin=subprocess.DEVNULL)
                    self.assertEqual(rc, 2, err)
                    self.assertIn(f"flowpool: {graph(g)}: {fragment}", err)
                    self.assertEqual(out, "")

    def test_limits_still_accept(self):
        for g, args in (("seed.json", ["--set", "source.count=4000000000000000000"]),
                        ("seed.json", ["--set", "sink.format={id} {worker} {input} {value} {"]),
                        ("retries.json", ["--set", 'stages[0].params.ids=["3", 7]']),
                        ("exec.json", ["--set", "source.path=-", "--set", 'stages[0].params.argv=["echo $1"]', "--set",
                                       "stages[0].params.shell=true"])):
            with self.subTest(args=args):
                rc, out, err = run("validate", graph(g), *args)
                self.assertEqual(rc, 0, err)

    def test_string_ids_still_fail_their_items(self):
        rc, out, err = run("run", graph("retries.json"), "-q", "--set", 'stages[0].params.ids=["2"]',
                           "--set", "stages[0].params.fail_attempts=0", "--set", "stages[1].params.ids=[]")
        self.assertEqual(rc, 1, err)
        # Only item 2 failed; a failed run prints no partial total (docs/cli.md, "A failed run").
        self.assertEqual(re.findall(r"item (\d+) failed after", err), ["2"], err)
        self.assertEqual(out, "")


class QuietTests(unittest.TestCase):
    """Defect 18: -q drops progress and the summary, never the reason for a failure."""

    def test_quiet_prints_item_failures(self):
        rc, out, err = run("run", graph("retries.json"), "-q")
        self.assertEqual(rc, 1, err)
        self.assertIn("item 13 failed", err)
        self.assertNotIn("succeeded,", err, "no summary line")

    def test_quiet_lines_source_on_a_directory(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out, err = run("run", graph("exec.json"), "-q", "--set", f"source.path={d}")
            self.assertNotEqual(rc, 0, err)
            self.assertTrue(err.startswith("flowpool: "), f"no reason on stderr: {err!r}")

    def test_quiet_timeout_says_so(self):
        rc, out, err = run("run", graph("seed.json"), "-q", "--set", "stages[0].params.ms=2000", "--timeout", "100ms")
        self.assertEqual(rc, 3, err)
        self.assertIn("timed_out", err)

    def test_quiet_success_is_silent(self):
        rc, out, err = run("run", graph("seed.json"), "-q")
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")


class SizeLimitTests(unittest.TestCase):
    """Defect 21: the 4 MiB spec limit holds for pipes too; at most limit+1 bytes are read."""

    def test_big_spec_on_a_pipe(self):
        with open(graph("seed.json"), "rb") as f:
            spec = f.read()
        big = spec + b" " * (8 << 20)  # valid JSON, 8 MiB
        for cmd in ("validate", "run"):
            with self.subTest(cmd=cmd):
                rc, out, err = run(cmd, "/dev/stdin", input=big, timeout=120)
                self.assertEqual(rc, 2, err)
                self.assertIn("/dev/stdin: is larger than 4 MiB", err)

    def test_small_spec_on_a_pipe(self):
        with open(graph("seed.json"), "rb") as f:
            rc, out, err = run("validate", "/dev/stdin", stdin=f)
        self.assertEqual(rc, 0, err)
        self.assertIn("graph seed", out)

    def test_endless_pipe(self):
        # /dev/zero never ends: the reader must stop at the limit.
        rc, out, err = run("validate", "/dev/zero", timeout=60)
        self.assertEqual(rc, 2, err)
        self.assertIn("larger than 4 MiB", err)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
