-- The next k members in fair order that a process running only `allowed`
-- workers may take: a user whose next job is pinned to another worker is
-- passed over, with all their later jobs (FairQueue.pop with workers).
local function take_allowed(k, allowed)
  local out, passed, offset, chunk = {}, {}, 0, 64
  while #out < 2 * k do
    local batch = redis.call('ZRANGE', QUEUE, offset, offset + chunk - 1, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      local f = redis.call('HMGET', job_key(member_id(batch[i])), '_u', '_p')
      if not passed[f[1]] then
        if f[2] and not allowed[f[2]] then
          passed[f[1]] = true
        else
          out[#out + 1] = batch[i]
          out[#out + 1] = batch[i + 1]
          if #out >= 2 * k then break end
        end
      end
    end
    offset = offset + chunk
  end
  for i = 1, #out, 2 do redis.call('ZREM', QUEUE, out[i]) end
  return out
end

-- Take up to k jobs in fair order (FairQueue.pop), QUEUED -> SUBMITTED, leased.
-- ARGV: k, owner, lease deadline, patch (JSON fragment: updated_at, started_at),
--       and optionally the workers the caller runs (space-separated): then a
--       job pinned to another worker is left for the process that runs it.
-- Returns {jobs still queued, {one job reply (see job_reply) per job}}.
OPS.pop = function(ARGV)
  local popped
  local pinned = redis.call('SCARD', PINNED) > 0
  if ARGV[5] and pinned then
    local allowed = {}
    for name in string.gmatch(ARGV[5], '%S+') do allowed[name] = true end
    popped = take_allowed(tonumber(ARGV[1]), allowed)
  else
    popped = redis.call('ZPOPMIN', QUEUE, tonumber(ARGV[1]))  -- nothing to pass over
  end
  if #popped == 0 then return {0, {}} end
  if pinned then
    local members = {}
    for i = 1, #popped, 2 do members[#members + 1] = popped[i] end
    multi('SREM', PINNED, members)
  end
  local owner, deadline, stamp = ARGV[2], ARGV[3], ARGV[4]
  local vtime = tonumber(redis.call('GET', VTIME) or '0')
  local out, finish, leases = {}, {}, {}
  for i = 1, #popped, 2 do
    local member, tag = popped[i], tonumber(popped[i + 1])
    local id = member_id(member)
    local jk = job_key(id)
    local f = redis.call('HMGET', jk, '_u', '_st', '_a', 'd', 'o')
    redis.call('ZREM', user_queue(f[1]), member)
    -- V is the start tag of the last job served; remember the user's largest
    -- finish tag so re-enqueueing right after a pop does not jump the line
    -- (FairQueue.remember_finish). Jobs pop in tag order, so a user's last pair
    -- in `finish` is their largest in this pop; only a retried job (served
    -- before, put back with its old tag) can be behind what is remembered.
    local start = tag - tonumber(f[2])
    if start > vtime then vtime = start end
    local attempts = tonumber(f[3]) + 1
    local known = attempts > 1 and redis.call('HGET', LASTFIN, f[1])
    if not known or tag > tonumber(known) then
      finish[#finish + 1] = f[1]
      finish[#finish + 1] = fmt(tag)
    end
    local o = (f[5] or '') .. stamp
    redis.call('HSET', jk, '_a', attempts, '_o', owner, '_l', deadline, '_s', 'submitted', 'o', o)
    leases[#leases + 1] = deadline
    leases[#leases + 1] = id
    out[#out + 1] = {f[4], 'submitted', attempts, o}
  end
  multi('HSET', LASTFIN, finish)
  multi('ZADD', LEASES, leases)
  moved('queued', 'submitted', #out)
  redis.call('SET', VTIME, fmt(vtime))
  return {redis.call('ZCARD', QUEUE), out}
end
