-- Persist non-state changes. ARGV: id, patch (JSON fragment)
-- Returns {'ok', job reply} | {'missing'}
OPS.update = function(ARGV)
  local jk = job_key(ARGV[1])
  local f = redis.call('HMGET', jk, 'd', '_s', '_a', 'o')
  if not f[2] then return {'missing'} end
  f[4] = (f[4] or '') .. ARGV[2]
  redis.call('HSET', jk, 'o', f[4])
  return {'ok', f}
end
