-- Requeue, or fail and refund, up to `batch` jobs whose lease ended before now.
-- ARGV: now, max_attempts, batch, then three patches (JSON fragments):
-- requeue, attempts exhausted, lease expired.
-- Returns one job_reply per job handled.
local now, max_attempts, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. now, 'LIMIT', 0, batch)
local out = {}
for _, id in ipairs(ids) do
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, '_s', '_a')
  local state = f[1]
  drop_lease(jk, id)
  if state and has(ACTIVE, state) then
    local retry = state == 'submitted' or state == 'running'
    if retry and tonumber(f[2]) < max_attempts then
      patch(jk, ARGV[4])
      requeue(jk)
      set_state(jk, state, 'queued')
    else
      patch(jk, retry and ARGV[5] or ARGV[6])
      settle(jk, false)
      set_state(jk, state, 'failed')
    end
    out[#out + 1] = job_reply(jk)
  end
end
return out
