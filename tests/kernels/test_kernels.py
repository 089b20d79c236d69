#!/usr/bin/env python3
"""End-to-end tests of the data-processing kernels (files/chunks sources; sha256, zstd,
wordcount and exec kernels; checksums, file, topk and concat sinks) through the real
CLI and the shipped graphs, compared with the standard tools. All test data is
generated here, under a temporary directory.

Run by ctest: test_kernels.py FLOWPOOL_BINARY REPO_DIR TestClass."""
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = None
REPO = None
MIB = 1 << 20


def graph(name):
    return os.path.join(REPO, "graphs", name)


def run(*args, timeout=120, stdin=None, as_nobody=False, text=False):
    cmd = [BIN, *args]
    if as_nobody and os.geteuid() == 0:  # root reads any file: drop to nobody to test "unreadable"
        # nobody may not reach the checkout (a clone under /root is mode 700): run a copy of the
        # binary and of every graph named on the command line from a world-readable directory.
        tools = tempfile.mkdtemp(prefix="flowpool-nobody-")
        os.chmod(tools, 0o755)
        exe = os.path.join(tools, "flowpool")
        shutil.copy2(BIN, exe)
        os.chmod(exe, 0o755)
        moved = []
        for a in args:
            if a.startswith(os.path.join(REPO, "graphs") + os.sep):
                copy = os.path.join(tools, os.path.basename(a))
                shutil.copy2(a, copy)
                os.chmod(copy, 0o644)
                a = copy
            moved.append(a)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe, *moved]
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=stdin, text=text)
        finally:
            shutil.rmtree(tools, ignore_errors=True)
        return p.returncode, p.stdout, p.stderr
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=stdin, text=text)
    return p.returncode, p.stdout, p.stderr


