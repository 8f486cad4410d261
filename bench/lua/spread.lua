-- S3 many events: every request books a uniformly random event for a new customer.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local first_event = tonumber(bench.env("FIRST_EVENT"))
local events = tonumber(bench.env("EVENTS"))

function request()
  return bench.book(first_event + math.random(0, events - 1))
end
