#!/usr/bin/env bash
# bench/device-scaling.sh - the scaling curve on a bigger machine, from binaries
# built here. Prepare a self-contained folder (binaries + every shared library
# they load, glibc's loader included) and run it there:
#
#   bench/device-scaling.sh pack build/bench build/bench7-device   # here
#   bench/device-scaling.sh run  build/bench7-device OUTDIR        # there (no build tools needed)
#
# `run` writes OUTDIR/scaling16-{cpu,empty}.json (Google Benchmark JSON),
# OUTDIR/scaling16-go.jsonl and OUTDIR/machine.txt. Worker counts: $WORKERS
# (default 1,2,4,8,16). Each step has its own time limit, so a slow step
# leaves the others' results.
set -uo pipefail
mode=${1:?usage: device-scaling.sh pack BUILD DIR | run DIR OUTDIR}
case "$mode" in
  pack)
    build=${2:?build dir}; dir=${3:?target dir}
    rm -rf "$dir"; mkdir -p "$dir/lib"
    cp "$build/bench/bm_peers" "$dir/"
    [ -x "$build/bench/go/gopool" ] && cp "$build/bench/go/gopool" "$dir/"
    ldd "$build/bench/bm_peers" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | sort -u | while read -r so; do
      cp -L "$so" "$dir/lib/"
    done
    cp -L /lib64/ld-linux-x86-64.so.2 "$dir/lib/"
    du -sh "$dir"
    ;;
  run)
    dir=$(cd "${2:?dir}" && pwd); out=${3:?outdir}
    workers=${WORKERS:-1,2,4,8,16}
    { date -u; nproc; lscpu 2>/dev/null | head -20; uname -a; grep PRETTY /etc/os-release; } > "$out/machine.txt" 2>&1
    timeout 170 "$dir/lib/ld-linux-x86-64.so.2" --library-path "$dir/lib" "$dir/bm_peers" \
      --fp_workers="$workers" --fp_workloads=cpu10us,cpu1us --benchmark_min_time=0.05 \
      --benchmark_out="$out/scaling16-cpu.json" --benchmark_out_format=json 2>&1 | tail -n 100
    echo "cpu rc=$?"
    timeout 120 "$dir/lib/ld-linux-x86-64.so.2" --library-path "$dir/lib" "$dir/bm_peers" \
      --fp_workers="$workers" --fp_workloads=empty --fp_scale=0.2 --benchmark_min_time=0.05 \
      --benchmark_filter='^empty/(flowpool|raw_tbb|tbb_for|tbb_pipeline|omp|asio|moodycamel|cpp_channels)/' \
      --benchmark_out="$out/scaling16-empty.json" --benchmark_out_format=json 2>&1 | tail -n 60
    echo "empty rc=$?"
    if [ -x "$dir/gopool" ]; then
      for n in ${workers//,/ }; do timeout 20 "$dir/gopool" -workload empty -jobs 200000 -workers "$n"; done \
        > "$out/scaling16-go.jsonl"
      cat "$out/scaling16-go.jsonl"
    fi
    ;;
  *) echo "device-scaling.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac
