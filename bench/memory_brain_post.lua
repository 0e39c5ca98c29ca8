-- bench/memory_brain_post.lua - wrk: SomaBrain's POST /memory/remember straight at the fake, a
-- distinct key per request and thread (the body somaagent's relay sends)
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
    '{"tenant":"default","namespace":"wm","key":"ceiling-%d-%d","value":{"text":"note %d of thread %d: ' ..
    'the sky was green on tuesday"},"tags":["bench"]}', tid, counter, counter, tid))
end
