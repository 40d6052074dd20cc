#!/bin/sh
# install_test.sh BUILD LUA LMOD CMOD BINDIR: install into a scratch DESTDIR
# and use coproc from there, with a stock lua5.4 and the installed coproc-lua.
set -eu
build=$1 lua=$2 lmod=$3 cmod=$4 bindir=$5
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
DESTDIR="$dest" cmake --install "$build" >/dev/null
test -f "$dest$cmod/coproc/core.so"
test -f "$dest$lmod/coproc/init.lua"
test -x "$dest$bindir/coproc-lua"
script='
local coproc = require "coproc"
assert(package.searchpath("coproc.core", package.cpath):find(os.getenv("DEST"), 1, true), "core.so not from the install")
local w <close> = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking() * 2) end):start()
w.messenger:send_request(21)
assert(w.messenger:receive_blocking() == 42)
print("installed coproc works")
'
export DEST="$dest"
LUA_PATH="$dest$lmod/?.lua;$dest$lmod/?/init.lua;;" LUA_CPATH="$dest$cmod/?.so;;" \
  LD_PRELOAD="${CP_ASAN_PRELOAD:-}" "$lua" -e "$script"
LUA_PATH="$dest$lmod/?.lua;$dest$lmod/?/init.lua;;" LUA_CPATH="$dest$cmod/?.so;;" "$dest$bindir/coproc-lua" -e "
local coproc = require 'coproc'
local w <close> = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking() + 1) end):start()
w.messenger:send_request(1)
assert(w.messenger:receive_blocking() == 2)
print('installed coproc-lua works')"
