#!/usr/bin/env python3
"""End-to-end tests of the `lines` source, the `sum` sink, the `exec` kernel's arguments and
process handling, and the quoting of names in messages (issue 13: items 10, 18, 19, 23-26).

Run by ctest: test_sources_exec_defects.py FLOWPOOL_BINARY REPO_DIR TestClass."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = None
REPO = None


def graph(name):
    return os.path.join(REPO, "graphs", name)


def run(*args, timeout=120, stdin=None, preexec_fn=None):
    p = subprocess.run([BIN, *args], capture_output=True, timeout=timeout, stdin=stdin, preexec_fn=preexec_fn)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def spec(d, source, sink, stages=None):
    """A spec file with a pass-through stage (the `sleep` kernel with 0 ms: value = input)."""
    s = {"name": "t", "source": source,
         "stages": stages or [{"name": "id", "kernel": "sleep", "params": {"ms": 0}}], "sink": sink}
    return write(os.path.join(d, "spec.json"), json.dumps(s).encode())


def procs_with_marker(marker):
    """Pids of live (non-zombie) processes whose command line holds `marker` as one argument."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if marker.encode() in args and stat[stat.rfind(")") + 2:].split()[0] != "Z":
            out.append(int(d))
    return out


def children_of(pid):
    """Pids of the processes whose parent is pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d))
    return out


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def kill_pids(pids):
    for pid in pids:  # cleanup after a failure: only the processes this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def marker():
    """A unique sleep duration: finds this test's processes in /proc, and only them."""
    return "%d.%06d" % (900 + random.randrange(100), random.randrange(10 ** 6))


