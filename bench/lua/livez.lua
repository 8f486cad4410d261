-- HTTP ceiling: the cheapest endpoint through the same gunicorn set-up.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local req = nil

function request()
  req = req or bench.get("/livez")
  return req
end
