#!/usr/bin/env bash
# The pool's host loop and memory against their floors: bench/pool_floor.c
# (a C host and 2 workers over socketpairs) and bench/pool_host.lua (coproc
# Pool(2), the same loop in one Lua process, the peak RSS at 1e7 items and
# the RSS of the two arrays alone), run interleaved ROUNDS times (default 3;
# this kind of machine is noisy): each figure as min / median / max, the
# goals on the medians. Timings, not tests. BUILD_DIR as in bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${1:-3}
bash scripts/build.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  "$BUILD_DIR/bench/pool_floor" 1000000 | sed "s/^/$r /" >> "$out"
  "$BUILD_DIR/coproc-lua" bench/pool_host.lua rate 1000000 | sed "s/^/$r /" >> "$out"
  "$BUILD_DIR/coproc-lua" bench/pool_host.lua memory 10000000 | sed "s/^/$r /" >> "$out"
  "$BUILD_DIR/coproc-lua" bench/pool_host.lua arrays 10000000 | sed "s/^/$r /" >> "$out"
done
awk -v rounds="$ROUNDS" '
  { v[$2, $1] = $3; unit[$2] = $4 }
  function stats(name,   i, n, a, t, j) {
    n = 0
    for (i = 1; i <= rounds; i++) if ((name, i) in v) a[++n] = v[name, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    lo = a[1]; hi = a[n]; med = a[int((n + 1) / 2)]
  }
  function fig(name) { stats(name); printf "%-16s %14.1f %14.1f %14.1f %s\n", name, lo, med, hi, unit[name]; M[name] = med }
  END {
    printf "%-16s %14s %14s %14s    (%d rounds)\n", "figure", "min", "median", "max", rounds
    fig("pool_floor"); fig("lua_fill"); fig("pool_map"); fig("pool_peak_rss"); fig("arrays_rss")
    print ""
    printf "Pool(2):map at 1e6: %.2f M items/s  goal >= 8 M/s  %s\n", M["pool_map"] / 1e6, (M["pool_map"] >= 8e6 ? "met" : "MISSED")
    printf "  vs the C floor: %.2fx of it; vs one Lua process filling the results: %.2fx\n",
      M["pool_map"] / M["pool_floor"], M["pool_map"] / M["lua_fill"]
    printf "host peak RSS at 1e7 vs the two arrays: %.2fx  goal <= 1.25  %s\n", M["pool_peak_rss"] / M["arrays_rss"],
      (M["pool_peak_rss"] <= 1.25 * M["arrays_rss"] ? "met" : "MISSED")
  }
' "$out"
