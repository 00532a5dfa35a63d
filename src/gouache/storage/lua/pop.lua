-- Take up to k jobs in fair order (FairQueue.pop), QUEUED -> SUBMITTED, leased.
-- ARGV: k, owner, lease deadline, patch (JSON fragment: updated_at, started_at)
-- Returns one job_reply per job.
local popped = redis.call('ZPOPMIN', QUEUE, tonumber(ARGV[1]))
if #popped == 0 then return {} end
local vtime = tonumber(redis.call('GET', VTIME) or '0')
local out = {}
for i = 1, #popped, 2 do
  local member, tag = popped[i], tonumber(popped[i + 1])
  local id = member_id(member)
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, '_u', '_st')
  redis.call('ZREM', user_queue(f[1]), member)
  -- V is the start tag of the last job served; remember the user's finish tag
  -- so re-enqueueing right after a pop does not jump the line.
  local start = tag - tonumber(f[2])
  if start > vtime then vtime = start end
  redis.call('HSET', LASTFIN, f[1], fmt(tag))
  redis.call('HINCRBY', jk, '_a', 1)
  redis.call('HSET', jk, '_o', ARGV[2], '_l', ARGV[3], '_s', 'submitted')
  redis.call('HINCRBY', COUNTS, 'queued', -1)
  redis.call('HINCRBY', COUNTS, 'submitted', 1)
  patch(jk, ARGV[4])
  redis.call('ZADD', LEASES, ARGV[3], id)
  out[#out + 1] = job_reply(jk)
end
redis.call('SET', VTIME, fmt(vtime))
return out
