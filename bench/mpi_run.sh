#!/usr/bin/env bash
# Runs bench/mpi_bench.lua (coproc.mpi against plain C MPI and a local Pool)
# in a 3-rank job over shared memory, then over TCP (--mca btl self,tcp, as
# between nodes), and prints each side by side with its target. Timings,
# not tests. BUILD_DIR (default build); CP_BENCH_SCALE scales the counts;
# MPIRUN (default mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MPIRUN=${MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for btl in shm tcp; do
  args=()
  [ "$btl" = tcp ] && args=(--mca btl self,tcp)
  echo "coproc.mpi bench over $btl ($MPIRUN -n 3)..." >&2
  "$MPIRUN" --oversubscribe "${args[@]}" -n 3 "$BUILD_DIR/coproc-lua" -m coproc.mpi bench/mpi_bench.lua \
    | tee "$out/$btl" >&2
  echo >&2
  awk -v btl="$btl" '
    { v[$1] = $2; u[$1] = $3 }
    function row(label, a, b, ratio, target, ok) {
      printf "%-34s %14s %14s %8s  %-18s %s\n", label, a, b, ratio, target, ok
    }
    END {
      print "over " btl ":"
      row("measurement", "raw / local", "coproc.mpi", "ratio", "target", "")
      r = v["rtt_small"] / v["raw_mpi_rtt"]
      row("round trip, small (us)", v["raw_mpi_rtt"], v["rtt_small"], sprintf("%.2fx", r), "<= 2x raw MPI", r <= 2 ? "ok" : "MISSED")
      r = v["map_local_pool2"] / v["map_mpi_2ranks"]
      row("pool:map 1e6 trivial (items/s)", v["map_local_pool2"], v["map_mpi_2ranks"], sprintf("%.2fx", r), "<= 1.5x local", r <= 1.5 ? "ok" : "MISSED")
      row("streaming integers (msgs/s)", "", v["stream_int"], "", "", "")
      row("1 MiB round trip (GB/s)", "", v["roundtrip_1mib"], "", "", "")
      row("rank 0 CPU waiting 2 s (ms)", "", v["idle_wait_cpu"], "", "", "")
      print ""
    }' "$out/$btl"
done
