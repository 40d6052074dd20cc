#!/usr/bin/env bash
# Builds, runs the raw C socketpair baseline and the coproc benchmark, and
# prints them side by side with the targets. Timings, not tests.
# Arguments name the groups to run (rtt, stream, big, start; default all).
# BUILD_DIR (default build) picks the build tree; CP_BENCH_SCALE scales the
# coproc iteration counts; CP_BENCH_PIN=<cpu> runs both on one CPU (taskset):
# on VMs a wake-up across CPUs costs tens of microseconds and varies from run
# to run, which swamps the small round trip; pinned, it measures software cost.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash scripts/build.sh >/dev/null
pin=()
[ -n "${CP_BENCH_PIN:-}" ] && pin=(taskset -c "$CP_BENCH_PIN")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "raw C baseline ($BUILD_DIR/bench/raw_baseline)..." >&2
"${pin[@]}" "$BUILD_DIR/bench/raw_baseline" "$@" | tee "$out/raw" >&2
echo "coproc (bench/core_bench.lua)..." >&2
"${pin[@]}" "$BUILD_DIR/coproc-lua" bench/core_bench.lua "$@" | tee "$out/coproc" >&2
echo >&2

# ratio: how many times slower coproc is than its floor (>1 = slower): the
# raw C baseline, or for "vs codec" the in-process codec floor coproc prints.
# "with a core each": the stream's rate from its CPU time per message on
# either side (bench/core_bench.lua), what it reaches when nothing else runs.
awk '
  FNR == 1 { file++ }
  file == 1 { raw[$1] = $2; unit[$1] = $3; next }
  file == 2 { cp[$1] = $2; unit[$1] = $3; next }
  function row(label, rawname, cpname, lower_is_better, target, ok,   r, c, ratio) {
    r = raw[rawname]; c = cp[cpname]
    if (r == "" || c == "") { printf "%-28s %14s %14s %8s  %-22s %s\n", label, r == "" ? "-" : r, c == "" ? "-" : c, "-", target, "-"; return }
    ratio = lower_is_better ? c / r : r / c
    printf "%-28s %14s %14s %7.2fx  %-22s %s\n", label, r, c, ratio, target, ok ? "ok" : "MISSED"
  }
  # against a floor coproc itself prints (bench/core_bench.lua: floor_*)
  function frow(label, floorname, cpname, target, ok,   r, c) {
    r = cp[floorname]; c = cp[cpname]
    if (r == "" || c == "") { printf "%-28s %14s %14s %8s  %-22s %s\n", label, r == "" ? "-" : r, c == "" ? "-" : c, "-", target, "-"; return }
    printf "%-28s %14s %14s %7.2fx  %-22s %s\n", label, r, c, r / c, target, ok ? "ok" : "MISSED"
  }
  END {
    printf "%-28s %14s %14s %8s  %-22s %s\n", "measurement", "floor", "coproc", "ratio", "target", ""
    row("round trip, small (us)", "rtt_small", "rtt_small", 1, "<= 1.5x raw",
        cp["rtt_small"] != "" && cp["rtt_small"] <= 1.5 * raw["rtt_small"])
    row("stream tables, vs write each", "stream_small_write", "stream_small", 0, ">= 3000000 msgs/s",
        cp["stream_small"] >= 3000000)
    row("stream tables, vs 64K batch", "stream_small_batched", "stream_small", 0, ">= 3000000 msgs/s",
        cp["stream_small"] >= 3000000)
    frow("stream tables, vs codec", "floor_small", "stream_small", ">= 3000000 msgs/s",
        cp["stream_small"] >= 3000000)
    frow("  with a core each", "floor_small", "stream_small_cpu_bound", ">= 3000000 msgs/s",
        cp["stream_small_cpu_bound"] >= 3000000)
    row("stream integers, vs 64K batch", "stream_small_batched", "stream_int", 0, ">= 6000000 msgs/s",
        cp["stream_int"] >= 6000000)
    frow("stream integers, vs codec", "floor_int", "stream_int", ">= 6000000 msgs/s",
        cp["stream_int"] >= 6000000)
    frow("  with a core each", "floor_int", "stream_int_cpu_bound", ">= 6000000 msgs/s",
        cp["stream_int_cpu_bound"] >= 6000000)
    row("1 MiB round trip (GB/s)", "roundtrip_1mib", "roundtrip_1mib", 0, "<= 1.1x raw",
        cp["roundtrip_1mib"] != "" && raw["roundtrip_1mib"] <= 1.1 * cp["roundtrip_1mib"])
    row("16 MiB round trip (GB/s)", "roundtrip_16mib", "roundtrip_16mib", 0, "<= 2x raw",
        cp["roundtrip_16mib"] != "" && raw["roundtrip_16mib"] <= 2 * cp["roundtrip_16mib"])
    row("64 MiB round trip (GB/s)", "roundtrip_64mib", "roundtrip_64mib", 0, "<= 2x raw",
        cp["roundtrip_64mib"] != "" && raw["roundtrip_64mib"] <= 2 * cp["roundtrip_64mib"])
    # the floor here is a bare C fork; bench/start.sh has the goal (1.5x a
    # C fork + lua_State, over several rounds)
    row("start to first reply (us)", "start_first_reply", "start_first_reply", 1, "see bench/start.sh",
        1)
  }
' "$out/raw" "$out/coproc"
