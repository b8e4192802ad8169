-- Modern requests, each with a new Mcp-Task-Id, until COUNT answers:
-- `wrk -s tasks.lua URL -- REQUEST_FILE COUNT`. Ids wrap at COUNT, so exactly COUNT distinct
-- tasks are created even though a few requests are still in flight at the end.
local common = require("common")
local headers, body, count
local sent, answered, failed = 0, 0, 0

function init(args)
  headers, body = common.read_request(args[1])
  count = assert(tonumber(args[2]), "COUNT")
end

function request()
  sent = sent + 1
  headers["Mcp-Task-Id"] = string.format("bench-task-%d", (sent - 1) % count + 1)
  return wrk.format("POST", nil, headers, body)
end

function response(status, _headers, _body)
  _, answered, failed = common.tally(status, answered, failed)
  if answered >= count then
    common.finish(answered, failed)
  end
end

-- Reached only when the duration ran out first.
done = common.report