class SumTests(unittest.TestCase):
    def test_sum_beyond_int64_is_exact(self):
        with tempfile.TemporaryDirectory() as d:
            for values in ([4 * 10 ** 18] * 3, [-(2 ** 63)] * 2 + [5], [2 ** 63 - 1] * 4 + [-1], [1, 2, 3]):
                with self.subTest(values=values):
                    src = write(os.path.join(d, "in.txt"), "".join(f"{v}\n" for v in values).encode())
                    rc, out, err = run("run", spec(d, {"type": "lines", "path": src}, {"type": "sum"}), "-q")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out.decode(), f"{sum(values)}\n")

    def test_not_a_number_is_quoted(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"1\nx\x1b[2Jy\n")
            rc, out, err = run("run", spec(d, {"type": "lines", "path": src}, {"type": "sum"}))
            self.assertEqual(rc, 1, err)
            self.assertIn("sum: item 2 value $'x\\x1b[2Jy' is not a number", err)
            self.assertNotIn("\x1b", err)

    def test_resume_keeps_a_sum_beyond_int64(self):
        # The saved aggregate of an interrupted run holds the exact 128-bit sum.
        with tempfile.TemporaryDirectory() as d:
            values = [4 * 10 ** 18] * 6
            src = write(os.path.join(d, "in.txt"), "".join(f"{v}\n" for v in values).encode())
            stages = [{"name": "slow", "kernel": "exec", "workers": 1,
                       "params": {"shell": True, "argv": ['if [ "$2" -gt 3 ]; then sleep 30; fi; printf %s "$1"']}}]
            s = spec(d, {"type": "lines", "path": src}, {"type": "sum"}, stages)
            log = os.path.join(d, "log")
            p = subprocess.Popen([BIN, "run", s, "-q", "--joblog", log], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                def three_done():
                    try:
                        with open(log) as f:
                            return len(f.read().splitlines()) >= 3
                    except OSError:
                        return False
                self.assertTrue(wait_for(three_done, 30), "three items finished")
                time.sleep(0.2)
                p.send_signal(signal.SIGINT)
                out, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
            self.assertEqual(p.returncode, 130, err)
            with open(s) as f:
                sp = json.load(f)
            sp["stages"][0]["params"]["argv"] = ['printf %s "$1"']
            write(s, json.dumps(sp).encode())
            rc, out2, err2 = run("run", s, "-q", "--joblog", log, "--resume")
            self.assertEqual(rc, 0, err2)
            self.assertEqual(out2.decode(), f"{sum(values)}\n")


class LinesSourceTests(unittest.TestCase):
    def test_directory_path_is_a_usage_error(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out, err = run("run", graph("exec.json"), "--set", f"source.path={d}")
            self.assertEqual(rc, 2, err)
            self.assertIn(f'flowpool: source.path: "{d}" is a directory, expected a file', err)

    def test_stdin_a_directory_fails_with_the_reason(self):
        with tempfile.TemporaryDirectory() as d:
            fd = os.open(d, os.O_RDONLY)
            try:
                rc, out, err = run("run", graph("exec.json"), "--set", "source.path=-", "--set", "sink.type=count",
                                   stdin=fd)
            finally:
                os.close(fd)
            self.assertEqual(rc, 2, err)
            self.assertIn("flowpool: source.path: stdin is a directory, expected a file", err)
            self.assertNotIn("ok:", err)

    def test_closed_stdin_fails_with_the_reason(self):
        rc, out, err = run("run", graph("exec.json"), "--set", "source.path=-", "--set", "sink.type=count",
                           stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
        self.assertEqual(rc, 2, err)
        self.assertIn("source.path: cannot read stdin: Bad file descriptor", err)
        self.assertNotIn("ok:", err)

    def test_read_error_names_its_reason(self):
        # Reading /proc/self/mem at offset 0 fails with EIO.
        rc, out, err = run("run", graph("exec.json"), "--set", "source.path=/proc/self/mem", "--set", "sink.type=count")
        self.assertEqual(rc, 1, err)
        self.assertIn('source.path: read error in "/proc/self/mem": Input/output error', err)

    def test_trailing_cr_is_kept_as_xargs_and_parallel_do(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"a\r\nb c\r\n\r\nplain\nlast\r")
            rc, out, err = run("run", graph("exec.json"), "-q", "-j", "1", "--set", f"source.path={src}",
                               "--set", 'stages[0].params.argv=["printf","[%s]\\n"]')
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, b"[a\r]\n[b c\r]\n[\r]\n[plain]\n[last\r]\n")
            with open(src, "rb") as f:
                ref = subprocess.run(["xargs", "-d", "\\n", "-n", "1", "printf", "[%s]\\n"], stdin=f,
                                     capture_output=True, timeout=60)
            self.assertEqual(ref.returncode, 0, ref.stderr)
            self.assertEqual(out, ref.stdout)

    def test_lines_are_split_exactly(self):
        # Empty lines are items; a last line without a newline is one; an empty input is none;
        # long lines cross the read buffer intact.
        with tempfile.TemporaryDirectory() as d:
            long_line = "x" * 3000000
            for data, want in ((b"", []), (b"\n", [""]), (b"a\n\nb", ["a", "", "b"]),
                               ((long_line + "\n" + long_line).encode(), [long_line, long_line])):
                with self.subTest(data=data[:20]):
                    src = write(os.path.join(d, "in.txt"), data)
                    rc, out, err = run("run", spec(d, {"type": "lines", "path": src},
                                                   {"type": "print", "format": "{id}:{input}"}), "-q", "--keep-order")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out.decode(), "".join(f"{i}:{l}\n" for i, l in enumerate(want, 1)))


class ExecArgumentTests(unittest.TestCase):
    def test_nul_in_an_argument_fails_the_item_and_names_it(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"good\na\0b\n")
            cases = ((["printf", "[%s]\\n", "{input}"], "argv[2] (\"{input}\") holds a NUL byte at offset 1"),
                     (["printf", "[%s]\\n"], "the appended input (the last argument) holds a NUL byte at offset 1"),
                     (["sh", "-c", "printf '[%s]\\n' \"$1\"", "sh", "x{input}"], "argv[4] (\"x{input}\") holds a NUL"))
            for argv, msg in cases:
                with self.subTest(argv=argv):
                    rc, out, err = run("run", graph("exec.json"), "-j", "1", "--set", f"source.path={src}",
                                       "--set", "stages[0].params.argv=" + json.dumps(argv))
                    self.assertEqual(rc, 1, err)
                    self.assertIn(msg, err)
                    self.assertIn("item 2 failed after 1 attempt", err)  # not retried: it can never pass
                    self.assertEqual(out, (b"[good]\n" if argv[0] == "printf" else b"[xgood]\n"))
            rc, out, err = run("run", graph("exec.json"), "-j", "1", "--set", f"source.path={src}",
                               "--set", "stages[0].params.shell=true",
                               "--set", "stages[0].params.argv=" + json.dumps(["printf '[%s]\\n' \"$1\""]))
            self.assertEqual(rc, 1, err)
            self.assertIn('the input ("$1" of the script) holds a NUL byte at offset 1', err)
            self.assertEqual(out, b"[good]\n")

    def test_nul_in_the_argv_template_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"1\n")
            rc, out, err = run("run", graph("exec.json"), "--set", f"source.path={src}",
                               "--set", 'stages[0].params.argv=["printf","a\\u0000b"]')
            self.assertEqual(rc, 2, err)
            self.assertIn("exec: argv[1] holds a NUL byte; a command argument cannot contain NUL", err)
            self.assertEqual(out, b"")

    def test_nul_from_value_placeholder(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"1\n")
            stages = [{"name": "mk", "kernel": "exec", "params": {"argv": ["printf", "v\\0w"]}},
                      {"name": "use", "kernel": "exec", "params": {"argv": ["echo", "{value}"]}}]
            rc, out, err = run("run", spec(d, {"type": "lines", "path": src}, {"type": "concat"}, stages))
            self.assertEqual(rc, 1, err)
            self.assertIn('argv[1] ("{value}") holds a NUL byte at offset 1', err)
            self.assertEqual(out, b"")

    def test_not_executable_and_missing(self):
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"x\n")
            noexec = write(os.path.join(d, "noexec"), b"#!/bin/sh\n")
            for cmd, reason in ((noexec, "Permission denied"), ("no-such-command-xyz", "No such file or directory")):
                with self.subTest(cmd=cmd):
                    rc, out, err = run("run", graph("exec.json"), "--set", f"source.path={src}",
                                       "--set", "stages[0].params.argv=" + json.dumps([cmd]))
                    self.assertEqual(rc, 1, err)
                    self.assertIn(f'cannot run "{cmd}": {reason}', err)


