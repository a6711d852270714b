-- wrk script: POST one AdmissionReview body (from SCITT_BENCH_BODY) to /admission/validate.
function init(args)
  local f = assert(io.open(os.getenv("SCITT_BENCH_BODY"), "rb"))
  body = f:read("*a")
  f:close()
  headers = {["Content-Type"] = "application/json"}
  local token = os.getenv("SCITT_BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token  -- the admission listener's client authentication
  end
end

function request()
  return wrk.format("POST", "/admission/validate", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("latency_p50_us %d\nlatency_p99_us %d\nerrors %d\n", latency:percentile(50),
    latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
