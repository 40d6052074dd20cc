-- The coproc-lua interpreter: lua5.4-compatible command line, -m, preloaded
-- coproc.core, exit codes. Runs the binary named by COPROC_LUA.
local describe, it, assert, setup, teardown = describe, it, assert, setup, teardown
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local LUA = os.getenv("COPROC_LUA") or "coproc-lua" -- ctest sets it; `luarocks test`: the one on PATH
local SOURCE_DIR = os.getenv("COPROC_SOURCE_DIR")
local U = require "pool_testutil"

local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end


local function spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function mktempdir()
  local p = assert(io.popen("mktemp -d"))
  local d = p:read("l")
  p:close()
  return d
end

-- run{args..., stdin = s, env = {K = v}, cwd = dir} --> exit code, stdout, stderr
local function run(t)
  local out, err, inp = os.tmpname(), os.tmpname(), os.tmpname()
  spit(inp, t.stdin or "")
  local parts = {}
  if t.cwd then parts[#parts + 1] = "cd " .. q(t.cwd) .. " &&" end
  parts[#parts + 1] = "env -u LUA_INIT -u LUA_INIT_5_4"
  for k, v in pairs(t.env or {}) do parts[#parts + 1] = q(k .. "=" .. v) end
  parts[#parts + 1] = q(LUA)
  for _, a in ipairs(t) do parts[#parts + 1] = q(a) end
  parts[#parts + 1] = "<" .. q(inp) .. " >" .. q(out) .. " 2>" .. q(err)
  local _, how, code = os.execute(table.concat(parts, " "))
  assert(how == "exit", "coproc-lua was killed by signal " .. tostring(code))
  local o, e = U.slurp(out), U.slurp(err)
  os.remove(out); os.remove(err); os.remove(inp)
  return code, o, e
end

describe("coproc-lua", function()
  local dir
  setup(function() dir = mktempdir() end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("builds the arg table and passes script arguments as ...", function()
    local script = dir .. "/args.lua"
    spit(script, [[
      local t = {}
      for i = -2, #arg do t[#t + 1] = i .. "=" .. arg[i] end
      print(table.concat(t, " "))
      print(select("#", ...), ...)
    ]])
    local code, out = run{ "-W", script, "a", "b c" }
    assert.equal(0, code)
    assert.equal("-2=" .. LUA .. " -1=-W 0=" .. script .. " 1=a 2=b c\n2\ta\tb c\n", out)
  end)

  it("without a script puts the interpreter at arg[0]", function()
    local code, out = run{ "-e", "print(arg[0], arg[1], arg[2])" }
    assert.equal(0, code)
    assert.equal(LUA .. "\t-e\tprint(arg[0], arg[1], arg[2])\n", out)
  end)

  it("runs -e and -l in command-line order", function()
    spit(dir .. "/clitmod.lua", "calls = (calls or 0) + 1; return { value = calls }")
    local env = { LUA_PATH_5_4 = dir .. "/?.lua;;" }
    local code, out = run{ "-e", "calls = 10", "-l", "clitmod", "-lg=clitmod", "-e",
                           "print(clitmod.value, g.value, calls)", env = env }
    assert.equal(0, code)
    -- require runs the module once; both globals hold the same table.
    assert.equal("11\t11\t11\n", out)
  end)

  it("reports a failing -l like lua5.4", function()
    local code, _, err = run{ "-l", "no_such_module_xyz", "-e", "print('not reached')" }
    assert.equal(1, code)
    assert.matches("^coproc%-lua: .*module 'no_such_module_xyz' not found", err)
  end)

  it("prints its version with -v", function()
    local code, out = run{ "-v" }
    assert.equal(0, code)
    assert.matches("^coproc%-lua %S+ %-%- Lua 5%.4", out)
  end)

  it("prints usage with --help and exits 0", function()
    local code, out, err = run{ "--help" }
    assert.equal(0, code)
    assert.equal("", err)
    assert.matches("usage: coproc%-lua %[options%] %[script %[args%]%]", out)
    assert.matches("%-m mod", out)
  end)

  it("rejects an unknown option with usage on stderr", function()
    local code, out, err = run{ "-Z" }
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("unrecognized option '%-Z'", err)
    assert.matches("usage:", err)
    code, out, err = run{ "-e" }
    assert.equal("", out)
    assert.equal(1, code)
    assert.matches("'%-e' needs argument", err)
  end)

  it("runs stdin for '-' with the following arguments", function()
    local code, out = run{ "-", "x", "y", stdin = "print('stdin', arg[0], ...)" }
    assert.equal(0, code)
    assert.equal("stdin\t-\tx\ty\n", out)
  end)

  it("runs stdin when it is not a terminal and no script is given", function()
    local code, out = run{ stdin = "print(6 * 7)" }
    assert.equal(0, code)
    assert.equal("42\n", out)
  end)

  it("treats a script named '-' after '--' as a file", function()
    local code, _, err = run{ "--", "-", cwd = dir }
    assert.equal(1, code)
    assert.matches("cannot open %-", err)
  end)

  it("exits 1 with the message and a traceback when the script fails", function()
    local script = dir .. "/fails.lua"
    spit(script, "local function inner() error('boom') end\ninner()\n")
    local code, out, err = run{ script }
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^coproc%-lua: [^\n]*fails%.lua:1: boom\nstack traceback:\n", err)
    assert.matches("in local 'inner'", err)
  end)

  it("gives error objects with __tostring a readable message", function()
    local code, _, err = run{ "-e", "error(setmetatable({}, {__tostring = function() return 'custom error' end}))" }
    assert.equal(1, code)
    assert.matches("^coproc%-lua: custom error\nstack traceback:", err)
  end)

  it("keeps os.exit codes", function()
    assert.equal(3, (run{ "-e", "os.exit(3)" }))
    assert.equal(0, (run{ "-e", "os.exit(true)" }))
    assert.equal(1, (run{ "-e", "os.exit(false)" }))
    assert.equal(5, (run{ "-e", "os.exit(5, true)" }))
  end)

  it("reports a syntax error", function()
    local script = dir .. "/syntax.lua"
    spit(script, "local x = = 1\n")
    local code, _, err = run{ script }
    assert.equal(1, code)
    assert.matches("^coproc%-lua: [^\n]*syntax%.lua:1: unexpected symbol near '='", err)
  end)

  it("runs LUA_INIT unless -E", function()
    local code, out = run{ "-e", "print(x)", env = { LUA_INIT = "x = 'from init'" } }
    assert.equal(0, code)
    assert.equal("from init\n", out)
    code, out = run{ "-E", "-e", "print(x)", env = { LUA_INIT = "x = 'from init'" } }
    assert.equal(0, code)
    assert.equal("nil\n", out)
    code, out = run{ "-e", "print(x)", env = { LUA_INIT = "x = 1", LUA_INIT_5_4 = "x = 54" } }
    assert.equal(0, code)
    assert.equal("54\n", out)
    spit(dir .. "/init.lua", "x = 'init file'")
    code, out = run{ "-e", "print(x)", env = { LUA_INIT = "@" .. dir .. "/init.lua" } }
    assert.equal(0, code)
    assert.equal("init file\n", out)
  end)

  it("runs a REPL with -i on stdin", function()
    local code, out = run{ "-i", stdin = "x = 1 +\n2\nx * 10\n=x\n" }
    assert.equal(0, code)
    assert.matches("30\n", out)
    assert.matches("3\n", out)
  end)

  describe("-m", function()
    it("runs require(mod).main(args) and exits with its integer", function()
      os.execute("mkdir -p " .. q(dir .. "/climain"))
      spit(dir .. "/climain/init.lua", [[
        local M = {}
        function M.main(args)
          print(#args, args[1], args[2], arg[0])
          return 40 + #args
        end
        return M
      ]])
      local code, out = run{ "-m", "climain", "p", "-q", cwd = dir }
      assert.equal(42, code)
      assert.equal("2\tp\t-q\tclimain\n", out)
    end)

    it("exits 0 when main returns nothing, and runs -e first", function()
      spit(dir .. "/climain2.lua", "return { main = function() print(pre) end }")
      local code, out = run{ "-e", "pre = 'before'", "-m", "climain2", cwd = dir }
      assert.equal(0, code)
      assert.equal("before\n", out)
    end)

    it("exits 1 with a traceback when main fails or is missing", function()
      spit(dir .. "/climain3.lua", "return { main = function() error('main failed') end }")
      local code, _, err = run{ "-m", "climain3", cwd = dir }
      assert.equal(1, code)
      assert.matches("^coproc%-lua: [^\n]*main failed\nstack traceback:", err)
      spit(dir .. "/climain4.lua", "return {}")
      code, _, err = run{ "-m", "climain4", cwd = dir }
      assert.equal(1, code)
      assert.matches("module 'climain4' has no main function", err)
    end)
  end)

  describe("coproc", function()
    it("preloads coproc.core so require never loads the .so", function()
      local empty = dir .. "/emptycpath"
      os.execute("mkdir -p " .. q(empty))
      local cpath = empty .. "/?.so"
      local code, out, err = run{ "-e", [[
        local m, how = require "coproc.core"
        print(type(m), how, package.loaded["coproc.core"] == m, type(package.preload["coproc.core"]))
      ]], env = { LUA_CPATH = cpath, LUA_CPATH_5_4 = cpath } }
      assert.equal("", err)
      assert.equal(0, code)
      assert.equal("table\t:preload:\ttrue\tfunction\n", out)
    end)

    -- A host script that starts an echo worker, prints "<host pid> <worker pid>"
    -- once the worker answered, then does `tail` (Lua source).
    local function host_script(tail)
      return [[
        local coproc = require "coproc"
        local Echo = coproc.class {}
        function Echo:run()
          while true do self.messenger:send_reply(self.messenger:receive_blocking()) end
        end
        worker = coproc.WorkerResource(Echo):start()
        worker.messenger:send_request("hi")
        assert(worker.messenger:receive_blocking() == "hi")
        io.write(coproc.getpid(), " ", worker:pid(), "\n")
        io.flush()
      ]] .. tail
    end

    local function alive(pid)
      return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
    end

    -- Starts the host, waits for its pid line, sends SIGINT to the host only,
    -- returns exit code, stderr, worker pid.
    local function interrupt(tail)
      local script, err = dir .. "/ctrlc.lua", os.tmpname()
      spit(script, host_script(tail))
      local p = assert(io.popen("exec " .. q(LUA) .. " " .. q(script) .. " 2>" .. q(err)))
      local host, worker = p:read("n", "n")
      assert.truthy(host and worker, "host did not report its pids")
      assert.is_true(alive(worker))
      os.execute("kill -INT " .. host)
      p:read("a")
      local _, how, code = p:close()
      local e = U.slurp(err)
      os.remove(err)
      assert.equal("exit", how)
      return code, e, worker
    end

    it("turns Ctrl-C during a blocking receive into exit 130 and ends the workers", function()
      -- 60 s is only a hang guard: without the interrupt this raises Timeout (exit 1).
      local code, err, worker = interrupt("worker.messenger:receive_blocking(nil, 60)")
      assert.matches("interrupted!", err)
      assert.equal(130, code)
      assert.is_false(alive(worker))
    end)

    it("turns Ctrl-C in running Lua code into exit 130 and ends the workers", function()
      local code, err, worker = interrupt("local t0 = os.time() while os.time() - t0 < 60 do end")
      assert.matches("interrupted!", err)
      assert.equal(130, code)
      assert.is_false(alive(worker))
    end)

    it("ends workers left running at normal exit, at os.exit and after an error", function()
      for _, tail in ipairs { "", "os.exit(4)", "error('late failure')" } do
        local script = dir .. "/leftover.lua"
        spit(script, host_script(tail))
        local p = assert(io.popen("exec " .. q(LUA) .. " " .. q(script) .. " 2>/dev/null"))
        local host, worker = p:read("n", "n")
        p:read("a")
        local _, _, code = p:close()
        assert.truthy(host and worker)
        assert.equal(tail == "" and 0 or tail:match("exit") and 4 or 1, code)
        assert.is_false(alive(worker), "worker left alive after: " .. tail)
      end
    end)

    it("finds coproc's other C modules (coproc.plot) without LUA_CPATH", function()
      local code, out = run{ "-e", "print(package.searchpath('coproc.plot', package.cpath))",
        env = { LUA_CPATH = "/nowhere/?.so", LUA_CPATH_5_4 = "/nowhere/?.so" } }
      assert.equal(0, code)
      assert.matches("/coproc/plot%.so\n$", out)
    end)

    it("puts coproc's Lua directory first on package.path", function()
      local code, out = run{ "-e", "print(package.path)", env = { LUA_PATH_5_4 = "/nowhere/?.lua" } }
      assert.equal(0, code)
      local first = out:match("^([^;]*);")
      assert.truthy(first)
      assert.matches("/%?%.lua$", first)
      if SOURCE_DIR then -- the tested binary lives in the build tree
        assert.equal(SOURCE_DIR .. "/lua/?.lua;" .. SOURCE_DIR .. "/lua/?/init.lua;/nowhere/?.lua\n", out)
      end
    end)
  end)
end)
