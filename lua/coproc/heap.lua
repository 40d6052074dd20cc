--- coproc.heap: a binary min-heap kept in a table `{n = count, [1..n] =
-- items}`, ordered by a `less(a, b)` function. Ties are the caller's to
-- break (put a sequence number in the key for FIFO among equals). The
-- pool's queue of ranges and coproc.PriorityQueue are built on it.
local M = {}

--- push(h, x, less): add x.
function M.push(h, x, less)
  local i = h.n + 1
  h.n = i
  while i > 1 do
    local up = i // 2
    if less(x, h[up]) then h[i] = h[up]; i = up else break end
  end
  h[i] = x
end

--- pop(h, less) -> the least item (nil when empty), taken out.
function M.pop(h, less)
  local n = h.n
  if n == 0 then return nil end
  local top, last = h[1], h[n]
  h[n] = nil
  n = n - 1
  h.n = n
  if n > 0 then
    local i = 1
    while true do
      local c = 2 * i
      if c > n then break end
      if c < n and less(h[c + 1], h[c]) then c = c + 1 end
      if less(h[c], last) then h[i] = h[c]; i = c else break end
    end
    h[i] = last
  end
  return top
end

return M
