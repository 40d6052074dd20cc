-- man_check.lua COPROC_LUA MANPAGE: the man page and `coproc-lua --help`
-- (print_usage in bindings/coproc_lua.c) list the same options, with the same
-- argument names. Prints what one has and the other lacks.
local exe, page = assert(arg[1], "usage: man_check.lua COPROC_LUA MANPAGE"), assert(arg[2])

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- --help: lines "  -e stat   execute ..." -> "-e stat".
local help = {}
local p = assert(io.popen(("%q --help"):format(exe)))
for line in p:lines() do
  local opt = line:match("^  (%-%S*)")
  if opt then
    local argname = line:match("^  %-%S*%s(%S+)%s%s")
    help[#help + 1] = argname and (opt .. " " .. argname) or opt
  end
end
p:close()
assert(#help > 0, exe .. " --help lists no option")

-- The man page: the line after each .TP in the OPTIONS section, roff
-- markup taken off: `.BI \-e " stat"` -> "-e stat".
local man, in_options, after_tp = {}, false, false
for line in io.lines(page) do
  if line:match("^%.SH") then
    in_options = line:match("^%.SH%s+OPTIONS") ~= nil
  elseif in_options and line:match("^%.TP") then
    after_tp = true
  elseif in_options and after_tp then
    after_tp = false
    local text = line:gsub("^%.%a+%s*", ""):gsub("\\%-", "-"):gsub("\\f[BIRP]", ""):gsub('"', "")
    man[#man + 1] = (text:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
  end
end
assert(#man > 0, page .. ": no option under .SH OPTIONS")

local ok = true
local in_help, in_man = set_of(help), set_of(man)
for _, o in ipairs(help) do
  if not in_man[o] then ok = false; print(("%s: --help lists '%s', the man page does not"):format(page, o)) end
end
for _, o in ipairs(man) do
  if not in_help[o] then
    ok = false
    print(("%s: the man page lists '%s', --help (print_usage in bindings/coproc_lua.c) does not"):format(page, o))
  end
end
if not ok then os.exit(1) end
print(("man page and --help list the same %d options"):format(#help))
