-- Persist non-state changes. ARGV: id, patch (JSON fragment), known (see changed_reply)
-- Returns {'ok', changed reply} | {'missing'}
OPS.update = function(ARGV)
  local jk = job_key(ARGV[1])
  local f = redis.call('HMGET', jk, '_s', '_a', 'o')
  if not f[1] then return {'missing'} end
  local before = f[3] or ''
  local o = before .. ARGV[2]
  redis.call('HSET', jk, 'o', o)
  return {'ok', changed_reply(jk, ARGV[3], before, f[1], f[2], o)}
end
