-- Delete up to `batch` jobs that finished before `before` (history retention),
-- and the ids at the old end of the history lists that no longer have a job.
-- ARGV: before (Unix seconds, exclusive), batch
-- Returns {ids looked at, jobs deleted}.
OPS.prune = function(ARGV)
  local batch = tonumber(ARGV[2])
  local ids = redis.call('ZRANGEBYSCORE', FINISHED, '-inf', '(' .. ARGV[1], 'LIMIT', 0, batch)
  if #ids == 0 then return {0, 0} end
  local deleted, users = 0, {}
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local f = redis.call('HMGET', jk, '_s', '_u')
    if f[1] then
      deleted = deleted + 1
      users[f[2]] = true
      moved(f[1], '', 1)  -- out of its state's count
      redis.call('DEL', jk)
    end
  end
  multi('ZREM', FINISHED, ids)
  trim_history(P .. ':jobs', 2 * batch)
  for user in pairs(users) do trim_history(P .. ':ujobs:' .. user, 2 * batch) end
  return {#ids, deleted}
end
