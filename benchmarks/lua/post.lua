-- POST one fixed body on every request; print a JSON summary (throughput, latency percentiles, errors).
-- The body, its Content-Type and the optional V2 binary-extension header come from environment variables so
-- that one script serves every payload:
--   WRK_BODY_FILE     file holding the exact request body
--   WRK_CONTENT_TYPE  Content-Type header
--   WRK_JSON_LENGTH   Inference-Header-Content-Length (V2 binary tensor extension); empty: not sent
-- wrk runs this file once per thread, so every thread reads the body itself.

local file = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
local json_length = os.getenv("WRK_JSON_LENGTH") or ""
if json_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = json_length
end

-- One line, marked, so the harness can find it among wrk's own report. Latencies are in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"mean_us": %.1f, "max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
