#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer targets of tests/fuzz with clang-14
# (-DCOPROC_FUZZ=ON, ASan + UBSan, into ${BUILD_DIR:-build-fuzz}) and runs
# each target for N seconds (default 60), one after another:
#
#   scripts/fuzz.sh [seconds]      FUZZ_TARGETS="codec" scripts/fuzz.sh 600
#
# New interesting inputs go to a scratch corpus ($BUILD_DIR/fuzz-corpus/<t>;
# the committed seeds in tests/fuzz/corpus/<t> are read, never written).
# A finding (crash, leak, timeout, out-of-memory) is saved under
# $BUILD_DIR/fuzz-findings/<t>/ and the target restarts until its time is
# up. Once fixed, minimize it (fuzz_<t> -minimize_crash=1 -runs=10000 FILE)
# and commit it as tests/fuzz/corpus/<t>/found_<what>: ctest replays it on
# every run. Prints executions, new inputs and findings per target.
#
# ASan does not see inside the system liblua (not instrumented), valgrind
# does: with FUZZ_VALGRIND=1 the scratch corpus of each target is replayed
# under valgrind by the replay binary of the default build (build/, made by
# scripts/build.sh; VALGRIND_BUILD_DIR to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
targets=${FUZZ_TARGETS:-frame messenger codec}
BUILD_DIR=${BUILD_DIR:-build-fuzz}
COPROC_FUZZ=1 bash scripts/deps.sh
CC=${FUZZ_CC:-clang-14} cmake -S . -B "$BUILD_DIR" -DCOPROC_FUZZ=ON -DCOPROC_PLOT=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in $targets; do build+=("fuzz_$t"); done
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target "${build[@]}" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
  scratch=$BUILD_DIR/fuzz-corpus/$t findings=$BUILD_DIR/fuzz-findings/$t
  mkdir -p "$scratch" "$findings"
  log=$BUILD_DIR/fuzz-$t.log
  : >"$log"
  # The codec target keeps one Lua state whose garbage is freed in later
  # runs: libFuzzer's per-input leak check would fire on every input. Its
  # leaks are looked for when the corpus is replayed (ctest under ASan and
  # valgrind) instead.
  extra=()
  [ "$t" = codec ] && extra+=(-detect_leaks=0)
  end=$((SECONDS + secs)) execs=0 runs=0
  while [ $SECONDS -lt $end ]; do
    runs=$((runs + 1))
    "$BUILD_DIR/fuzz_$t" -max_total_time=$((end - SECONDS)) -print_final_stats=1 -timeout=20 \
      -rss_limit_mb=1024 -artifact_prefix="$findings/" "${extra[@]}" \
      "$scratch" "tests/fuzz/corpus/$t" >>"$log" 2>&1 || true
    n=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    execs=$((execs + ${n:-0}))
    sed -i 's/stat::number_of_executed_units/stat::counted_executed_units/' "$log"
  done
  found=$(find "$findings" -type f | wc -l)
  inputs=$(find "$scratch" -type f | wc -l)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  where=""
  if [ "$found" -gt 0 ]; then where=" in $findings"; status=1; fi
  if [ "${FUZZ_VALGRIND:-0}" = 1 ]; then
    replay=${VALGRIND_BUILD_DIR:-build}/fuzz_replay_$t
    if valgrind -q --error-exitcode=99 --leak-check=full "$replay" "$scratch" >>"$log" 2>&1; then
      where="$where, valgrind replay of the scratch corpus clean"
    else
      where="$where, valgrind replay of the scratch corpus FAILED (see $log)"
      status=1
    fi
  fi
  echo "fuzz_$t: $execs executions in ${secs}s ($runs run(s)), ${cov:-cov: ?}, scratch corpus $inputs inputs, findings $found$where"
done
exit $status
