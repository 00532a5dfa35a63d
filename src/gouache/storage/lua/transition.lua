-- Move a job to a new state (checked), persist changes, settle quota, fix the queue.
-- ARGV: target, mode ('cancel': a job not in a source state of the target is
--       returned unchanged), id, owner ('' = unchecked), patch (JSON fragment),
--       known (see changed_reply), now (Unix seconds: when a finished job finished),
--       whole (the finished job's JSON, from the caller's copy; '' = none)
-- The allowed source states come from SOURCES (the transition table, written
-- into the script by storage/redis_records.py).
-- Returns {'ok', changed reply} | {'missing'} | {'lease'} | {'illegal', state}
OPS.transition = function(ARGV)
  local target, mode, id, owner, known = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6]
  local sources = SOURCES[target]
  if not sources then error('unknown state ' .. tostring(target)) end
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, '_s', '_o', '_a', 'o')
  local state, before = f[1], f[4] or ''
  if not state then return {'missing'} end
  if not has(sources, state) then
    if mode == 'cancel' then
      return {'ok', changed_reply(jk, known, before, state, f[3], before)}
    end
    if owner ~= '' and f[2] ~= owner then return {'lease'} end
    return {'illegal', state}
  end
  if owner ~= '' and f[2] ~= owner then return {'lease'} end
  local o = before .. ARGV[5]
  if has(ACTIVE, target) then
    redis.call('HSET', jk, '_s', target, 'o', o)
  else
    -- Queued again or finished: the lease ends.
    if target ~= 'queued' and ARGV[8] ~= '' and known ~= '' and tonumber(known) == #before then
      -- Finished, and the caller's copy was current: keep the job whole, not
      -- the patches that led to it (a finished job is kept for days).
      o = ''
      redis.call('HSET', jk, '_s', target, 'd', ARGV[8], 'o', o, '_o', '', '_l', '')
    else
      redis.call('HSET', jk, '_s', target, 'o', o, '_o', '', '_l', '')
    end
    redis.call('ZREM', LEASES, id)
    local q = redis.call('HMGET', jk, '_u', '_day', '_c', '_t', '_m', '_st')
    if target == 'queued' then
      requeue(q[1], q[4], q[5])
    else
      settle(q[1], q[2], q[3], target == 'succeeded')
      settle_channel(jk, q[3], target == 'succeeded')
      if state == 'queued' then unqueue(q[1], q[5], q[6]) end
      redis.call('ZADD', FINISHED, ARGV[7], id)
    end
  end
  moved(state, target, 1)
  return {'ok', changed_reply(jk, known, before, target, f[3], o)}
end
