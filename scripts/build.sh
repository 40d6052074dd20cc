#!/usr/bin/env bash
# Configures and builds into ${BUILD_DIR:-build}. Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} -DCOPROC_BUILD_TESTS=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
