-- wrk script: POST one AdmissionReview body (from SCITT_BENCH_BODY) to /admission/validate.
function init(args)
  local f = assert(io.open(os.getenv("SCITT_BENCH_BODY"), "rb"))
  body = f:read("*a")
  f:close()
end

function request()
  return wrk.format("POST", "/admission/validate", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format("latency_p50_us %d\nlatency_p99_us %d\nerrors %d\n", latency:percentile(50),
    latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
