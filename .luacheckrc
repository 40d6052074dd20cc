-- luacheck configuration (ctest lint/luacheck runs `luacheck lua examples
-- bench tests meta` from the top of the tree).
std = "lua54"
max_line_length = 130
exclude_files = {
  "build*/**",
}

-- busted specs: describe, it, assert.are.same, spy, ...
files["tests/spec"] = {
  std = "+busted",
  -- `local _ENV = _G`: functions a spec ships to workers see the real
  -- globals, not busted's sandbox; luacheck does not count global accesses
  -- as uses of that local.
  ignore = { "211/_ENV" },
}
files["tests/mpi"] = files["tests/spec"]   -- the coproc.mpi specs (run under mpirun)

-- LuaCATS definitions (---@meta): empty function bodies that only declare
-- their parameters, class tables that only collect method stubs, and
-- annotation lines as long as their descriptions.
files["meta"] = { unused_args = false, ignore = { "212", "241", "631" } }

-- Bytecode walkers read a dump field by field (`n, i = rd(dump, i)` with
-- some fields skipped), and crafted closures name upvalues that are never
-- set: the overwritten values (311), never-set locals (221) and shadowed
-- byte builders (421, 431) are the point there.
files["tests/fuzz/make_corpus.lua"] = { max_line_length = 140, ignore = { "311", "421" } }
files["tests/spec/codec_spec.lua"] = {
  std = "+busted", ignore = { "211/_ENV", "221", "241", "311", "431" },
}