def children_of(pid):
    """Pids (and states) of the processes whose parent is pid, from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out[int(d)] = fields[0]
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def text_like(n, seed):
    """n bytes of word-like text with newlines (compressible, like a log or prose)."""
    rnd = random.Random(seed)
    vocab = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(1, 9)))) for _ in range(3000)]
    out, size = [], 0
    while size < n:
        line = " ".join(rnd.choice(vocab) for _ in range(rnd.randint(3, 14))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


class Sha256TreeTests(unittest.TestCase):
    def make_tree(self, root):
        files = {
            "a/b/c/deep.txt": b"deep\n",
            "a/empty": b"",
            "a-b": b"sorts between a and a/ in a flat sort, not here\n",
            "with space/file name.txt": b"spaces\n",
            "ütf8/名前.txt": "ünïcode\n".encode(),
            "back\\slash": b"escaped by sha256sum\n",
            "new\nline": b"escaped too\n",
            "big.bin": os.urandom(3 * MIB + 17),
            "z/.hidden": b"dotfiles count\n",
        }
        for rel, data in files.items():
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        os.symlink("a/b/c/deep.txt", os.path.join(root, "link-to-file"))
        os.symlink("a/b", os.path.join(root, "link-to-dir"))
        os.symlink("nowhere", os.path.join(root, "dangling"))

    def reference(self, root, follow):
        """sha256sum over `find [-L] -type f`, sorted path component by path component."""
        find = ["find", *(["-L"] if follow else []), root, "-type", "f", "-print0"]
        paths = [p for p in subprocess.run(find, capture_output=True, check=True).stdout.split(b"\0") if p]
        paths.sort(key=lambda p: p.split(b"/"))
        return subprocess.run(["sha256sum", "--", *paths], capture_output=True, check=True).stdout

    def test_equals_sha256sum_line_for_line(self):
        with tempfile.TemporaryDirectory() as d:
            root = os.path.join(d, "tree")
            self.make_tree(root)
            for follow in (False, True):
                with self.subTest(follow_symlinks=follow):
                    rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={root}",
                                       "--set", f"source.follow_symlinks={'true' if follow else 'false'}")
                    self.assertEqual(rc, 0, err)
                    ref = self.reference(root, follow)
                    self.assertEqual(out.splitlines(), ref.splitlines())
                    self.assertEqual(out, ref)
                    self.assertEqual(b"link-to-file" in out, follow)
                    escaped = [l for l in out.splitlines() if l.endswith(b"/new\\nline")]
                    self.assertEqual(len(escaped), 1, out)
                    self.assertTrue(escaped[0].startswith(b"\\"), "an escaped name's line starts with a backslash")

    def test_workers_glob_and_single_file(self):
        with tempfile.TemporaryDirectory() as d:
            root = os.path.join(d, "tree")
            self.make_tree(root)
            rc, one, err = run("run", graph("sha256-tree.json"), "-q", "-j", "1", "--set", f"source.path={root}")
            self.assertEqual(rc, 0, err)
            rc, four, err = run("run", graph("sha256-tree.json"), "-q", "-j", "4", "--set", f"source.path={root}")
            self.assertEqual(rc, 0, err)
            self.assertEqual(one, four)
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={root}",
                               "--set", "source.glob=*.txt")
            self.assertEqual(rc, 0, err)
            names = [l.split(b"  ", 1)[1] for l in out.splitlines()]
            self.assertEqual(len(names), 3, out)
            self.assertTrue(all(n.endswith(b".txt") for n in names))
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={root}",
                               "--set", "source.recursive=false")
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(out.splitlines()), 4, out)  # a-b, back\slash, big.bin, new\nline
            single = os.path.join(root, "big.bin")
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={single}")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, subprocess.run(["sha256sum", single], capture_output=True).stdout)

    def test_many_files_streamed(self):
        with tempfile.TemporaryDirectory() as d:
            for i in range(40):
                os.makedirs(os.path.join(d, f"d{i:02}"))
                for j in range(50):
                    with open(os.path.join(d, f"d{i:02}", f"f{j}"), "wb") as f:
                        f.write(f"{i} {j}\n".encode())
            rc, out, err = run("run", graph("sha256-tree.json"), "-q", "--set", f"source.path={d}")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, self.reference(d, False))


class CompressTests(unittest.TestCase):
    def roundtrip(self, d, data, extra=()):
        src, dst = os.path.join(d, "in"), os.path.join(d, "out.zst")
        with open(src, "wb") as f:
            f.write(data)
        rc, out, err = run("run", graph("compress.json"), "-q", "--set", f"source.path={src}",
                           "--set", f"sink.path={dst}", *extra)
        self.assertEqual(rc, 0, err)
        self.assertFalse(os.path.exists(dst + ".partial"))
        back = subprocess.run(["zstd", "-q", "-d", "-c", dst], capture_output=True)
        self.assertEqual(back.returncode, 0, back.stderr)
        self.assertEqual(back.stdout, data)
        return dst

    def test_sizes_round_trip_through_zstd(self):
        with tempfile.TemporaryDirectory() as d:
            for n in (0, 1, MIB, MIB + 1, 5 * MIB + 12345):
                with self.subTest(size=n):
                    data = text_like(n, n)
                    dst = self.roundtrip(d, data)
                    if n > MIB:
                        self.assertLess(os.path.getsize(dst), n // 2, "text-like data compresses")
                        frames = subprocess.run(["zstd", "-l", "-v", dst], capture_output=True, text=True).stdout
                        self.assertRegex(frames, r"# Zstandard Frames: *%d" % ((n + MIB - 1) // MIB))

    def test_small_chunks_many_workers_and_levels(self):
        with tempfile.TemporaryDirectory() as d:
            data = os.urandom(300_000) + text_like(700_000, 7)
            self.roundtrip(d, data, ["-j", "4", "--set", "source.size=4096", "--set", "stages[0].params.level=19"])
            self.roundtrip(d, data, ["--set", "source.size=1"][:0] + ["--set", "source.size=65537"])

    def test_memory_bounded_by_capacity(self):
        # 64 MiB in 1 MiB chunks through a queue of 4: the process never holds the input whole.
        libs = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
        if "libasan" in libs or "libtsan" in libs:
            self.skipTest("peak RSS means nothing under a sanitizer's shadow memory and quarantine")
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "in"), os.path.join(d, "out.zst")
            with open(src, "wb") as f:
                for _ in range(64):
                    f.write(os.urandom(MIB))
            # -j 2: each worker holds a few MiB, and the property is about --capacity, not cores.
            p = subprocess.Popen([BIN, "run", graph("compress.json"), "-q", "-j", "2", "--capacity", "4",
                                  "--set", f"source.path={src}", "--set", f"sink.path={dst}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            self.assertEqual(p.returncode, 0, p.stderr.read())
            p.stderr.close()
            self.assertLess(usage.ru_maxrss, 48 * 1024, "peak RSS in KiB: well under the 64 MiB input")
            self.assertEqual(os.path.getsize(dst) > 64 * MIB, True, "random data does not compress")

    def test_stdin(self):
        with tempfile.TemporaryDirectory() as d:
            data = text_like(2 * MIB + 3, 11)
            dst = os.path.join(d, "o.zst")
            p = subprocess.run([BIN, "run", graph("compress.json"), "-q", "--set", "source.path=-",
                                "--set", f"sink.path={dst}"], input=data, capture_output=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(subprocess.run(["zstd", "-d", "-c", dst], capture_output=True).stdout, data)

    def test_interrupt_leaves_clean_partial_and_resume_completes(self):
        with tempfile.TemporaryDirectory() as d:
            data = text_like(3 * MIB, 5)
            src, dst, log = os.path.join(d, "in"), os.path.join(d, "out.zst"), os.path.join(d, "log")
            with open(src, "wb") as f:
                f.write(data)
            # A slow first stage (20 ms per 64 KiB chunk) so the run is still going when interrupted.
            slow = ["--set", "source.size=65536", "--set", "options.capacity=4",
                    "--set", 'stages=[{"name":"slow","kernel":"sleep","workers":1,"params":{"ms":20}},'
                             '{"name":"compress","kernel":"zstd","workers":2}]']
            args = ["run", graph("compress.json"), "-q", "--set", f"source.path={src}", "--set", f"sink.path={dst}",
                    "--joblog", log, *slow]
            p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # Interrupt once some output is written (the whole run takes about 48 x 20 ms).
            self.assertTrue(wait_for(lambda: os.path.exists(dst + ".partial") and os.path.getsize(dst + ".partial") > 0,
                                     30), "some output was written before the interrupt")
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130, err)
            self.assertFalse(os.path.exists(dst))
            self.assertTrue(os.path.exists(dst + ".partial"))
            # Clean: the .partial is whole frames, a prefix of the full output.
            part = subprocess.run(["zstd", "-q", "-d", "-c", dst + ".partial"], capture_output=True)
            self.assertEqual(part.returncode, 0, part.stderr)
            self.assertGreater(len(part.stdout), 0)
            self.assertLess(len(part.stdout), len(data))
            self.assertEqual(part.stdout, data[:len(part.stdout)])
            rc, out, err = run(*args, "--resume")
            self.assertEqual(rc, 0, err)
            self.assertFalse(os.path.exists(dst + ".partial"))
            self.assertEqual(subprocess.run(["zstd", "-d", "-c", dst], capture_output=True).stdout, data)

    def test_failed_commit_reports_and_resume_commits(self):
        # The run itself succeeds, but renaming the finished .partial fails (the target
        # path became a directory meanwhile): exit 1 with the cause named, the report
        # written, the complete output kept in .partial, and --resume commits it
        # without running any item again.
        with tempfile.TemporaryDirectory() as d:
            data = text_like(3 * MIB, 7)
            src, dst, log = os.path.join(d, "in"), os.path.join(d, "out.zst"), os.path.join(d, "log")
            rep = os.path.join(d, "report.json")
            with open(src, "wb") as f:
                f.write(data)
            slow = ["--set", "source.size=65536", "--set", "options.capacity=4",
                    "--set", 'stages=[{"name":"slow","kernel":"sleep","workers":1,"params":{"ms":20}},'
                             '{"name":"compress","kernel":"zstd","workers":2}]']
            args = ["run", graph("compress.json"), "--set", f"source.path={src}", "--set", f"sink.path={dst}",
                    "--joblog", log, *slow]
            p = subprocess.Popen([BIN, *args, "--report", rep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            self.assertTrue(wait_for(lambda: os.path.exists(dst + ".partial") and os.path.getsize(dst + ".partial") > 0,
                                     30), "some output was written while the run goes on")
            os.mkdir(dst)
            with open(os.path.join(dst, "taken"), "w") as f:
                f.write("x")
            _, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 1, err)
            self.assertIn(f'flowpool: stopped by: item 0: sink: file: cannot rename "{dst}.partial" to "{dst}": '
                          'Is a directory', err)
            with open(rep) as f:
                report = json.load(f)
            self.assertEqual(report["status"], "failed")
            self.assertEqual(report["failed"], 0)
            self.assertIn("cannot rename", report["cause"]["message"])
            whole = subprocess.run(["zstd", "-q", "-d", "-c", dst + ".partial"], capture_output=True)
            self.assertEqual(whole.stdout, data)
            shutil.rmtree(dst)
            with open(log) as f:
                logged = f.read()
            rc, out, err = run(*args, "--resume", text=True)
            self.assertEqual(rc, 0, err)
            self.assertIn("0 succeeded, 0 failed, 0 cancelled, 48 skipped (resume)", err)
            with open(log) as f:
                self.assertEqual(f.read(), logged, "the resume ran no item again")
            self.assertFalse(os.path.exists(dst + ".partial"))
            self.assertEqual(subprocess.run(["zstd", "-d", "-c", dst], capture_output=True).stdout, data)

    def test_decompress_graph_restores_files(self):
        with tempfile.TemporaryDirectory() as d:
            data = text_like(MIB + 99, 3)
            dst = self.roundtrip(d, data)
            out = os.path.join(d, "restored")
            rc, _, err = run("run", graph("compress.json"), "-q", "--set", f"source.path={dst}",
                             "--set", 'source={"type":"files","path":"%s"}' % dst,
                             "--set", "stages[0].params.mode=decompress", "--set", "stages[0].params.input=path",
                             "--set", f"sink.path={out}")
            self.assertEqual(rc, 0, err)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)


def reference_topk(data, k):
    """Independent reference: words are runs of [A-Za-z0-9] and bytes >= 0x80, ASCII lowercased."""
    counts = collections.Counter(w.lower() for w in re.findall(rb"[A-Za-z0-9\x80-\xff]+", data))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return b"".join(b"%d\t%s\n" % (c, w) for w, c in ranked)


class WordcountTests(unittest.TestCase):
    def sample(self, seed, n_lines):
        rnd = random.Random(seed)
        words = ["The", "the", "THE", "don't", "co-op", "naïve", "日本語", "x1", "x2", "x3", "e.g.", "a_b", "tab\tsep",
                 "end.", "Zebra", "apple", "apple", "Apple", "42", "4.2"]
        words += ["w%d" % i for i in range(200)]
        lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 12))) for _ in range(n_lines)]
        return ("\r\n".join(lines[: n_lines // 2]) + "\n" + "\n".join(lines[n_lines // 2:])).encode()

    def test_topk_equals_reference(self):
        with tempfile.TemporaryDirectory() as d:
            data = self.sample(1, 60000)
            src = os.path.join(d, "text")
            with open(src, "wb") as f:
                f.write(data)
            for k, extra in ((10, []), (50, ["-j", "3", "--set", "source.size=4096"]), (500, [])):
                with self.subTest(k=k):
                    rc, out, err = run("run", graph("wordcount.json"), "-q", "--set", f"source.path={src}",
                                       "--set", f"sink.k={k}", *extra)
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out, reference_topk(data, k))

    def test_ties_alphabetical_and_stdin(self):
        data = b"b a c\nc b a\nd\n"
        p = subprocess.run([BIN, "run", graph("wordcount.json"), "-q", "--set", "source.path=-", "--set", "sink.k=3"],
                           input=data, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"2\ta\n2\tb\n2\tc\n")

    def test_line_boundary_never_splits_words(self):
        with tempfile.TemporaryDirectory() as d:
            data = b"".join(b"%s\n" % (b"word%d " % i * 7) for i in range(5000))
            src = os.path.join(d, "text")
            with open(src, "wb") as f:
                f.write(data)
            rc, out, err = run("run", graph("wordcount.json"), "-q", "--set", f"source.path={src}",
                               "--set", "source.size=100", "--set", "sink.k=20")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, reference_topk(data, 20))


class ExecTests(unittest.TestCase):
    ARGV_JSON = "import sys, json; sys.stdout.write(json.dumps(sys.argv[1:]) + chr(10))"

    def lines_file(self, d, lines):
        p = os.path.join(d, "in.txt")
        with open(p, "w") as f:
            f.write("".join(l + "\n" for l in lines))
        return p

    def test_order_under_keep_order(self):
        with tempfile.TemporaryDirectory() as d:
            n = 40
            src = self.lines_file(d, [str(i) for i in range(1, n + 1)])
            # Later items finish first: item i sleeps (n - i) ms.
            script = 'sleep "0.0$(( (40 - $1) % 10 ))"; echo "out $1"'
            for sink in ("concat", "print"):
                with self.subTest(sink=sink):
                    rc, out, err = run("run", graph("exec.json"), "-q", "-j", "4", "--keep-order",
                                       "--set", f"source.path={src}", "--set", "stages[0].params.shell=true",
                                       "--set", "stages[0].params.argv=" + json.dumps([script]),
                                       "--set", 'sink={"type":"%s","format":"{value}"}' % sink
                                       if sink == "print" else 'sink={"type":"concat"}', text=True)
                    self.assertEqual(rc, 0, err)
                    want = "".join(f"out {i}\n" for i in range(1, n + 1))
                    self.assertEqual(out if sink == "concat" else out.replace("\n\n", "\n"), want)

    def test_matches_parallel_k_when_available(self):
        if shutil.which("parallel") is None:
            self.skipTest("GNU parallel is not installed (scripts/setup-deps installs it)")
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, ["a b", "it's", 'say "hi"', "$HOME", "x;y", "`id`", "tab\there"])
            rc, out, err = run("run", graph("exec.json"), "-q", "--set", f"source.path={src}",
                               "--set", 'stages[0].params.argv=["printf","[%s]\\n"]', text=True)
            self.assertEqual(rc, 0, err)
            ref = subprocess.run(["parallel", "-q", "-k", "-j2", "printf", "[%s]\\n", "::::", src],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(ref.returncode, 0, ref.stderr)
            self.assertEqual(out, ref.stdout)

    def test_args_with_spaces_and_quotes_intact_no_shell(self):
        inputs = ["two words", "it's", 'say "hi"', "$HOME and $(id)", "semi;colon && echo no", "`id`", "back\\slash",
                  "  padded  ", "*", "ünï"]
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, inputs)
            argv = ["python3", "-c", self.ARGV_JSON, "{input}", "pre-{input}-post", "id={id}", "x y"]
            rc, out, err = run("run", graph("exec.json"), "-q", "--set", f"source.path={src}",
                               "--set", "stages[0].params.argv=" + json.dumps(argv), text=True)
            self.assertEqual(rc, 0, err)
            got = [json.loads(l) for l in out.splitlines()]
            want = [[s, f"pre-{s}-post", f"id={i}", "x y"] for i, s in enumerate(inputs, 1)]
            self.assertEqual(got, want)
            # shell: true still never splices: the input is "$1".
            rc, out, err = run("run", graph("exec.json"), "-q", "--set", f"source.path={src}",
                               "--set", "stages[0].params.shell=true",
                               "--set", 'stages[0].params.argv=["printf \'%s|\' \\"$1\\"; echo"]', text=True)
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.splitlines(), [s + "|" for s in inputs])

    def test_failures_and_retries_of_nonzero_exits(self):
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, [str(i) for i in range(1, 9)])
            marks = os.path.join(d, "marks")
            os.mkdir(marks)
            # Items 3 and 6 fail their first attempt; item 8 always fails (exit 7).
            script = ('m="%s/$1"; if [ "$1" = 8 ]; then echo "bad $1" >&2; exit 7; fi; '
                      'if [ "$1" = 3 ] || [ "$1" = 6 ]; then [ -e "$m" ] || { touch "$m"; exit 1; }; fi; echo "ok $1"'
                      % marks)
            rep = os.path.join(d, "r.json")
            rc, out, err = run("run", graph("exec.json"), "--set", f"source.path={src}",
                               "--set", "stages[0].params.shell=true", "--set",
                               "stages[0].params.argv=" + json.dumps([script]), "--retries", "2",
                               "--set", "options.backoff=10ms", "--report", rep, text=True)
            self.assertEqual(rc, 1, err)
            self.assertEqual(out, "".join(f"ok {i}\n" for i in range(1, 8)))
            with open(rep) as f:
                r = json.load(f)
            self.assertEqual((r["succeeded"], r["failed"]), (7, 1))
            self.assertEqual(r["retried"], 2 + 2)  # items 3, 6 once; item 8 twice
            self.assertEqual(r["errors"][0]["job"], 8)
            self.assertIn("exited with status 7", r["errors"][0]["message"])
            self.assertIn("[item 8] bad 8", err)  # stderr passed through with the job prefix

    def test_job_timeout_kills_sleep_100(self):
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, ["1"])
            for argv, grace in ((["sleep", "100"], "2s"), (["sh", "-c", "trap '' TERM; sleep 100; :", "x"], "300ms")):
                with self.subTest(argv=argv):
                    t0 = time.monotonic()
                    p = subprocess.Popen([BIN, "run", graph("exec.json"), "-q", "--set", f"source.path={src}",
                                          "--set", "stages[0].params.argv=" + json.dumps(argv),
                                          "--set", f"stages[0].params.grace={grace}", "--job-timeout", "500ms"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    kids = wait_for(lambda: children_of(p.pid), 10)
                    self.assertTrue(kids, "the command was started")
                    grandkids = set()
                    if argv[0] == "sh":  # wait until sh has forked its sleep, so the check can fail
                        grandkids = set(wait_for(lambda: {g for k in kids for g in children_of(k)}, 10) or ())
                        self.assertTrue(grandkids, "sh started its sleep")
                    _, err = p.communicate(timeout=30)
                    self.assertEqual(p.returncode, 1, err)
                    self.assertLess(time.monotonic() - t0, 20)
                    for pid in [*kids, *grandkids]:
                        self.assertFalse(alive(pid), f"child {pid} still running after the job timeout")

    def test_interrupt_kills_and_reaps_children(self):
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, [str(i) for i in range(1, 11)])
            p = subprocess.Popen([BIN, "run", graph("exec.json"), "-q", "-j", "3", "--set", f"source.path={src}",
                                  "--set", 'stages[0].params.argv=["sleep","100"]'],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            kids = wait_for(lambda: len(children_of(p.pid)) == 3 and children_of(p.pid), 10)
            self.assertTrue(kids, "three commands were started")
            p.send_signal(signal.SIGINT)
            # While flowpool shuts down, its children are killed and reaped by it: none is left
            # running, and none is left a zombie, when it exits.
            deadline = time.monotonic() + 30
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(p.wait(timeout=30), 130)
            for pid in kids:
                self.assertFalse(os.path.exists(f"/proc/{pid}") and alive(pid), f"child {pid} survived")

    def test_no_zombies_during_a_run(self):
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, [str(i) for i in range(1, 301)] + ["last"])
            script = 'if [ "$1" = last ]; then sleep 2; fi'
            p = subprocess.Popen([BIN, "run", graph("exec.json"), "-q", "--set", f"source.path={src}",
                                  "--set", "stages[0].params.shell=true",
                                  "--set", "stages[0].params.argv=" + json.dumps([script])],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Wait until only the last (slow) command is left, then look for zombies.
            wait_for(lambda: any(s == "S" for s in children_of(p.pid).values()), 20)
            time.sleep(0.3)
            states = children_of(p.pid)
            self.assertNotIn("Z", list(states.values()), states)
            _, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, 0, err)

    def test_nonexistent_command(self):
        with tempfile.TemporaryDirectory() as d:
            src = self.lines_file(d, ["a"])
            rc, out, err = run("run", graph("exec.json"), "--set", f"source.path={src}",
                               "--set", 'stages[0].params.argv=["no-such-command-xyz"]', text=True)
            self.assertEqual(rc, 1, err)
            self.assertIn('cannot run "no-such-command-xyz": No such file or directory', err)


class MalformedInputTests(unittest.TestCase):
    def test_source_cannot_open(self):
        for g in ("sha256-tree.json", "compress.json", "wordcount.json", "exec.json"):
            with self.subTest(graph=g):
                rc, out, err = run("run", graph(g), "-q", "--set", "source.path=/nonexistent/x",
                                   "--set", "sink.path=/tmp/unused" if g == "compress.json" else "source.path=/nonexistent/x",
                                   text=True)
                self.assertEqual(rc, 2, err)
                self.assertIn('"/nonexistent/x"', err)
                self.assertIn("No such file or directory", err)

    def test_directory_where_a_file_is_expected(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out, err = run("run", graph("compress.json"), "-q", "--set", f"source.path={d}",
                               "--set", f"sink.path={d}/o.zst", text=True)
            self.assertEqual(rc, 2, err)
            self.assertIn(f'"{d}" is a directory', err)
            rc, out, err = run("run", graph("wordcount.json"), "-q", "--set", f"source.path={d}", text=True)
            self.assertEqual(rc, 2, err)
            self.assertIn("is a directory", err)

    def test_output_not_writable(self):
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "in")
            with open(src, "wb") as f:
                f.write(b"data")
            rc, out, err = run("run", graph("compress.json"), "-q", "--set", f"source.path={src}",
                               "--set", f"sink.path={d}/no/such/dir/o.zst", text=True)
            self.assertEqual(rc, 2, err)
            self.assertIn(f'cannot create "{d}/no/such/dir/o.zst.partial": No such file or directory', err)

    def test_unreadable_file(self):
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            for name in ("ok1", "secret", "ok2"):
                with open(os.path.join(d, name), "w") as f:
                    f.write(name)
            os.chmod(os.path.join(d, "secret"), 0)
            rc, out, err = run("run", graph("sha256-tree.json"), "--set", f"source.path={d}", as_nobody=True,
                               text=True)
            self.assertEqual(rc, 1, err)
            self.assertIn(f'cannot open "{d}/secret": Permission denied', err)
            self.assertEqual(len(out.splitlines()), 2)  # the readable ones are still hashed
            rc, out, err = run("run", graph("compress.json"), "--set", f"source.path={d}/secret",
                               "--set", f"sink.path={d}/x.zst", as_nobody=True, text=True)
            self.assertEqual(rc, 2, err)
            self.assertIn(f'"{d}/secret": Permission denied', err)

    def test_path_vanishing_mid_run(self):
        with tempfile.TemporaryDirectory() as d:
            for i in range(4):
                with open(os.path.join(d, f"f{i}"), "w") as f:
                    f.write(str(i))
            # A first stage (one worker) marks each item as started, then waits 300 ms: once f0 is
            # marked, the listing is done, and f3 is hashed about 900 ms later. (Sink output can
            # be batched, so it cannot serve as the signal.)
            marks = os.path.join(d, "marks")
            os.mkdir(marks)
            script = 'touch "%s/$2"; sleep 0.3' % marks
            stages = [{"name": "wait", "kernel": "exec", "workers": 1, "params": {"shell": True, "argv": [script]}},
                      {"name": "hash", "kernel": "sha256", "workers": 1}]
            p = subprocess.Popen([BIN, "run", graph("sha256-tree.json"), "--set", f"source.path={d}",
                                  "--set", "source.glob=f*", "--set", "stages=" + json.dumps(stages)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(marks, "1")), 30))
            os.unlink(os.path.join(d, "f3"))
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 1, err)
            self.assertIn(f'cannot open "{d}/f3": No such file or directory', err)
            self.assertEqual(len(out.splitlines()), 3, (out, err))

    def test_truncated_zst_fed_back(self):
        with tempfile.TemporaryDirectory() as d:
            src, z = os.path.join(d, "in"), os.path.join(d, "in.zst")
            with open(src, "wb") as f:
                f.write(text_like(2 * MIB, 1))
            rc, _, err = run("run", graph("compress.json"), "-q", "--set", f"source.path={src}", "--set", f"sink.path={z}")
            self.assertEqual(rc, 0, err)
            with open(z, "rb") as f:
                whole = f.read()
            for cut, what in ((len(whole) - 7, "truncated"), (3, "truncated"), (0, "empty")):
                with self.subTest(cut=cut):
                    bad = os.path.join(d, f"cut{cut}.zst")
                    with open(bad, "wb") as f:
                        f.write(whole[:cut])
                    out = os.path.join(d, "restored")
                    rc, _, err = run("run", graph("compress.json"), "--set", f'source={{"type":"files","path":"{bad}"}}',
                                     "--set", "stages[0].params.mode=decompress", "--set", "stages[0].params.input=path",
                                     "--set", f"sink.path={out}", text=True)
                    self.assertEqual(rc, 1, err)
                    self.assertIn(f'"{bad}"', err)
                    self.assertIn(what, err)
                    self.assertFalse(os.path.exists(out), "a failed run commits no output")
            garbage = os.path.join(d, "garbage.zst")
            with open(garbage, "wb") as f:
                f.write(b"this is not zstd data at all")
            rc, _, err = run("run", graph("compress.json"), "--set", f'source={{"type":"files","path":"{garbage}"}}',
                             "--set", "stages[0].params.mode=decompress", "--set", "stages[0].params.input=path",
                             "--set", f"sink.path={d}/g", text=True)
            self.assertEqual(rc, 1, err)
            self.assertIn("corrupt zstd data", err)

    def test_shipped_graphs_take_their_paths_from_set(self):
        for g in ("sha256-tree.json", "compress.json", "wordcount.json", "exec.json"):
            with self.subTest(graph=g):
                rc, out, err = run("validate", graph(g), text=True)
                self.assertEqual(rc, 2, err)
                self.assertIn("source.path: is required", err)
                sets = ["--set", "source.path=x"] + (["--set", "sink.path=y"] if g == "compress.json" else [])
                rc, out, err = run("validate", graph(g), *sets, text=True)
                self.assertEqual(rc, 0, err)

    def test_kernels_are_listed(self):
        rc, out, err = run("kernels", text=True)
        self.assertEqual(rc, 0, err)
        for name in ("files", "chunks", "sha256", "zstd", "wordcount", "exec", "checksums", "file", "topk", "concat"):
            self.assertRegex(out, r"(?m)^  %s - " % name)
        self.assertIn("file - writes each value's bytes", out)
        self.assertIn("(forces ordered mode)", out)


if __name__ == "__main__":
    BIN, REPO = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
