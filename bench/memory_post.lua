-- bench/memory_post.lua - wrk: POST /v1/memory/remember, a distinct key per request and thread
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"key":"bench-%d-%d","value":{"text":"note %d of thread %d: the sky was green on tuesday"}}',
    tid, counter, counter, tid))
end
