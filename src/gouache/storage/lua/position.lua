-- Jobs popped before this queued job (FairQueue.position), or false.
-- ARGV: id
OPS.position = function(ARGV)
  local f = redis.call('HMGET', job_key(ARGV[1]), '_s', '_m')
  if f[1] ~= 'queued' then return false end
  return redis.call('ZRANK', QUEUE, f[2])
end
