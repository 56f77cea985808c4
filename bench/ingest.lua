-- wrk script for bench/ingest.py: POSTs Outbound Messages of N unique
-- notifications each (ids never repeat across threads or requests).
-- The envelope's parts come from the environment, written by ingest.py.
local head, item, tail, per_message
local threads_made = 0   -- in the main Lua state
local counter = 0        -- in each thread's own state

function setup(thread)
  threads_made = threads_made + 1
  thread:set("thread_no", threads_made)  -- a global of that thread's state
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function init(args)
  local dir = args[1]
  head = read(dir .. "/head.xml")
  item = read(dir .. "/item.xml")
  tail = read(dir .. "/tail.xml")
  per_message = tonumber(args[2])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
  wrk.headers["SOAPAction"] = '""'
end

function request()
  local parts = {head}
  for _ = 1, per_message do
    counter = counter + 1
    local tail_id = string.format("%02d%010d", thread_no, counter)
    parts[#parts + 1] = (item:gsub("NOTIFICATIONID", "04l" .. tail_id .. "AAA"):gsub("RECORDID", "003" .. tail_id .. "AAA"))
  end
  parts[#parts + 1] = tail
  return wrk.format(nil, nil, nil, table.concat(parts))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
