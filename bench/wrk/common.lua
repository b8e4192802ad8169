-- Shared by the bench's wrk scripts (found through LUA_PATH, set by bench/lib.sh).
local common = {}

-- Reads a request file: "Name: value" header lines, one empty line, then the body.
function common.read_request(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local text = file:read("*a")
  file:close()
  local head, body = text:match("^(.-)\r?\n\r?\n(.*)$")
  assert(head, path .. ": no empty line between headers and body")
  local headers = {}
  for line in head:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  return headers, body
end

-- wrk's done(): one machine-readable line; latencies are wrk's, in microseconds.
function common.report(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    "bench-result requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end

-- Ends a counted run at once. wrk's thread:stop() halts the requests but wrk still sleeps out
-- its -d duration, so a run bounded by count reports its own line and exits.
function common.finish(requests, status_errors)
  io.write(string.format(
    "bench-result requests=%d duration_us=0 rps=0 p50_us=0 p99_us=0 status_errors=%d socket_errors=0\n",
    requests, status_errors))
  io.flush()
  os.exit(0)
end

-- Counts one answer; a run refused 100 times ends at once (no point going on). Returns whether
-- the answer was a 200 and the new (answered, failed) counts.
function common.tally(status, answered, failed)
  answered = answered + 1
  if status ~= 200 then
    failed = failed + 1
    if failed >= 100 then
      common.finish(answered, failed)
    end
  end
  return status == 200, answered, failed
end

return common
