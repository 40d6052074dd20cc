#!/usr/bin/env bash
# Installs the Debian packages coproc needs, only those missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config lua5.4 liblua5.4-dev libev-dev libmsgpack-dev
      libplplot-dev plplot-driver-cairo lua-busted lua-dkjson lua-argparse
      luarocks lua-check libreadline-dev ccache lua-luv lua-cqueues
      libopenmpi-dev openmpi-bin)   # coproc.mpi (COPROC_MPI, on when Open MPI is found)
[ "${COPROC_WITH_VALGRIND:-0}" = 1 ] && pkgs+=(valgrind)
# Only for scripts/fuzz.sh (libFuzzer needs clang); the default build uses gcc.
[ "${COPROC_FUZZ:-0}" = 1 ] && pkgs+=(clang-14 libclang-rt-14-dev libfuzzer-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "coproc: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
