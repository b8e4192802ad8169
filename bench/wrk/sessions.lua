-- Legacy sessions: `initialize`, then one tools/call with the handle the gateway returned, until
-- COUNT sessions have made their call: `wrk -s sessions.lua URL -- INIT_FILE CALL_FILE COUNT`.
-- Handles from initialize answers queue up; a connection sends a call when one is waiting, else
-- a new initialize.
local common = require("common")
local init_bytes, call_headers, call_body, count
local handles = {}
local answered, called, failed = 0, 0, 0

function init(args)
  local headers, body = common.read_request(args[1])
  init_bytes = wrk.format("POST", nil, headers, body)
  call_headers, call_body = common.read_request(args[2])
  count = assert(tonumber(args[3]), "COUNT")
end

function request()
  local handle = table.remove(handles)
  if handle == nil then
    return init_bytes
  end
  call_headers["Mcp-Session-Id"] = handle
  return wrk.format("POST", nil, call_headers, call_body)
end

function response(status, headers, _body)
  local ok
  ok, answered, failed = common.tally(status, answered, failed)
  if not ok then
    return
  end
  local handle = headers["mcp-session-id"] or headers["Mcp-Session-Id"]
  if handle ~= nil then
    table.insert(handles, handle)
    return
  end
  called = called + 1
  if called >= count then
    common.finish(answered, failed)
  end
end

-- Reached only when the duration ran out first.
done = common.report
