#!/usr/bin/env bash
# Streaming small messages, several runs: each run streams tables and
# integers to a worker and measures the in-process codec floor
# (bench/core_bench.lua with CP_BENCH_ONLY), then the spread over the runs
# (min, median, max) and the median's ratio to the floor. The machine may be
# shared and noisy: a single run says little. "a core each" is the rate the
# CPU time per message on either side allows (n / the larger of the two
# processes' CPU times): what the stream does when nothing else runs, which
# on a busy VM the wall-clock rate does not show. Timings, not tests.
# CP_BENCH_RUNS (default 5) runs; BUILD_DIR as for bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
RUNS=${CP_BENCH_RUNS:-5}
bash scripts/build.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$RUNS"); do
  CP_BENCH_ONLY=stream_small,stream_int,floor "$BUILD_DIR/coproc-lua" bench/core_bench.lua | tee -a "$out" >&2
done
echo >&2
awk '
  { v[$1] = v[$1] " " $2 }
  function stats(name,   n, a, i, j, t) {
    n = split(v[name], a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    lo[name] = a[1]; hi[name] = a[n]; med[name] = a[int((n + 1) / 2)]
  }
  function line(label, name, floor) {
    stats(name); stats(floor)
    printf "%-18s %10.0f %10.0f %10.0f %12.0f %7.2fx\n", label, lo[name], med[name], hi[name], med[floor], med[floor] / med[name]
  }
  END {
    printf "%-18s %10s %10s %10s %12s %8s\n", "msgs/s", "min", "median", "max", "codec floor", "ratio"
    line("stream tables", "stream_small", "floor_small")
    line("  a core each", "stream_small_cpu_bound", "floor_small")
    line("stream integers", "stream_int", "floor_int")
    line("  a core each", "stream_int_cpu_bound", "floor_int")
  }
' "$out"
