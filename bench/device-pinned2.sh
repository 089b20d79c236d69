#!/usr/bin/env bash
# bench/device-pinned2.sh - issue 7's targets and the metrics cost on an idle
# 2-CPU slice of a bigger machine (every process pinned with taskset -c 0,1),
# from binaries built here. Three steps:
#
#   bench/device-pinned2.sh pack    build/bench build/pinned2-pack   # here: binaries + their shared libraries
#   bench/device-pinned2.sh run     build/pinned2-pack OUTDIR        # there (no build tools needed)
#   bench/device-pinned2.sh collect OUTDIR "machine words" "commit"  # here: OUTDIR -> bench/results/pinned2-*.json
#
# The device tool returns a limited number of files: run into a scratch folder
# and tar it into $OUT (`run build/pinned2-pack /tmp/p2; tar czf "$OUT/p2.tgz" -C /tmp/p2 .`).
#
# `collect` writes bench/results/pinned2-{bm_peers,bm_metrics,stream_rss,process}.json,
# which scripts/bench --report-only turns into docs/benchmarks.md's "idle 2-CPU
# slice" section. Each step of `run` has its own time limit, so a slow step
# leaves the others' results.
set -uo pipefail
mode=${1:?usage: device-pinned2.sh pack BUILD DIR | run DIR OUTDIR | collect OUTDIR MACHINE COMMIT}
case "$mode" in
  pack)
    build=${2:?build dir}; dir=${3:?target dir}
    rm -rf "$dir"; mkdir -p "$dir/lib"
    for b in bm_peers bm_metrics stream_rss go/gopool; do cp "$build/bench/$b" "$dir/"; done
    for b in bm_peers bm_metrics stream_rss; do ldd "$build/bench/$b"; done |
      awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | sort -u | while read -r so; do cp -L "$so" "$dir/lib/"; done
    cp -L /lib64/ld-linux-x86-64.so.2 "$dir/lib/"
    du -sh "$dir"
    ;;
  run)
    dir=$(cd "${2:?dir}" && pwd); out=${3:?outdir}
    mkdir -p "$out"
    pin=(taskset -c 0,1)
    ld=("${pin[@]}" "$dir/lib/ld-linux-x86-64.so.2" --library-path "$dir/lib")
    { date -u '+%Y-%m-%d %H:%M UTC'; nproc; lscpu 2>/dev/null | head -20; uname -a; grep PRETTY /etc/os-release; } > "$out/machine.txt" 2>&1
    timeout 45 "${ld[@]}" "$dir/bm_metrics" --benchmark_filter='ratio|sides' --benchmark_min_time=1 \
      --benchmark_repetitions=3 --benchmark_out="$out/bm_metrics.json" --benchmark_out_format=json 2>&1 | tail -n 12
    echo "metrics rc=$?"
    ms() { echo $(( ($(date +%s%N) - $1) / 1000 )); }  # µs since $1 (ns)
    for r in 1 2 3; do
      t=$(date +%s%N); timeout 20 "${pin[@]}" "$dir/gopool" -workload empty -jobs 1000000 -workers 2 >> "$out/go-empty.jsonl"
      ms "$t" >> "$out/go-empty.us"
      t=$(date +%s%N); timeout 20 "${ld[@]}" "$dir/stream_rss" flowpool 1000000 2 empty >> "$out/fp-empty.txt"
      ms "$t" >> "$out/fp-empty.us"
      timeout 20 "${pin[@]}" "$dir/gopool" -workload cancel -jobs 1000000 -workers 2 >> "$out/go-cancel.jsonl"
    done
    for n in 10000 10000000; do
      timeout 30 "${ld[@]}" "$dir/stream_rss" flowpool "$n" 2 empty >> "$out/fp-rss.txt"
      timeout 30 "${pin[@]}" "$dir/gopool" -workload empty -jobs "$n" -workers 2 -report-rss >> "$out/go-rss.jsonl"
    done
    tail -n 3 "$out"/*.txt "$out"/*.jsonl
    timeout 120 "${ld[@]}" "$dir/bm_peers" --fp_workloads=empty,cpu1us,cpu10us,sleep50ms,cancel_1M \
      --benchmark_filter='^(empty|cpu1us|cpu10us|sleep50ms|cancel_1M)/(flowpool|raw_tbb|tbb_for|tbb_pipeline|omp|asio|moodycamel)/' \
      --benchmark_min_time=0.2 --benchmark_repetitions=3 \
      --benchmark_out="$out/bm_peers.json" --benchmark_out_format=json 2>&1 | tail -n 40
    echo "peers rc=$?"
    ;;
  collect)
    out=${2:?outdir}; machine=${3:?machine words}; commit=${4:?commit}
    /usr/bin/python3 - "$out" "$machine" "$commit" <<'PY'
import json, os, re, shutil, sys
out, machine, commit = sys.argv[1:4]
res = "bench/results"
mt = os.path.join(out, "machine.txt")
if os.path.exists(mt):
    date = open(mt).readline().strip()
else:  # the device tool returned too few files: take the date Google Benchmark recorded
    date = json.load(open(os.path.join(out, "bm_peers.json")))["context"]["date"].replace("T", " ")[:16] + " UTC"
ctx = {"date": date, "commit": commit, "machine": machine}
def kv(line):
    return dict(x.split("=", 1) for x in line.split() if "=" in x)
def lines(name):
    p = os.path.join(out, name)
    return [l for l in open(p).read().splitlines() if l.strip()] if os.path.exists(p) else []
for name in ("bm_peers", "bm_metrics"):
    src = os.path.join(out, name + ".json")
    if os.path.exists(src):
        d = json.load(open(src))
        d.setdefault("context", {}).update({"flowpool_" + k: v for k, v in ctx.items()})
        json.dump(d, open(os.path.join(res, f"pinned2-{name}.json"), "w"), indent=1)
rss = []
for l in lines("fp-rss.txt"):
    d = kv(l)
    rss.append({"peer": "flowpool", "jobs": int(d["jobs"]), "workers": 2, "peak_rss_mb": float(d["peak_rss_mb"]),
                "wall_ms": float(d["wall_ms"])})
for l in lines("go-rss.jsonl"):
    d = json.loads(l)
    rss.append({"peer": "go", "jobs": d["jobs"], "workers": 2, "peak_rss_mb": d["peak_rss_bytes"] / 2**20,
                "wall_ms": d["wall_ns"] / 1e6})
json.dump({"context": ctx, "runs": rss}, open(os.path.join(res, "pinned2-stream_rss.json"), "w"), indent=1)
proc = []
go_us, fp_us = lines("go-empty.us"), lines("fp-empty.us")
for r, l in enumerate(lines("go-empty.jsonl")):
    d = json.loads(l)
    proc.append({"peer": "go", "workload": "empty", "jobs": d["jobs"], "workers": 2, "rep": r,
                 "process_wall_ms": int(go_us[r]) / 1e3, "inprocess_wall_ms": d["wall_ns"] / 1e6})
for r, l in enumerate(lines("fp-empty.txt")):
    d = kv(l)
    proc.append({"peer": "flowpool_driver", "workload": "empty", "jobs": int(d["jobs"]), "workers": 2, "rep": r,
                 "process_wall_ms": int(fp_us[r]) / 1e3, "inprocess_wall_ms": float(d["wall_ms"])})
for r, l in enumerate(lines("go-cancel.jsonl")):
    d = json.loads(l)
    proc.append({"peer": "go", "workload": "cancel_1M", "jobs": 1000000, "workers": 2, "rep": r,
                 "cancel_ms": d.get("cancel_ns", 0) / 1e6, "cancelled": d.get("cancelled"),
                 "accounted": d.get("accounted")})
json.dump({"context": ctx, "runs": proc}, open(os.path.join(res, "pinned2-process.json"), "w"), indent=1)
print("wrote", len(rss), "rss rows and", len(proc), "process rows")
PY
    ;;
  *) echo "device-pinned2.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac
