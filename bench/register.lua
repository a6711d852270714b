-- wrk script: POST unique statements from a file of 4-byte big-endian length-prefixed COSE messages.
-- Each wrk thread takes every Nth statement so that no two threads send the same one.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("SCITT_BENCH_STATEMENTS")
  local nthreads = tonumber(os.getenv("SCITT_BENCH_THREADS"))
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  bodies = {}
  local pos, i = 1, 0
  while pos < #data do
    local a, b, c, d = data:byte(pos, pos + 3)
    local len = ((a * 256 + b) * 256 + c) * 256 + d
    if i % nthreads == id then
      table.insert(bodies, data:sub(pos + 4, pos + 3 + len))
    end
    pos = pos + 4 + len
    i = i + 1
  end
  n = 0
  counts = {}
  headers = {["Content-Type"] = "application/cose"}
  if os.getenv("SCITT_BENCH_TOKEN") then
    headers["Authorization"] = "Bearer " .. os.getenv("SCITT_BENCH_TOKEN")
  end
end

function request()
  n = n + 1
  local body = bodies[((n - 1) % #bodies) + 1]
  return wrk.format("POST", "/entries", headers, body)
end

function response(status, hdrs, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\n", k, v)) end
  io.write(string.format("latency_p50_us %d\nlatency_p99_us %d\n", latency:percentile(50), latency:percentile(99)))
end
