-- S7 hold then confirm: every customer holds one seat of the hot event and, as soon as the
-- hold is answered, confirms it (the pay-then-confirm flow with no time spent paying).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local event_id = bench.env("EVENT_ID")
-- Holds answered 201 and not confirmed yet, oldest first: the thread's next requests.
local pending = {}

function request()
  local hold = table.remove(pending, 1)
  if hold then
    return wrk.format("POST", "/api/v1/holds/" .. hold.id .. "/confirm", {
      ["Authorization"] = "Bearer " .. hold.token,
    })
  end
  return wrk.format("POST", "/api/v1/events/" .. event_id .. "/holds", {
    ["Authorization"] = "Bearer " .. bench.next_token(),
    ["Content-Type"] = "application/json",
  }, '{"seats": 1}')
end

local count = response

function response(status, headers, body)
  count(status, headers, body)
  -- A hold (a booking has no expires_at): confirm it next, as its customer.
  if status == 201 and body and string.find(body, '"expires_at"', 1, true) then
    local customer = tonumber(string.match(body, '"customer_id"%s*:%s*(%d+)'))
    pending[#pending + 1] = {
      id = string.match(body, '"id"%s*:%s*(%d+)'),
      token = customer .. ".bench-" .. (customer - customer_id_offset),
    }
  end
end
