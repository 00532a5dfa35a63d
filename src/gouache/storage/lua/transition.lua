-- Move a job to a new state (checked), persist changes, settle quota, fix the queue.
-- ARGV: target, allowed source states (' a b '),
--       mode ('cancel': a job not in a source state is returned unchanged),
--       effect ('commit' | 'refund' | 'requeue' | 'keep'),
--       id, owner ('' = unchecked), patch (JSON fragment)
-- (the first four depend only on the target, so the caller encodes them once)
-- Returns {'ok', job reply} | {'missing'} | {'lease'} | {'illegal', state}
OPS.transition = function(ARGV)
  local target, sources, mode, effect = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local id, owner = ARGV[5], ARGV[6]
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, '_s', '_o', 'd', '_a', 'o', '_u', '_day', '_c', '_t', '_m', '_st')
  local state = f[1]
  if not state then return {'missing'} end
  if not has(sources, state) then
    if mode == 'cancel' then return {'ok', {f[3], state, f[4], f[5] or ''}} end
    if owner ~= '' and f[2] ~= owner then return {'lease'} end
    return {'illegal', state}
  end
  if owner ~= '' and f[2] ~= owner then return {'lease'} end
  local o = (f[5] or '') .. ARGV[7]
  if effect == 'keep' then
    redis.call('HSET', jk, '_s', target, 'o', o)
  else
    -- Every other effect ends the lease.
    redis.call('HSET', jk, '_s', target, 'o', o, '_o', '', '_l', '')
    redis.call('ZREM', LEASES, id)
    if effect == 'requeue' then
      requeue(f[6], f[9], f[10])
    else
      settle(f[6], f[7], f[8], effect == 'commit')
      if state == 'queued' then unqueue(f[6], f[10], f[11]) end
    end
  end
  moved(state, target, 1)
  return {'ok', {f[3], target, f[4], o}}
end
