#!/usr/bin/env bash
# Every test: installs what is missing, builds, runs ctest (C units, busted
# specs, examples). Extra args go to cmake (e.g. -DCOPROC_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 600
