package = "coproc"
version = "scm-1"
source = { url = "git+file:///work/main" }
description = {
  summary = "Stateful worker processes for Lua 5.4 with a prioritised messenger, pools and a monitor",
  license = "MIT",
}
dependencies = { "lua >= 5.4, < 5.5" }
external_dependencies = {
  LIBEV = { header = "ev.h" },
  MSGPACK = { header = "msgpack.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUA_INSTALL_LMOD = "$(LUADIR)",
    LUA_INSTALL_CMOD = "$(LIBDIR)",
  },
}
