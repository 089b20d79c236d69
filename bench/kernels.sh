#!/usr/bin/env bash
# Whole-process benchmarks of the data-processing kernels against the standard tools,
# all at 2 workers, in one run of this script (figures are ratios from that one run):
#
#   sha256 of a 512 MB tree of 1 MB files:  sha256-tree.json   vs sha256sum, xargs -P2 sha256sum
#   compress a 256 MB text-like file:       compress.json      vs zstd -T2 -3
#   2,000 runs of `true`:                   exec.json          vs xargs -P2 -n1, parallel -j2
#
# Each command runs REPS times (default 3), interleaved with its peers; the best wall
# time counts. Inputs are generated under $BENCH_DIR (default /tmp/flowpool-bench-kernels)
# and read once beforehand, so every tool starts with the same warm page cache.
#
# Writes bench/results/kernels.json (raw figures) and docs/benchmarks-kernels.md.
# usage: bench/kernels.sh [FLOWPOOL_BINARY]     (default: build/dev/flowpool)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
fp=$(realpath "${1:-${FLOWPOOL:-build/dev/flowpool}}")
reps=${REPS:-3}
dir=${BENCH_DIR:-/tmp/flowpool-bench-kernels}
for tool in sha256sum xargs zstd parallel python3; do
  command -v "$tool" >/dev/null || { echo "kernels.sh: needs $tool (bash scripts/setup-deps)" >&2; exit 2; }
done
[[ -x $fp ]] || { echo "kernels.sh: no flowpool binary at $fp" >&2; exit 2; }
mkdir -p "$dir"

# ---- inputs -----------------------------------------------------------------------------
if [[ ! -f $dir/tree.done ]]; then
  rm -rf "$dir/tree"
  for d in $(seq -w 0 7); do
    mkdir -p "$dir/tree/d$d"
    for f in $(seq -w 0 63); do head -c 1048576 /dev/urandom >"$dir/tree/d$d/f$f"; done
  done
  touch "$dir/tree.done"
fi
if [[ ! -f $dir/text.done ]]; then
  # Text-like: lines of words from a 5,000-word vocabulary (compresses about 3:1, like logs or prose).
  python3 - "$dir/text" <<'PY'
import random, sys
rnd = random.Random(42)
vocab = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10))) for _ in range(5000)]
target = 256 * 1024 * 1024
with open(sys.argv[1], "wb") as f:
    size = 0
    while size < target:
        block = "".join(" ".join(rnd.choices(vocab, k=rnd.randint(4, 16))) + "\n" for _ in range(20000)).encode()
        block = block[: target - size]
        f.write(block)
        size += len(block)
PY
  touch "$dir/text.done"
