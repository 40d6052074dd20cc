#!/usr/bin/env bash
# Fresh worker start against its floor: bench/start_floor.c (C fork + a new
# lua_State) and bench/start_bench.lua (coproc), run interleaved ROUNDS times
# (default 5; this kind of machine is noisy), each figure as min / median /
# max over the rounds and the goals as ratios of medians (and their range
# over the rounds), and a worker's PSS against the floor child's (both the
# mean over n_one running side by side). Timings, not tests. BUILD_DIR as
# in bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${1:-5}
bash scripts/build.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  "$BUILD_DIR/bench/start_floor" 50 256 | sed "s/^/$r /" >> "$out"
  for mode in small big bigfirst; do
    "$BUILD_DIR/coproc-lua" bench/start_bench.lua $mode 50 256 | grep -v host_rss | sed "s/^/$r /" >> "$out"
  done
done
awk -v rounds="$ROUNDS" '
  { v[$2, $1] = $3; names[$2] = 1 }
  function sorted(name,   i, n, a, t, j) {
    n = 0
    for (i = 1; i <= rounds; i++) if ((name, i) in v) a[++n] = v[name, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    lo = a[1]; hi = a[n]; med = a[int((n + 1) / 2)]
  }
  function fig(name, unit) { sorted(name); printf "%-22s %9.0f %9.0f %9.0f %s\n", name, lo, med, hi, unit ? unit : "us"; M[name] = med }
  function ratio(label, a, b, goal,   i, r, rlo, rhi) {
    rlo = 1e9; rhi = 0
    for (i = 1; i <= rounds; i++) if ((a, i) in v && (b, i) in v) {
      r = v[a, i] / v[b, i]; if (r < rlo) rlo = r; if (r > rhi) rhi = r
    }
    printf "%-44s %5.2fx  (rounds %.2f-%.2f)  goal <= %s  %s\n", label, M[a] / M[b], rlo, rhi, goal,
      M[a] / M[b] <= goal ? "met" : "MISSED"
  }
  END {
    printf "%-22s %9s %9s %9s    (%d rounds)\n", "per worker", "min", "median", "max", rounds
    fig("floor_one"); fig("floor_many"); fig("start_one"); fig("start_one_named"); fig("start_many")
    fig("start_one_big"); fig("start_one_bigfirst")
    fig("floor_pss", "KiB"); fig("start_pss", "KiB")
    print ""
    ratio("fresh start vs C fork + lua_State floor", "start_one", "floor_one", 1.5)
    ratio("class naming coproc vs the floor", "start_one_named", "floor_one", 1.5)
    ratio("256 at once vs the floor 256 at once", "start_many", "floor_many", 1.5)
    ratio("300 MiB host (grown with workers) vs floor", "start_one_big", "floor_one", 1.5)
    ratio("300 MiB host (grown first) vs floor", "start_one_bigfirst", "floor_one", 1.5)
    ratio("300 MiB host (grown with workers) vs 5 MiB", "start_one_big", "start_one", 1.2)
    ratio("300 MiB host (grown first) vs 5 MiB", "start_one_bigfirst", "start_one", 1.2)
    ratio("256 at once vs one at a time", "start_many", "start_one", 1.3)
    ratio("floor: 256 at once vs one at a time", "floor_many", "floor_one", 1.3)
    ratio("worker PSS vs a floor child", "start_pss", "floor_pss", 1.5)
  }
' "$out"
