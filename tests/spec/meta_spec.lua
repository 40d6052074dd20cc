-- meta_spec.lua: meta/library (the LuaCATS definitions the Lua language
-- server reads, installed with the rock) describes every name the public
-- modules export, every method of their classes, every option their option
-- checks accept and every error class; and nothing that is gone. A failure
-- lists each missing or stale name with the file and what to write there.
local describe, it, assert, before_each = describe, it, assert, before_each
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local errors = require "coproc.errors"
local pool = require "coproc.pool"
local monitor = require "coproc.monitor"
local resource = require "coproc.resource"
local future = require "coproc.future"
local has_plot, plot = pcall(require, "coproc.plot")
local mpi = require "coproc.mpi"   -- loads no MPI (coproc.mpi_core comes with mpi.main)

local LIB = "meta/library"

---------------------------------------------------------------- the meta files

-- classes[name] = { file, fields = {name = true}, functions = {name = line},
-- parents = {...} }; modules[module name] = class name.
local classes, modules = {}, {}

local function class_named(name, file)
  local c = classes[name]
  if not c then
    c = { name = name, file = file, fields = {}, functions = {}, parents = {} }
    classes[name] = c
  end
  return c
end

local function parse(path)
  local modname = path:sub(#LIB + 2):gsub("%.lua$", ""):gsub("/", ".")
  local alias, cur = {}, nil
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    local cname, parents = line:match("^%-%-%-@class%s+([%w_%.]+)%s*:?%s*(.*)$")
    if cname then
      cur = class_named(cname, path)
      for p in parents:gmatch("[%w_%.]+") do cur.parents[#cur.parents + 1] = p end
    elseif line:match("^%-%-%-@field") then
      local f = line:match("^%-%-%-@field%s+([%w_]+)")
      if f == "public" or f == "private" or f == "protected" or f == "package" then
        f = line:match("^%-%-%-@field%s+%a+%s+([%w_]+)")
      end
      if cur and f then cur.fields[f] = true end
    elseif not line:match("^%-%-%-") then
      local var = line:match("^local%s+([%w_]+)%s*=")
      if var and cur then alias[var] = cur end
      cur = nil
      local v, fname = line:match("^function%s+([%w_]+)[%.:]([%w_]+)%s*%(")
      if v and alias[v] then
        alias[v].fields[fname] = true
        alias[v].functions[fname] = n
      end
      local av, aname = line:match("^([%w_]+)%.([%w_]+)%s*=")
      if av and alias[av] then alias[av].fields[aname] = true end
      local ret = line:match("^return%s+([%w_]+)")
      if ret and alias[ret] then modules[modname] = alias[ret].name end
    end
  end
end

local ls = assert(io.popen("find " .. LIB .. " -name '*.lua' | sort"))
for path in ls:lines() do parse(path) end
ls:close()

-- Is `name` described on class cname (or a parent)?
local function described(cname, name, seen)
  local c = classes[cname]
  if not c then return false end
  seen = seen or {}
  if seen[cname] then return false end
  seen[cname] = true
  if c.fields[name] then return true end
  for _, p in ipairs(c.parents) do
    if described(p, name, seen) then return true end
  end
  return false
end

---------------------------------------------------------------- the runtime

local function is_public(k)
  return type(k) == "string" and (k == "_VERSION" or not k:match("^_"))
end

-- The local table `name` that function f (or a function it calls through
-- an upvalue) closes over: the option specs of the pool and the monitor.
local function upvalue(f, name, depth)
  depth = depth or 3
  for i = 1, math.huge do
    local n, v = debug.getupvalue(f, i)
    if n == nil then return nil end
    if n == name then return v end
    if type(v) == "function" and depth > 1 then
      local found = upvalue(v, name, depth - 1)
      if found ~= nil then return found end
    end
  end
end

local function need_upvalue(f, name, where)
  local v = upvalue(f, name)
  assert(type(v) == "table", ("meta_spec: cannot find the table %s behind %s (renamed? update this spec)"):format(name, where))
  return v
end

-- The names `require "coproc"` exports: its fields and those it loads on
-- first use (the `lazy` table of its __index).
local function coproc_names()
  local names = {}
  for k in pairs(coproc) do names[k] = true end
  local lazy = need_upvalue(getmetatable(coproc).__index, "lazy", "coproc's __index")
  for k in pairs(lazy) do names[k] = true end
  return names
end

local function names_of(t)
  local names = {}
  for k in pairs(t) do names[k] = true end
  return names
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do if is_public(k) then list[#list + 1] = k end end
  table.sort(list)
  return list
end

---------------------------------------------------------------- checks

local problems

local function problem(fmt, ...)
  problems[#problems + 1] = fmt:format(...)
end

local function file_of(cname, fallback)
  return classes[cname] and classes[cname].file or fallback
end

-- Every public name of a module table is a field or function of its class.
local function check_module(modname, names)
  local cname = modules[modname]
  local file = LIB .. "/" .. modname:gsub("%.", "/") .. ".lua"
  if not cname then
    problem("%s: missing, or it does not end with `return <local of its ---@class>` (module %s)", file, modname)
    return
  end
  for _, k in ipairs(sorted(names)) do
    if not described(cname, k) then
      problem("%s: class %s has no `---@field %s` or `function %s.%s(...)` (exported by require %q)",
        file_of(cname, file), cname, k, modname:match("[^.]+$"), k, modname)
    end
  end
  for k, line in pairs(classes[cname].functions) do
    if not names[k] then
      problem("%s:%d: describes %s.%s, which require %q does not export (remove it)", classes[cname].file, line,
        modname, k, modname)
    end
  end
end

-- Every public method of a class's method table is described.
local function check_methods(cname, methods, where)
  if not classes[cname] then
    problem("%s: no `---@class %s` (the methods of %s)", LIB .. "/coproc.lua", cname, where)
    return
  end
  for _, k in ipairs(sorted(names_of(methods))) do
    if type(methods[k]) == "function" and not described(cname, k) then
      problem("%s: class %s has no method %s (add `function %s:%s(...) end` with its ---@param and ---@return)",
        file_of(cname), cname, k, cname:match("[^.]+$"), k)
    end
  end
  for k, line in pairs(classes[cname].functions) do
    if methods[k] == nil then
      problem("%s:%d: describes %s:%s, which %s does not have (remove it)", classes[cname].file, line, cname, k, where)
    end
  end
end

-- Every option an option check accepts is a field of the options class.
local function check_options(cname, spec, where)
  if not classes[cname] then
    problem("%s: no `---@class %s` (the options of %s)", LIB .. "/coproc.lua", cname, where)
    return
  end
  for _, k in ipairs(sorted(names_of(spec))) do
    if not described(cname, k) then
      problem("%s: class %s has no `---@field %s` (an option of %s)", file_of(cname), cname, k, where)
    end
  end
end

local function report()
  assert(#problems == 0, "\n" .. table.concat(problems, "\n") .. "\n" .. #problems
    .. " name(s) to add to (or remove from) the LuaCATS definitions in " .. LIB)
end

describe("meta/library, the LuaCATS definitions", function()
  before_each(function() problems = {} end)

  it("is a Lua language server addon: config.json, ---@meta files", function()
    local cfg = assert(io.open("meta/config.json")):read("a")
    assert.truthy(cfg:find('"words"', 1, true))
    for _, m in ipairs { "coproc", "coproc.pool", "coproc.monitor", "coproc.errors", "coproc.plot" } do
      local path = LIB .. "/" .. m:gsub("%.", "/") .. ".lua"
      local first = assert(io.open(path), path .. " is missing"):read("l")
      assert.equal("---@meta " .. m, first)
    end
  end)

  it("describes every name of the public modules", function()
    check_module("coproc", coproc_names())
    check_module("coproc.pool", names_of(pool))
    check_module("coproc.monitor", names_of(monitor))
    check_module("coproc.errors", names_of(errors))
    if has_plot then check_module("coproc.plot", names_of(plot)) end
    check_module("coproc.mpi", names_of(mpi))
    report()
  end)

  it("describes every method of the public classes", function()
    check_methods("coproc.Messenger", coproc.Messenger, "coproc.Messenger")
    check_methods("coproc.WorkerResource", resource.WorkerResource_mt, "coproc.WorkerResource")
    check_methods("coproc.Pool", pool.PoolClass, "coproc.Pool")
    check_methods("coproc.LazyPool", getmetatable(coproc.LazyPool(1)), "coproc.LazyPool")
    check_methods("coproc.WorkerResourcePool", getmetatable(coproc.WorkerResourcePool(1, function() end)),
      "coproc.WorkerResourcePool")
    check_methods("coproc.Future", getmetatable(future.new({}, {})), "coproc.Future")
    check_methods("coproc.Monitor", monitor.MonitorClass, "coproc.Monitor")
    check_methods("coproc.mpi.WorkerResource", getmetatable(mpi.WorkerResource({})), "coproc.mpi.WorkerResource")
    check_methods("coproc.monitor.Stats", monitor.Stats, "coproc.monitor.Stats")
    if has_plot then
      check_methods("coproc.Plot", debug.getregistry()["coproc.Plot"].__index, "coproc.Plot")
    end
    report()
  end)

  it("describes every error class, as a subclass of coproc.Error with its fields", function()
    for _, name in ipairs(sorted(names_of(errors))) do
      local cls = errors[name]
      if type(cls) == "table" and rawget(cls, "name") == name and getmetatable(cls) then
        local cname = "coproc." .. name
        if not classes[cname] then
          problem("%s: no `---@class %s: coproc.Error` for the error class %s (add it with its fields)",
            LIB .. "/coproc.lua", cname, name)
        elseif name ~= "Error" and not (function()
              for _, p in ipairs(classes[cname].parents) do if p == "coproc.Error" then return true end end
            end)() then
          problem("%s: `---@class %s` must be `---@class %s: coproc.Error`", classes[cname].file, cname, cname)
        end
      end
    end
    report()
  end)

  it("describes every option the option checks accept", function()
    check_options("coproc.PoolOptions", need_upvalue(pool.Pool, "POOL_OPTIONS", "coproc.Pool"), "coproc.Pool")
    check_options("coproc.MapOptions", need_upvalue(pool.PoolClass.map, "JOB_OPTIONS", "Pool:map"), "Pool:map")
    check_options("coproc.SubmitOptions", need_upvalue(pool.PoolClass.submit, "SUBMIT_OPTIONS", "Pool:submit"),
      "Pool:submit")
    check_options("coproc.LazyPoolOptions", need_upvalue(pool.LazyPool, "LAZY_OPTIONS", "coproc.LazyPool"),
      "coproc.LazyPool")
    check_options("coproc.MonitorOptions", monitor.DEFAULTS, "coproc.Monitor")
    check_options("coproc.mpi.PoolOptions", { per_rank = "posint" }, "coproc.mpi.Pool")
    check_options("coproc.PlotOptions", need_upvalue(monitor.Stats.plot_spec, "PLOT_OPTS", "Stats:plot_spec"),
      "Stats:save_memory_plot")
    report()
  end)

  it("names what is missing, file and line to write", function()
    -- The check itself: a method the runtime has and the meta files do not,
    -- and one they describe that the runtime lost.
    local methods = {}
    for k, v in pairs(pool.PoolClass) do methods[k] = v end
    methods.not_described_yet, methods.map = print, nil
    check_methods("coproc.Pool", methods, "coproc.Pool")
    assert.equal(2, #problems, table.concat(problems, "\n"))
    table.sort(problems)
    assert.equal(LIB .. "/coproc/pool.lua: class coproc.Pool has no method not_described_yet (add "
      .. "`function Pool:not_described_yet(...) end` with its ---@param and ---@return)", problems[1])
    assert.truthy(problems[2]:find("^" .. LIB .. "/coproc/pool.lua:%d+: describes coproc.Pool:map, which coproc.Pool "
      .. "does not have %(remove it%)$"), problems[2])
  end)
end)
