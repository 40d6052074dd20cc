--- Helpers for the event-loop specs (luv_spec, cqueues_spec, async_spec),
-- on LUA_PATH as tests/?.lua: the worker of the 3 x 1000 runs and a CPU
-- clock for the "no busy loop" checks.
local M = {}

M.SCALE = tonumber(os.getenv("COPROC_TEST_SCALE")) or 1
M.REQUESTS = math.max(10, math.floor(1000 * M.SCALE))
-- What a worker sleeps per request: the host is idle most of the time,
-- so a busy loop in it shows as CPU time near the wall time. Under
-- valgrind (a small SCALE) each request costs the host far more, and the
-- workers sleep longer in proportion.
M.PACE = math.min(0.05, 0.0005 / M.SCALE)

--- The worker: requests and notices on the channels "even" and "odd" (in
-- any mix), each request answered on its channel after pace seconds with
-- {data, notices seen on that channel so far}; a request on "ctl" is
-- answered with the notice counts per channel. Message-level receives:
-- requests are answered, notices only counted.
function M.worker(m, kw)
  local coproc = require "coproc"
  local pace = kw and kw.pace or 0
  local notices = { even = 0, odd = 0 }
  while true do
    m:await_available()
    for _, ch in ipairs { "even", "odd" } do
      for _, msg in ipairs(m:receive_available_messages(ch)) do
        if msg.is_request then
          if pace > 0 then coproc.sleep(pace) end
          m:send_reply({ msg.data, notices[ch] }, ch)
        else
          notices[ch] = notices[ch] + 1
        end
      end
    end
    for _, msg in ipairs(m:receive_available_messages("ctl")) do
      if msg.is_request then m:send_reply({ even = notices.even, odd = notices.odd }, "ctl") end
    end
  end
end

--- Channel of request i.
--- The echo worker of the adapter specs: each request on channel "e" is
-- answered with its data, after sleeping data.sleep seconds if it says so;
-- notices are dropped.
function M.echo(m)
  while true do
    local msg = m:receive_message_blocking("e")
    if msg.is_request then
      if type(msg.data) == "table" and msg.data.sleep then require("coproc").sleep(msg.data.sleep) end
      m:send_reply(msg.data, "e")
    end
  end
end

function M.channel(i) return i % 2 == 0 and "even" or "odd" end

--- What a host of the 3 x n runs sends for its i-th step: a notice, then a
-- request, both on the channel of i (the request goes out within 50 us
-- of the notice: it is corked until the host flushes or waits).
function M.send_step(m, i)
  local ch = M.channel(i)
  m:send_norequest({ note = i }, ch)
  m:send_request(i, ch)
end

--- Check a reply to request i: data i, and the notices of its channel
-- before it all seen (one per step so far on that channel, this one's too).
function M.check_reply(i, reply)
  if type(reply) ~= "table" or reply[1] ~= i then
    error(("reply to request %d out of order or wrong: %s"):format(i, type(reply) == "table" and tostring(reply[1])
      or tostring(reply)), 2)
  end
  local expect = i % 2 == 0 and i // 2 or (i + 1) // 2
  if reply[2] ~= expect then
    error(("request %d: the worker had seen %s notices on its channel, %d expected"):format(i, tostring(reply[2]),
      expect), 2)
  end
end

--- CPU and wall clocks of this process from now on: returns a function
-- that gives (cpu seconds, wall seconds) since.
function M.clocks()
  local coproc = require "coproc"
  local c0, t0 = os.clock(), coproc.now()
  return function() return os.clock() - c0, coproc.now() - t0 end
end

return M
