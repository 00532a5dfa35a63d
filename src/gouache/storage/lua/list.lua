-- Jobs newest first. ARGV: user ('' = all), states (' a b ', '' = all), limit.
-- The indexes are lists in enqueue order (RPUSH in enqueue.lua), read from the end.
OPS.list = function(ARGV)
  local index = ARGV[1] == '' and (P .. ':jobs') or (P .. ':ujobs:' .. ARGV[1])
  local states, limit = ARGV[2], tonumber(ARGV[3])
  local out, start, chunk = {}, 0, 256
  while #out < limit do
    local ids = redis.call('LRANGE', index, -(start + chunk), -(start + 1))
    if #ids == 0 then break end
    for i = #ids, 1, -1 do
      local jk = job_key(ids[i])
      local state = redis.call('HGET', jk, '_s')  -- false once pruned (see prune.lua)
      if state and (states == '' or has(states, state)) then
        out[#out + 1] = job_reply(jk)
        if #out >= limit then break end
      end
    end
    start = start + chunk
  end
  return out
end
