-- The development rockspec: the head of the main branch.
--
-- In a checkout, `luarocks make` (no argument: the one rockspec in this
-- directory) builds and installs the working tree as it is; the source below
-- is only fetched by `luarocks install --dev coproc` or `luarocks build
-- coproc-scm-1.rockspec`. Releases are rockspecs/coproc-<version>-1.rockspec,
-- whose source is the tag v<version>. A working tree is not a release (it is
-- ahead of the tag), so `luarocks make` installs it as scm-1, never under a
-- release version that `luarocks list` and dependants would believe; and the
-- versioned rockspecs stay in rockspecs/ so that `luarocks make` has exactly
-- one rockspec to pick. Keep the two files alike except version and source
-- (spec/version_spec checks the versioned one against CMakeLists.txt).
rockspec_format = "3.0"
package = "coproc"
version = "scm-1"
source = {
  url = "git+https://github.com/coproc-lua/coproc.git",
  branch = "main",
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
