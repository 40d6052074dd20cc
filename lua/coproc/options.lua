--- coproc.options: option tables that are checked. Every public call that
-- takes an options table runs it through check(): an unknown key raises
-- "bad option 'chunksise' to 'map' (did you mean 'chunksize'?)", a value of
-- the wrong kind raises "bad option 'chunksize' to 'map' (positive integer
-- expected, got -1)", and integral floats are accepted where an integer is
-- expected (Pool(coproc.cpu_count() / 2)). The error points at the caller.
local M = {}

local function edit_distance(a, b)
  local la, lb = #a, #b
  if math.abs(la - lb) > 2 then return 3 end
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = ca == b:byte(j) and 0 or 1
      local v = prev[j] + 1
      if cur[j - 1] + 1 < v then v = cur[j - 1] + 1 end
      if prev[j - 1] + cost < v then v = prev[j - 1] + cost end
      cur[j] = v
    end
    prev = cur
  end
  return prev[lb]
end

--- The known name closest to k (distance <= 2, or a prefix), or nil.
function M.suggest(k, names)
  if type(k) ~= "string" then return nil end
  local best, bestd
  for name in pairs(names) do
    if type(name) == "string" and name:sub(1, 1) ~= "_" then
      local d = edit_distance(k, name)
      if d > 2 and (name:find(k, 1, true) == 1 or k:find(name, 1, true) == 1) then d = 2 end
      if d <= 2 and (not bestd or d < bestd or (d == bestd and name < best)) then best, bestd = name, d end
    end
  end
  return best
end

-- Integer view of v: integers as they are, integral floats converted.
function M.integer(v)
  if math.type(v) == "integer" then return v end
  if math.type(v) == "float" and v == math.floor(v) and v >= math.mininteger and v <= math.maxinteger then
    return math.tointeger(v)
  end
  return nil
end

-- kind -> (normalise(v) -> v' or nil, what was expected)
local kinds = {
  any = { function(v) return v end, "any value" },
  boolean = { function(v) if type(v) == "boolean" then return v end end, "boolean" },
  number = { function(v) if type(v) == "number" and v == v then return v end end, "number" },
  nonneg = { function(v) if type(v) == "number" and v >= 0 then return v end end, "non-negative number" },
  posint = { function(v) local i = M.integer(v); if i and i >= 1 then return i end end, "positive integer" },
  nonnegint = { function(v) local i = M.integer(v); if i and i >= 0 then return i end end, "non-negative integer" },
  string = { function(v) if type(v) == "string" then return v end end, "string" },
  table = { function(v) if type(v) == "table" then return v end end, "table" },
  fn = { function(v) if type(v) == "function" or type(v) == "string" then return v end end,
         "function or \"module.function\" name" },
  callable = { function(v)
    if type(v) == "function" then return v end
    local mt = getmetatable(v)
    if type(v) == "table" and mt and mt.__call then return v end
  end, "function" },
}

local function show(v)
  if type(v) == "string" then return ("'%s'"):format(v) end
  return tostring(v)
end
M.show = show -- a value as an error message shows it: strings quoted

--- check(opts, spec, fname, level) -> a checked copy of opts (nil -> {}).
-- spec maps each allowed key to a kind name ("posint", "number", ...) or to
-- a list of allowed string values. level is that of the public function,
-- as for error(): 1 = the function calling check.
function M.check(opts, spec, fname, level)
  level = (level or 1) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument to '%s' (options table expected, got %s)"):format(fname, type(opts)), level)
  end
  local out = {}
  for k, v in pairs(opts) do
    local kind = spec[k]
    if kind == nil then
      local hint = M.suggest(k, spec)
      error(("bad option %s to '%s'%s"):format(show(k), fname,
        hint and (" (did you mean '" .. hint .. "'?)") or ""), level)
    end
    if type(kind) == "table" then
      local okv = false
      for _, allowed in ipairs(kind) do if v == allowed then okv = true end end
      if not okv then
        local names = {}
        for i, a in ipairs(kind) do names[i] = show(a) end
        error(("bad option '%s' to '%s' (%s expected, got %s)"):format(k, fname,
          table.concat(names, " or "), show(v)), level)
      end
      out[k] = v
    else
      local norm = kinds[kind]
      local nv = norm[1](v)
      if nv == nil then
        error(("bad option '%s' to '%s' (%s expected, got %s)"):format(k, fname, norm[2],
          type(v) == "number" and show(v) or type(v)), level)
      end
      out[k] = nv
    end
  end
  return out
end

return M
