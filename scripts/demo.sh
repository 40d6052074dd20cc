#!/usr/bin/env bash
# The main demo: installs what is missing, builds, runs examples/demo.lua.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
exec "${BUILD_DIR:-build}/coproc-lua" examples/demo.lua "$@"
