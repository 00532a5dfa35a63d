-- Extend the leases the owner still holds on active jobs.
-- ARGV: owner, deadline, ids...  Returns the ids renewed.
OPS.renew = function(ARGV)
  local out = {}
  for i = 3, #ARGV do
    local jk = job_key(ARGV[i])
    local f = redis.call('HMGET', jk, '_o', '_s')
    if f[1] == ARGV[1] and f[2] and has(ACTIVE, f[2]) then
      redis.call('HSET', jk, '_l', ARGV[2])
      redis.call('ZADD', LEASES, ARGV[2], ARGV[i])
      out[#out + 1] = ARGV[i]
    end
  end
  return out
end
