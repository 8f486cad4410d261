-- S1 sell-out, S2 sold-out storm, S5 growth: every request books one event for a new customer.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local event_id = bench.env("EVENT_ID")

function request()
  return bench.book(event_id)
end
