-- Requeue, or fail and refund, up to `batch` jobs whose lease ended before now.
-- ARGV: now, max_attempts, batch, then three patches (JSON fragments):
-- requeue, attempts exhausted, lease expired.
-- Returns one job reply (see job_reply) per job handled.
OPS.recover = function(ARGV)
  local now, max_attempts, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. now, 'LIMIT', 0, batch)
  local out = {}
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local f = redis.call('HMGET', jk, '_s', '_a', 'd', 'o', '_u', '_day', '_c', '_t', '_m')
    local state = f[1]
    redis.call('ZREM', LEASES, id)
    if state and has(ACTIVE, state) then
      local retry = state == 'submitted' or state == 'running'
      local target, fragment
      if retry and tonumber(f[2]) < max_attempts then
        target, fragment = 'queued', ARGV[4]
        requeue(f[5], f[8], f[9])
      else
        target, fragment = 'failed', retry and ARGV[5] or ARGV[6]
        settle(f[5], f[6], f[7], false)
        settle_channel(jk, f[7], false)
        redis.call('ZADD', FINISHED, now, id)
      end
      local o = (f[4] or '') .. fragment
      redis.call('HSET', jk, '_s', target, 'o', o, '_o', '', '_l', '')
      moved(state, target, 1)
      out[#out + 1] = {f[3], target, f[2], o}
    elseif state then
      redis.call('HSET', jk, '_o', '', '_l', '')
    end
  end
  return out
end