fi
seq 2000 >"$dir/exec-input"
cat "$dir"/tree/*/* "$dir/text" >/dev/null  # warm the page cache for every tool alike

# ---- timing -----------------------------------------------------------------------------
declare -A best
now_ns() { date +%s%N; }
timeit() {  # timeit KEY CMD...   (stdout of CMD discarded unless redirected inside)
  local key=$1; shift
  local t0 t1
  t0=$(now_ns)
  "$@"
  t1=$(now_ns)
  local ms=$(( (t1 - t0) / 1000000 ))
  if [[ -z ${best[$key]:-} || $ms -lt ${best[$key]} ]]; then best[$key]=$ms; fi
  echo "  $key: ${ms} ms" >&2
}

sha_fp()    { "$fp" run graphs/sha256-tree.json -q -j 2 --set "source.path=$dir/tree" >"$dir/sha.fp"; }
sha_one()   { (cd "$dir" && find tree -type f | sort | xargs sha256sum) >"$dir/sha.one"; }
sha_xargs() { (cd "$dir" && find tree -type f | sort | xargs -P2 -n 32 sha256sum) >"$dir/sha.xargs"; }
zst_fp()    { "$fp" run graphs/compress.json -q -j 2 --set "source.path=$dir/text" --set "sink.path=$dir/text.fp.zst"; }
zst_tool()  { zstd -q -f -T2 -3 "$dir/text" -o "$dir/text.tool.zst"; }
exec_fp()   { "$fp" run graphs/exec.json -q -j 2 --set "source.path=$dir/exec-input" --set 'stages[0].params.argv=["true"]' >/dev/null; }
exec_xargs() { xargs -P2 -n1 true <"$dir/exec-input"; }
exec_par()  { parallel -j2 true <"$dir/exec-input"; }

for ((r = 1; r <= reps; r++)); do
  echo "round $r/$reps" >&2
  timeit sha_fp sha_fp
  timeit sha_one sha_one
  timeit sha_xargs sha_xargs
  timeit zst_fp zst_fp
  timeit zst_tool zst_tool
  timeit exec_fp exec_fp
  timeit exec_xargs exec_xargs
  timeit exec_par exec_par
done

# ---- correctness of what was timed --------------------------------------------------------
(cd "$dir" && "$fp" run "$repo/graphs/sha256-tree.json" -q -j 2 --set source.path=tree) >"$dir/sha.fp.rel"
cmp -s "$dir/sha.fp.rel" "$dir/sha.one" || { echo "kernels.sh: sha256-tree output differs from sha256sum" >&2; exit 1; }
zstd -q -d -c "$dir/text.fp.zst" | cmp -s - "$dir/text" || { echo "kernels.sh: compress output does not round-trip" >&2; exit 1; }

# ---- results ------------------------------------------------------------------------------
mb_tree=512
mb_text=256
fp_zst=$(stat -c %s "$dir/text.fp.zst")
tool_zst=$(stat -c %s "$dir/text.tool.zst")
commit=${KERNELS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=${KERNELS_DIRTY:-}
[[ -n ${KERNELS_COMMIT:-} ]] || dirty=$(git status --porcelain -- src include graphs bench/kernels.sh 2>/dev/null | head -1)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
cores=$(nproc)
sha_ni=$(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)
kernel=$(uname -r)
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cmdline="bench/kernels.sh $fp (REPS=$reps)"
vers="$(sha256sum --version | head -1); $(zstd --version); $(parallel --version | head -1); $(xargs --version | head -1)"

python3 - "$repo" <<PY
import json, sys
best = {k: int(v) for k, v in [$(for k in "${!best[@]}"; do printf '("%s", %s),' "$k" "${best[$k]}"; done)]}
r = lambda a, b: round(a / b, 3)
res = {
  "machine": {"cpu": "$cpu", "cores": $cores, "sha_ni": "$sha_ni", "kernel": "$kernel"},
  "commit": "$commit", "tree_dirty": bool("$dirty"), "date": "$when", "command": "$cmdline", "tools": "$vers",
  "workers": 2, "repetitions": $reps, "best_wall_ms": best,
  "sha256": {"mb": $mb_tree, "files": 512,
             "throughput_mb_s": {k: round($mb_tree / (best[k] / 1000), 1) for k in ("sha_fp", "sha_one", "sha_xargs")},
             "flowpool_vs_sha256sum": r(best["sha_one"], best["sha_fp"]),
             "flowpool_vs_xargs_P2": r(best["sha_xargs"], best["sha_fp"]), "target_vs_sha256sum": 1.9},
  "compress": {"mb": $mb_text, "flowpool_bytes": $fp_zst, "zstd_bytes": $tool_zst,
               "throughput_mb_s": {k: round($mb_text / (best[k] / 1000), 1) for k in ("zst_fp", "zst_tool")},
               "flowpool_vs_zstd_T2": r(best["zst_tool"], best["zst_fp"]), "target": 1.0},
  "exec": {"runs": 2000, "wall_ms": {k: best[k] for k in ("exec_fp", "exec_xargs", "exec_par")},
           "flowpool_wall_over_xargs": r(best["exec_fp"], best["exec_xargs"]),
           "flowpool_wall_over_parallel": r(best["exec_fp"], best["exec_par"]), "target_wall_over_xargs": 1.0},
}
with open(sys.argv[1] + "/bench/results/kernels.json", "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
s, c, e = res["sha256"], res["compress"], res["exec"]
ok = lambda b: "met" if b else "**missed**"
md = f"""<!-- generated by bench/kernels.sh; do not edit by hand -->
## Kernels against the standard tools

Whole processes, 2 workers, best of {res['repetitions']} interleaved runs, one run of the script
(ratios above 1 mean flowpool is faster, except the exec row, which is a wall-time ratio).

- machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, SHA-NI {res['machine']['sha_ni']}, Linux {res['machine']['kernel']}
- commit: \`{res['commit']}\`{' (with uncommitted changes)' if res['tree_dirty'] else ''}, {res['date']}
- command: \`{res['command']}\`
- tools: {res['tools']}

| job | flowpool | compared with | figure | target | |
|---|---|---|---|---|---|
| sha256 of {s['mb']} MB in 512 files of 1 MB | {best['sha_fp']} ms ({s['throughput_mb_s']['sha_fp']} MB/s) | \`sha256sum\`: {best['sha_one']} ms; \`xargs -P2 -n32 sha256sum\`: {best['sha_xargs']} ms | {s['flowpool_vs_sha256sum']}× sha256sum's throughput, {s['flowpool_vs_xargs_P2']}× xargs -P2's | ≥ 1.9× sha256sum | {ok(s['flowpool_vs_sha256sum'] >= 1.9)} |
| compress {c['mb']} MB of text-like data | {best['zst_fp']} ms ({c['throughput_mb_s']['zst_fp']} MB/s, {c['flowpool_bytes']} bytes) | \`zstd -T2 -3\`: {best['zst_tool']} ms ({c['zstd_bytes']} bytes) | {c['flowpool_vs_zstd_T2']}× zstd's throughput | ≥ 1.0× | {ok(c['flowpool_vs_zstd_T2'] >= 1.0)} |
| 2,000 runs of \`true\` | {best['exec_fp']} ms | \`xargs -P2 -n1\`: {best['exec_xargs']} ms; \`parallel -j2\`: {best['exec_par']} ms | wall {e['flowpool_wall_over_xargs']}× xargs's, {e['flowpool_wall_over_parallel']}× parallel's | wall ≤ 1.0× xargs's | {ok(e['flowpool_wall_over_xargs'] <= 1.0)} |

Raw figures: \`bench/results/kernels.json\`.
"""
with open(sys.argv[1] + "/docs/benchmarks-kernels.md", "w") as f:
    f.write(md)
print(md)
PY
