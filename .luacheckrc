-- luacheck configuration: `luacheck .` from the top of the tree (ctest: lint/luacheck).
std = "lua54"
codes = true
include_files = { "lua", "examples", "bench", "tests", "meta" }
exclude_files = { "build*/**" }

files["tests/spec"] = { std = "+busted" }
