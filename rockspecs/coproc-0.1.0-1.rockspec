-- The release rockspec of coproc 0.1.0: the source is the tag v0.1.0.
-- For a checkout use `luarocks make` (the scm rockspec at the top of the
-- tree, see there why). spec/version_spec checks this file name, its
-- version and its tag against project(coproc VERSION ...) in CMakeLists.txt.
rockspec_format = "3.0"
package = "coproc"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/coproc-lua/coproc.git",
  tag = "v0.1.0",
}
description = {
  summary = "Stateful worker processes for Lua 5.4 with a prioritised messenger, pools and a monitor",
  detailed = [[
Worker processes with their own Lua state, talked to through a priority
messenger (msgpack frames over socketpairs, libev); any closure can be sent.
A Pool (Python's multiprocessing.Pool with priorities, futures and dead
workers replaced), a Monitor sampling memory and CPU of a process tree with
PLplot plots, and coproc-lua, a lua5.4-compatible interpreter.]],
  homepage = "https://github.com/coproc-lua/coproc",
  license = "MIT",
  labels = { "multiprocessing", "ipc", "process", "pool", "msgpack", "libev" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "dkjson >= 2.5",   -- Stats:to_json / from_json
  "argparse >= 0.7", -- coproc-lua -m coproc.monitor (the monitor's command line)
}
-- The C libraries the build links. GNU readline is used by coproc-lua's REPL
-- when found (COPROC_READLINE=AUTO) and not needed otherwise.
external_dependencies = {
  LIBEV = { header = "ev.h", library = "ev" },
  MSGPACK = { header = "msgpack.h", library = "msgpackc" },
  PLPLOT = { header = "plplot/plplot.h", library = "plplot" }, -- coproc/plot.so (COPROC_PLOT)
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    CMAKE_PREFIX_PATH = "$(LIBEV_DIR);$(MSGPACK_DIR);$(PLPLOT_DIR)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_LIBDIR = "$(LUA_LIBDIR)",
    LUA_INSTALL_LMOD = "$(LUADIR)",
    LUA_INSTALL_CMOD = "$(LIBDIR)",
    COPROC_BUILD_TESTS = "OFF",
    COPROC_PLOT = "ON",
  },
}
-- `luarocks test`: the busted specs of tests/spec (.busted), run against
-- the installed rock; COPROC_LUA is the rock's coproc-lua.
test_dependencies = { "busted" }
test = {
  type = "busted",
}
