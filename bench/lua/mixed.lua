-- S4 mixed: 90% reads split evenly over event detail, event list and own bookings; 10%
-- bookings, all over the same uniformly chosen events.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local first_event = tonumber(bench.env("FIRST_EVENT"))
local events = tonumber(bench.env("EVENTS"))
local list_pages = math.max(1, math.floor(events / 20))

function request()
  local event_id = first_event + math.random(0, events - 1)
  local dice = math.random(1, 10)
  if dice == 1 then
    return bench.book(event_id)
  elseif dice <= 4 then
    return bench.get("/api/v1/events/" .. event_id)
  elseif dice <= 7 then
    return bench.get("/api/v1/events?when=upcoming&page_size=20&page=" .. math.random(1, list_pages))
  end
  return bench.get("/api/v1/bookings?page_size=20", bench.next_token())
end
