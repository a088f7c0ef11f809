-- wrk script for scripts/scale.sh: sets the request headers, optionally paces the load to a
-- fixed total rate, and prints the latency percentiles on one parseable line.
--
-- Environment:
--   WRK_ACCEPT       Accept header (e.g. "application/vnd.kubernetes.protobuf, */*", what the HPA sends)
--   WRK_BEARER       bearer token (empty: no Authorization header)
--   WRK_RATE         total requests per second over all connections (0 or unset: as fast as possible)
--   WRK_CONNECTIONS  the -c given to wrk, to split the rate between connections
--
-- Pacing uses wrk's delay(): each connection waits CONNECTIONS/RATE seconds between
-- requests, so the achieved rate is the target minus the service time (wrk prints the
-- achieved rate; scale.sh reports that one). Statuses of 400 and above count as errors
-- (wrk's summary.errors.status). Latency is measured by wrk from the request
-- write to the end of the response, delay excluded.

local accept = os.getenv("WRK_ACCEPT")
local bearer = os.getenv("WRK_BEARER")
local rate = tonumber(os.getenv("WRK_RATE") or "0") or 0
local connections = tonumber(os.getenv("WRK_CONNECTIONS") or "1") or 1
local interval_ms = 0
if rate > 0 then
  interval_ms = math.floor(1000 * connections / rate)
end

function init(args)
  if accept and accept ~= "" then
    wrk.headers["Accept"] = accept
  end
  if bearer and bearer ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. bearer
  end
end

function delay()
  return interval_ms
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "WRK requests=%d rate=%.1f bytes_per_req=%.0f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d\n",
    summary.requests, summary.requests / secs,
    summary.requests > 0 and summary.bytes / summary.requests or 0,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, errors))
end
