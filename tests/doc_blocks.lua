-- doc_blocks.lua COPROC_LUA FILE.md...: every ```lua block of the given
-- Markdown files runs as written: each alone, with coproc-lua, in a scratch
-- directory of its own, and must exit 0 within a minute. A deliberate
-- fragment (a signature, a sketch with `...`) is marked, and then skipped:
--   <!-- fragment -->        on the line before the opening ```lua, or
--   -- fragment              as the first line of the block.
-- Prints one line per block; on failure, the file:line of the block and
-- what it printed.
local exe = assert(arg[1], "usage: doc_blocks.lua COPROC_LUA FILE.md...")

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The blocks of a file: { line = n, code = "...", fragment = bool }.
local function blocks(path)
  local list, cur, prev = {}, nil, ""
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        cur.code = table.concat(cur.lines, "\n") .. "\n"
        cur.fragment = cur.fragment or (cur.lines[1] or ""):match("^%-%-%s*fragment") ~= nil
        list[#list + 1], cur = cur, nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif line:match("^```lua%s*$") then
      cur = { line = n, lines = {}, fragment = prev:match("^%s*<!%-%-%s*fragment%s*%-%->%s*$") ~= nil }
    end
    if line:match("%S") then prev = line end
  end
  assert(not cur, path .. ":" .. (cur and cur.line or 0) .. ": unterminated ```lua block")
  return list
end

local failed, ran, skipped = 0, 0, 0
for i = 2, #arg do
  local path = arg[i]
  for _, b in ipairs(blocks(path)) do
    if b.fragment then
      skipped = skipped + 1
      print(("skip %s:%d (marked as a fragment)"):format(path, b.line))
    else
      ran = ran + 1
      local p = assert(io.popen("mktemp -d"))
      local dir = p:read("l")
      p:close()
      local f = assert(io.open(dir .. "/block.lua", "wb"))
      f:write(b.code)
      f:close()
      local cmd = ("cd %s && timeout 60 %s block.lua >out.txt 2>err.txt"):format(q(dir), q(exe))
      local ok, how, code = os.execute(cmd)
      if ok then
        print(("ok   %s:%d"):format(path, b.line))
      else
        failed = failed + 1
        print(("FAIL %s:%d: %s %s%s\n--- stdout\n%s--- stderr\n%s---"):format(path, b.line, how, tostring(code),
          code == 124 and " (timed out after 60 s)" or "", slurp(dir .. "/out.txt"), slurp(dir .. "/err.txt")))
      end
      os.execute("rm -rf " .. q(dir))
    end
  end
end
print(("%d blocks ran, %d failed, %d fragments skipped"):format(ran, failed, skipped))
if failed > 0 then os.exit(1) end
