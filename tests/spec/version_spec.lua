-- version_spec.lua: the version lives in one place, project(coproc VERSION
-- ...) in CMakeLists.txt, and every other place that shows it agrees:
-- core.version and coproc._VERSION (a compile definition), coproc-lua -v,
-- the release rockspec (file name, version, tag), the man page. Run from the
-- source directory (ctest, `luarocks test`).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"


local cmake = U.slurp("CMakeLists.txt")
local VERSION = assert(cmake:match("project%(coproc%s+VERSION%s+([%d%.]+)"),
  "no project(coproc VERSION x.y.z) in CMakeLists.txt")
local HOMEPAGE = assert(cmake:match('HOMEPAGE_URL%s+"([^"]+)"'), "no HOMEPAGE_URL in project()")

-- A rockspec is Lua: load it in an empty environment.
local function rockspec(path)
  local env = {}
  assert(load(U.slurp(path), "@" .. path, "t", env))()
  return env
end

describe("the version", function()
  it("of coproc.core and coproc._VERSION is CMake's project version", function()
    assert.equal(VERSION, coproc.core.version)
    assert.equal("coproc " .. VERSION, coproc._VERSION)
  end)

  it("is what coproc-lua -v prints", function()
    local lua = os.getenv("COPROC_LUA") or "coproc-lua"
    local p = assert(io.popen(lua .. " -v"))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("coproc-lua " .. VERSION .. " -- Lua 5.4", 1, true), out)
  end)

  it("is the release rockspec's file name, version and tag", function()
    local path = ("rockspecs/coproc-%s-1.rockspec"):format(VERSION)
    local f = io.open(path)
    assert(f, ("%s is missing: after changing the version in CMakeLists.txt, rename the release "
      .. "rockspec to it and set its version and source.tag"):format(path))
    f:close()
    local r = rockspec(path)
    assert.equal(VERSION .. "-1", r.version)
    assert.equal("v" .. VERSION, r.source.tag)
    assert.equal("git+" .. HOMEPAGE .. ".git", r.source.url)
    assert.equal(HOMEPAGE, r.description.homepage)
    local ls = assert(io.popen("ls rockspecs"))
    for name in ls:lines() do
      assert(name == ("coproc-%s-1.rockspec"):format(VERSION),
        "rockspecs/" .. name .. " is not the rockspec of version " .. VERSION)
    end
    ls:close()
  end)

  it("is that of the scm rockspec's build, which differs only in version and source", function()
    local scm, rel = rockspec("coproc-scm-1.rockspec"), rockspec(("rockspecs/coproc-%s-1.rockspec"):format(VERSION))
    assert.equal("scm-1", scm.version)
    assert.equal(rel.source.url, scm.source.url)
    assert.equal("main", scm.source.branch)
    for _, k in ipairs { "package", "rockspec_format", "description", "dependencies", "external_dependencies",
        "build", "test_dependencies", "test" } do
      assert.same(rel[k], scm[k], k)
    end
    assert.equal("OFF", scm.build.variables.COPROC_BUILD_TESTS)
  end)

  it("is in the man page", function()
    local th = U.slurp("docs/coproc-lua.1"):match("\n%.TH ([^\n]*)")
    assert.truthy(th and th:find('"coproc ' .. VERSION .. '"', 1, true),
      "docs/coproc-lua.1: .TH must name \"coproc " .. VERSION .. "\", has: " .. tostring(th))
  end)

  -- luarocks_test.sh runs this spec through `luarocks test` against a
  -- scratch tree: coproc must come from that tree.
  local tree = os.getenv("COPROC_EXPECT_TREE")
  if tree then
    it("comes from the installed tree", function()
      local where = package.searchpath("coproc", package.path)
      assert.equal(1, where and where:find(tree, 1, true), where)
      assert.equal(1, package.searchpath("coproc.core", package.cpath):find(tree, 1, true))
    end)
  end
end)
