-- Worker leases, decided by the caller's clock (not Redis TIME, so tests control it).
-- ARGV: op ('acquire' | 'renew' | 'release' | 'owner'), name, owner, now,
--       new deadline, gc_ms (how long the key may outlive its deadline).
OPS.worker = function(ARGV)
  local op, owner, now = ARGV[1], ARGV[3], tonumber(ARGV[4])
  local key = P .. ':worker:' .. ARGV[2]
  local f = redis.call('HMGET', key, 'owner', 'expires')
  local live = f[1] and tonumber(f[2]) > now
  if op == 'owner' then
    if live then return f[1] end
    return false
  elseif op == 'release' then
    if f[1] == owner then
      redis.call('DEL', key)
      return 1
    end
    return 0
  elseif op == 'acquire' then
    if live and f[1] ~= owner then return 0 end
  elseif op == 'renew' then
    if not (live and f[1] == owner) then return 0 end
  end
  redis.call('HSET', key, 'owner', owner, 'expires', ARGV[5])
  redis.call('PEXPIRE', key, ARGV[6])
  return 1
end
