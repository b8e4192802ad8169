-- One fixed POST, built once: `wrk -s post.lua URL -- REQUEST_FILE`.
local common = require("common")
local request_bytes

function init(args)
  local headers, body = common.read_request(args[1])
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

done = common.report
