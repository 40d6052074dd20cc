#!/bin/sh
# install_test.sh BUILD LUA LMOD CMOD BINDIR MANDIR DATADIR: install into a
# scratch DESTDIR and use coproc from there, with a stock lua5.4 and the
# installed coproc-lua (which finds the moved tree on its own, no LUA_PATH).
set -eu
build=$1 lua=$2 lmod=$3 cmod=$4 bindir=$5 mandir=$6 datadir=$7
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
DESTDIR="$dest" cmake --install "$build" >/dev/null
test -f "$dest$cmod/coproc/core.so"
test -f "$dest$lmod/coproc/init.lua"
test -x "$dest$bindir/coproc-lua"
test -f "$dest$mandir/man1/coproc-lua.1"
if command -v man >/dev/null; then MANPATH="$dest$mandir" man -w coproc-lua >/dev/null; fi
test -f "$dest$datadir/lua-language-server/addons/coproc/config.json"
test -f "$dest$datadir/lua-language-server/addons/coproc/library/coproc.lua"
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
# -E: no LUA_PATH/LUA_CPATH at all; the DESTDIR tree is not where CMake
# was told it would be, so only the path relative to the executable works.
env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 DEST="$dest" "$dest$bindir/coproc-lua" -E -e "
local coproc = require 'coproc'
assert(package.searchpath('coproc', package.path):find(os.getenv('DEST'), 1, true) == 1, 'coproc not from the install')
local plot = package.searchpath('coproc.plot', package.cpath) -- when built (COPROC_PLOT)
assert(not plot or plot:find(os.getenv('DEST'), 1, true) == 1, 'coproc.plot not from the install')
local w <close> = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking() + 1) end):start()
w.messenger:send_request(1)
assert(w.messenger:receive_blocking() == 2)
print('installed coproc-lua works')"
