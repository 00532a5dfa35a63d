-- Reserve quota, store the job and queue it (FairQueue.push), atomically.
-- ARGV: id, user, day, cost, daily_limit, max_queued (-1 = none), step,
--       quota_ttl_s, job_json, pin (the only worker that may run it; "" = any),
--       channel ("" = no channel cap), channel_cap (the channel's daily cap)
-- Returns {'ok', used, position} | {'quota', used} | {'queue'} | {'channel', used}
--       | {'duplicate'}
OPS.enqueue = function(ARGV)
  local id, user, day = ARGV[1], ARGV[2], ARGV[3]
  local cost, limit, max_queued = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local step = tonumber(ARGV[7])
  local jk = job_key(id)
  local uq = user_queue(user)
  if redis.call('EXISTS', jk) == 1 then return {'duplicate'} end
  if max_queued >= 0 and redis.call('ZCARD', uq) >= max_queued then return {'queue'} end
  -- Reserve first and give back on refusal: one call on the common path.
  local qk = quota_key(user, day)
  local used = redis.call('HINCRBY', qk, 'used', cost)
  if used == cost then redis.call('EXPIRE', qk, ARGV[8]) end  -- the day's first reservation
  if used > limit then
    redis.call('HINCRBY', qk, 'used', -cost)
    return {'quota', used - cost}
  end
  -- The channel's daily cap, reserved with the member's quota (given back by settle).
  local cc = ''
  if ARGV[11] and ARGV[11] ~= '' then
    cc = ARGV[11] .. ':' .. day
    local ck = channel_key(cc)
    local cused = redis.call('HINCRBY', ck, 'used', cost)
    if cused == cost then redis.call('EXPIRE', ck, ARGV[8]) end
    if cused > tonumber(ARGV[12]) then
      redis.call('HINCRBY', ck, 'used', -cost)
      redis.call('HINCRBY', qk, 'used', -cost)
      return {'channel', cused - cost}
    end
  end

  -- FairQueue.next_tag: at max(V, finish tag of the user's last served job,
  -- tag of the user's last queued job).
  local base = tonumber(redis.call('GET', VTIME) or '0')
  local finish = redis.call('HGET', LASTFIN, user)
  if finish then
    if tonumber(finish) > base then
      base = tonumber(finish)
    else
      redis.call('HDEL', LASTFIN, user)  -- at or behind V it no longer matters
    end
  end
  local last = redis.call('ZRANGE', uq, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > base then base = tonumber(last[2]) end
  local tag = fmt(base + step)
  local seq = redis.call('INCR', P .. ':seq')
  local member = string.format('%0' .. SEQ_DIGITS .. 'd', seq) .. id
  redis.call('HSET', jk, 'd', ARGV[9], '_s', 'queued', '_a', 0, '_u', user, '_t', tag,
    '_m', member, '_st', ARGV[7], '_c', ARGV[4], '_day', day)
  if cc ~= '' then redis.call('HSET', jk, '_cc', cc) end
  if ARGV[10] and ARGV[10] ~= '' then
    redis.call('HSET', jk, '_p', ARGV[10])
    redis.call('SADD', PINNED, member)
  end
  -- History, oldest first (list.lua reads it from the end): a list append is
  -- cheaper than a sorted-set insert, and the order is the same.
  redis.call('RPUSH', P .. ':jobs', id)
  redis.call('RPUSH', P .. ':ujobs:' .. user, id)
  moved('', 'queued', 1)
  redis.call('ZADD', uq, tag, member)
  redis.call('ZADD', QUEUE, tag, member)
  local position = redis.call('ZRANK', QUEUE, member)
  -- Only a job at the head can have found the queue empty.
  if position == 0 and redis.call('ZCARD', QUEUE) == 1 then redis.call('PUBLISH', WAKE, '1') end
  return {'ok', used, position}
end
