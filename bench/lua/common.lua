-- Shared by every benchmark script (loaded with dofile): instance per thread, customer
-- sequence per thread, per-status and per-problem-code counts, and one JSON summary line.
--
-- Parameters come from BENCH_* environment variables set by bench/load.py: the main Lua
-- state (setup, done) never sees wrk's script arguments, the environment reaches both.

local function env(name, default)
  local value = os.getenv("BENCH_" .. name)
  if value == nil or value == "" then return default end
  return value
end

bench = { env = env }

local ports = {}
for port in string.gmatch(env("PORTS", ""), "%d+") do ports[#ports + 1] = port end
local threads = {}

-- Runs in the main state once per thread, before the thread starts: thread i talks to
-- instance i mod #ports, like a round-robin load balancer with sticky connections.
function setup(thread)
  local index = #threads
  thread.addr = wrk.lookup("127.0.0.1", ports[(index % #ports) + 1])[1]
  thread:set("thread_index", index)
  threads[#threads + 1] = thread
end

-- Runs in each thread's own state.
function init(args)
  statuses, codes = {}, {}
  sent = 0
  stop_on_full = env("STOP_ON_FULL", "0") == "1"
  -- Customers first .. first + count - 1, split into one disjoint block per thread, so
  -- every request in a run is a different customer (until a block wraps around).
  local first = tonumber(env("CUSTOMER_FIRST", "1"))
  local count = tonumber(env("CUSTOMER_COUNT", "1"))
  local per_thread = math.max(1, math.floor(count / tonumber(env("THREADS", "1"))))
  customer_base, customer_block = first + thread_index * per_thread, per_thread
  customer_id_offset = tonumber(env("CUSTOMER_ID_OFFSET", "0"))
  math.randomseed(1000003 * (thread_index + 1) + os.time())
end

-- The bearer token of the next customer of this thread (db.token_for builds the same).
function bench.next_token()
  local customer = customer_base + sent % customer_block
  local token = (customer_id_offset + customer) .. ".bench-" .. customer
  sent = sent + 1
  return token
end

function bench.book(event_id)
  return wrk.format("POST", "/api/v1/bookings", {
    ["Authorization"] = "Bearer " .. bench.next_token(),
    ["Content-Type"] = "application/json",
  }, '{"event_id": ' .. event_id .. '}')
end

function bench.get(path, token)
  local headers = {}
  if token then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status >= 300 then
    -- problem+json: count by its stable machine-readable code.
    local code = body and string.match(body, '"code"%s*:%s*"([%w_]+)"') or "-"
    local both = key .. " " .. code
    codes[both] = (codes[both] or 0) + 1
    if stop_on_full and code == "event_full" then
      -- Sold out: the measurement is over for this thread (bench/load.py stops wrk).
      wrk.thread:stop()
    end
  end
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      parts[#parts + 1] = string.format("%q:%s", tostring(k), encode(v))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(value) == "number" then
    -- No requests at all leaves NaN in the latency stats; JSON has no NaN.
    if value ~= value or value == math.huge or value == -math.huge then return "null" end
    return string.format("%.17g", value)
  end
  return string.format("%q", tostring(value))
end

local function add_into(total, part)
  for k, v in pairs(part or {}) do total[k] = (total[k] or 0) + v end
end

-- Runs in the main state after every thread has stopped; one JSON line for bench/load.py.
function done(summary, latency, requests)
  local all_statuses, all_codes = {}, {}
  for _, thread in ipairs(threads) do
    add_into(all_statuses, thread:get("statuses"))
    add_into(all_codes, thread:get("codes"))
  end
  local result = {
    requests = summary.requests,
    duration_us = summary.duration,
    errors = {
      connect = summary.errors.connect,
      read = summary.errors.read,
      write = summary.errors.write,
      timeout = summary.errors.timeout,
    },
    statuses = all_statuses,
    codes = all_codes,
    latency_us = {
      p50 = latency:percentile(50.0),
      p90 = latency:percentile(90.0),
      p99 = latency:percentile(99.0),
      p999 = latency:percentile(99.9),
      mean = latency.mean,
      max = latency.max,
    },
  }
  io.write("BENCH_JSON " .. encode(result) .. "\n")
end
