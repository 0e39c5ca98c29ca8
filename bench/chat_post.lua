-- bench/chat_post.lua - wrk: POST /v1/session/message, each wrk thread posting to its own 300
-- sessions in turn (chat traffic: many sessions, several messages each).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local nthreads = 0
-- setup runs in the main Lua state; thread:set writes the global `tid` of that thread's state
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
request = function()
  counter = counter + 1
  local sid = string.format("chat-%d-%d", tid, counter % 300)
  return wrk.format(nil, nil, nil,
    '{"session_id":"' .. sid .. '","message":"hello, this is message number ' .. counter .. '"}')
end