class QuotingTests(unittest.TestCase):
    EVIL = "x\nflowpool: forged line\x1b[31m"

    def assert_clean(self, err_bytes):
        """One message per line, no control byte but the newlines that end lines."""
        self.assertNotIn(b"\x1b", err_bytes)
        for b in err_bytes:
            self.assertFalse(b < 0x20 and b != 0x0a, f"control byte {b:#x} in {err_bytes!r}")
        lines = err_bytes.decode("utf-8", "replace").splitlines()
        self.assertFalse([l for l in lines if "forged line" in l and not l.startswith("flowpool: ") or
                          l.startswith("flowpool: forged")], lines)

    def test_source_paths(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, self.EVIL)
            quoted = "$'" + d + "/x\\nflowpool: forged line\\x1b[31m'"
            for g in ("exec.json", "sha256-tree.json", "wordcount.json"):  # lines, files, chunks
                with self.subTest(graph=g):
                    p = subprocess.run([BIN, "run", graph(g), "--set", f"source.path={bad}"], capture_output=True,
                                       timeout=60)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assert_clean(p.stderr)
                    self.assertIn(f"source.path: cannot open {quoted}: No such file or directory", p.stderr.decode())

    def test_item_messages(self):
        with tempfile.TemporaryDirectory() as top:
            d = os.path.join(top, "in")  # the tree the source reads; the sink writes beside it
            os.mkdir(d)
            write(os.path.join(d, self.EVIL + ".zst"), b"not zstd data")
            p = subprocess.run([BIN, "run", graph("compress.json"), "--set", f'source={{"type":"files","path":"{d}"}}',
                                "--set", "stages[0].params.mode=decompress", "--set", "stages[0].params.input=path",
                                "--set", f"sink.path={top}/out"], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assert_clean(p.stderr)
            self.assertIn("zstd: $'" + d + "/x\\nflowpool: forged line\\x1b[31m.zst': corrupt zstd data", p.stderr.decode())
            # A byte that is not UTF-8 is escaped too (each name is its own run: the first failure stops it).
            os.unlink(os.path.join(d, self.EVIL + ".zst"))
            write(os.path.join(d, "bad").encode() + b"\xff.zst", b"not zstd data")
            p = subprocess.run([BIN, "run", graph("compress.json"), "--set", f'source={{"type":"files","path":"{d}"}}',
                                "--set", "stages[0].params.mode=decompress", "--set", "stages[0].params.input=path",
                                "--set", f"sink.path={top}/out"], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(b"zstd: $'" + d.encode() + b"/bad\\xff.zst': corrupt zstd data", p.stderr)
            src = write(os.path.join(d, "in.txt"), b"1\n")
            p = subprocess.run([BIN, "run", graph("exec.json"), "--set", f"source.path={src}",
                                "--set", "stages[0].params.argv=" + json.dumps([self.EVIL])], capture_output=True,
                               timeout=60)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assert_clean(p.stderr)
            self.assertIn("cannot run $'x\\nflowpool: forged line\\x1b[31m': No such file or directory",
                          p.stderr.decode())

    def test_output_flags_and_spec_names(self):
        # --report, --metrics, --trace and --timeline paths, and the spec file's own name.
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "nope", self.EVIL)
            quoted = "$'" + d + "/nope/x\\nflowpool: forged line\\x1b[31m'"
            for flag in ("--report", "--metrics", "--trace", "--timeline"):
                with self.subTest(flag=flag):
                    p = subprocess.run([BIN, "run", graph("seed.json"), "-q", flag, bad], capture_output=True,
                                       timeout=60)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assert_clean(p.stderr)
                    self.assertIn(f"{flag}: cannot write {quoted}", p.stderr.decode())
            spec = os.path.join(d, self.EVIL + ".json")
            for argv in (["validate", spec], ["run", spec], ["dot", graph("seed.json"), "--report", spec]):
                with self.subTest(argv=argv[0]):
                    p = subprocess.run([BIN, *argv], capture_output=True, timeout=60)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assert_clean(p.stderr)
                    self.assertIn("$'" + d + "/x\\nflowpool: forged line\\x1b[31m.json'", p.stderr.decode())

    def test_quoted_names_paste_back_into_bash(self):
        # Each quoted form is a bash word for exactly the name's bytes.
        names = ["plain name", "ütf8 名前", "say \"hi\"", "it's", "back\\slash", "$HOME", "`id`", "a!b", "tab\there",
                 "c1\u009bx", "bidi\u202ex", "new\nline", ""]
        with tempfile.TemporaryDirectory() as d:
            src = write(os.path.join(d, "in.txt"), b"1\n")
            for name in names:
                with self.subTest(name=name):
                    raw = name.encode("utf-8", "surrogateescape")
                    cmd = os.path.join(d, "nope", name).encode("utf-8", "surrogateescape")
                    argv = json.dumps([cmd.decode("utf-8", "surrogateescape")], ensure_ascii=False)
                    p = subprocess.run([BIN.encode(), b"run", graph("exec.json").encode(), b"--set",
                                        f"source.path={src}".encode(), b"--set",
                                        b"stages[0].params.argv=" + argv.encode("utf-8", "surrogateescape")],
                                       capture_output=True, timeout=60)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assert_clean(p.stderr)
                    m = re.search(rb"cannot run (.*): No such file or directory\n", p.stderr)
                    self.assertTrue(m, p.stderr)
                    back = subprocess.run(["bash", "-c", b"printf %s " + m.group(1)], capture_output=True,
                                          timeout=60)
                    self.assertEqual(back.stdout, cmd)
                    if raw and all(0x20 <= c < 0x7f and chr(c) not in "\"\\$`!" for c in raw):
                        self.assertEqual(m.group(1), b'"' + cmd + b'"')  # plain names: as before


class ExecProcessTests(unittest.TestCase):
    def lines_file(self, d, n):
        return write(os.path.join(d, "in.txt"), "".join(f"{i}\n" for i in range(1, n + 1)).encode())

    def test_background_children_die_on_interrupt_and_timeout(self):
        for how in ("SIGINT", "SIGTERM", "--timeout"):
            with self.subTest(how=how), tempfile.TemporaryDirectory() as d:
                m = marker()
                src = self.lines_file(d, 200)
                # Each command leaves `sleep M` running in the background, then exits.
                script = f"sleep {m} & sleep 0.05; echo $1"
                extra = ["--timeout", "2s"] if how == "--timeout" else []
                p = subprocess.Popen([BIN, "run", graph("exec.json"), "-q", "-j", "2", "--set", f"source.path={src}",
                                      "--set", "stages[0].params.shell=true",
                                      "--set", "stages[0].params.argv=" + json.dumps([script]), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    self.assertTrue(wait_for(lambda: len(procs_with_marker(m)) >= 6, 30), "background sleeps started")
                    if how != "--timeout":
                        p.send_signal(getattr(signal, how))
                    _, err = p.communicate(timeout=60)
                    want = {"SIGINT": 130, "SIGTERM": 143, "--timeout": 3}[how]
                    self.assertEqual(p.returncode, want, err)
                    left = wait_for(lambda: not procs_with_marker(m), 10)
                    self.assertTrue(left, f"background children survived: {procs_with_marker(m)}")
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                    kill_pids(procs_with_marker(m))

    def test_kill_9_takes_running_commands_down(self):
        with tempfile.TemporaryDirectory() as d:
            m = marker()
            src = self.lines_file(d, 10)
            p = subprocess.Popen([BIN, "run", graph("exec.json"), "-q", "-j", "3", "--set", f"source.path={src}",
                                  "--set", "stages[0].params.argv=" + json.dumps(["sleep", m])],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                kids = wait_for(lambda: len(procs_with_marker(m)) == 3 and procs_with_marker(m), 30)
                self.assertTrue(kids, "three commands were started")
                self.assertEqual(sorted(kids), sorted(children_of(p.pid)))
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
                gone = wait_for(lambda: not procs_with_marker(m), 10)
                self.assertTrue(gone, f"commands survived kill -9 of flowpool: {procs_with_marker(m)}")
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                kill_pids(procs_with_marker(m))

    def test_completed_run_and_ordinary_exits_unchanged(self):
        # Commands spawned with the new launcher: exit codes, signals, stdout/stderr, environment.
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, 4)
            script = 'echo "err $1" >&2; [ "$1" = 3 ] && kill -9 $$; [ "$1" = 4 ] && exit 5; echo "out $1 $FP_X"'
            env = dict(os.environ, FP_X="env-ok")
            p = subprocess.run([BIN, "run", graph("exec.json"), "-j", "1", "--keep-order", "--set", f"source.path={src}",
                                "--set", "stages[0].params.shell=true", "--set", "stages[0].params.argv=" + json.dumps([script])],
                               capture_output=True, timeout=60, env=env)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stdout, b"out 1 env-ok\nout 2 env-ok\n")
            err = p.stderr.decode()
            self.assertIn("[item 1] err 1", err)
            self.assertIn('"/bin/sh" was killed by signal 9', err)
            self.assertIn('"/bin/sh" exited with status 5', err)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    seed = int(os.environ.get("FLOWPOOL_TEST_SEED", str(int(time.time() * 1000) % 100000)))
    print(f"seed {seed} (FLOWPOOL_TEST_SEED)", file=sys.stderr)
    random.seed(seed)
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
