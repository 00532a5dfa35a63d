-- The start of gouache's one script (see storage/redis_records.py): the operation
-- files (enqueue.lua, pop.lua, ...) each add a function to OPS, and _batch.lua
-- ends the script by running a batch of operations in order.
--
-- KEYS[1] is the deployment's base key "{prefix}". Every other key is derived
-- from it, so all of them share its hash tag and live in one Redis Cluster
-- slot: the scripts run unchanged on a cluster.
--
-- Each redis.call costs a script far more than the command itself (about
-- 1.5 us of argument and reply conversion, against well under 1 us of work),
-- so the hot operations read every field they need in one HMGET and write
-- them in one HSET, batch per-pop writes into one multi-member command, and
-- the state counts are written once per batch.
--
-- Job hash fields: d = the job's JSON at enqueue; o = later field values as a
-- JSON fragment (',"progress":40,...') that patches append to: decoded after d,
-- a repeated key's last value wins; _s state; _a attempts; _u user id (a string: Discord ids
-- do not fit a Lua double); _t virtual finish tag; _m queue member; _st the
-- job's step (cost/weight in millionths); _c cost; _day quota day;
-- _o lease owner and _l lease deadline ('' once the lease is dropped); _p the
-- one worker a follow-up may run on; _cc '<channel>:<day>' when the job
-- reserved its channel's daily cap.
local P = KEYS[1]
local QUEUE = P .. ':queue'          -- zset: every queued job, score tag, member seq..id
local PINNED = P .. ':pinned'        -- set: queued members pinned to one worker (_p)
local LEASES = P .. ':leases'        -- zset: leased job id by deadline
local FINISHED = P .. ':finished'    -- zset: finished job id by when it finished (retention)
local MOVES = P .. ':moves'          -- hash: 'from>to' -> jobs that took that edge ('' = new)
local VTIME = P .. ':vt'             -- virtual time of the fair queue
local LASTFIN = P .. ':lastfin'      -- hash: user -> finish tag of their last served job
local WAKE = P .. ':wake'            -- pub/sub channel: the queue stopped being empty
local SEQ_DIGITS = 15                -- members are zero-padded seq + id: ties sort by seq
local CHUNK = 1000                   -- members per multi-member command (unpack's stack)

local function job_key(id) return P .. ':job:' .. id end
local function user_queue(user) return P .. ':uq:' .. user end
local function quota_key(user, day) return P .. ':quota:' .. user .. ':' .. day end
local function channel_key(cc) return P .. ':chcap:' .. cc end
local function member_id(member) return string.sub(member, SEQ_DIGITS + 1) end
-- Tags and virtual time are whole numbers; '..' would format them with %.14g.
local function fmt(n) return string.format('%.0f', n) end
local function has(list, word) return string.find(list, ' ' .. word .. ' ', 1, true) ~= nil end

local OPS = {}                       -- operation name -> function(ARGV)

-- The state counts are kept per edge of the transition table (a state's count
-- is what came in minus what went out), summed over the batch and written by
-- _batch.lua at its end: one HINCRBY per edge taken instead of two per job.
local MOVED = {}
local function moved(from, to, n)
  local edge = from .. '>' .. to
  MOVED[edge] = (MOVED[edge] or 0) + n
end

-- One command over many arguments, cut where Lua's unpack would overflow.
local function multi(cmd, key, args)
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- Commit (success) or refund (anything else) the quota a finished job reserved,
-- on the day it was reserved on. A day whose key has expired is left alone.
local function settle(user, day, cost, commit)
  if not day then return end
  local qk = quota_key(user, day)
  if commit then
    local committed = redis.call('HINCRBY', qk, 'committed', cost)
    -- The first commit of a day may have recreated an expired key: undo it.
    if committed == tonumber(cost) and not redis.call('HGET', qk, 'used') then
      redis.call('DEL', qk)
    end
  else
    local used = redis.call('HGET', qk, 'used')
    if not used then return end
    local left = tonumber(used) - tonumber(cost)
    if left < 0 then left = 0 end
    redis.call('HSET', qk, 'used', left)
  end
end

-- Give back the channel cap a job reserved (cc = its _cc field) when it did not succeed.
local function settle_channel(jk, cost, commit)
  if commit then return end
  local cc = redis.call('HGET', jk, '_cc')
  if not cc or cc == '' then return end
  local ck = channel_key(cc)
  local used = redis.call('HGET', ck, 'used')
  if used then
    local left = tonumber(used) - tonumber(cost)
    if left < 0 then left = 0 end
    redis.call('HSET', ck, 'used', left)
  end
  redis.call('HDEL', jk, '_cc')
end

-- Put a job back with its old tag and seq (FairQueue.restore): ahead of its
-- user's later jobs, so a retried job goes to the front of its user's queue.
local function requeue(user, tag, member)
  redis.call('ZADD', user_queue(user), tag, member)
  redis.call('ZADD', QUEUE, tag, member)
  if redis.call('HEXISTS', job_key(member_id(member)), '_p') == 1 then
    redis.call('SADD', PINNED, member)
  end
  if redis.call('ZCARD', QUEUE) == 1 then redis.call('PUBLISH', WAKE, '1') end
end

-- Take a queued job out (FairQueue.remove with shift): the user's later jobs
-- move up by the removed job's step, so cancelling costs the user nothing.
local function unqueue(user, member, step)
  local uq = user_queue(user)
  redis.call('ZREM', QUEUE, member)
  redis.call('SREM', PINNED, member)
  local rank = redis.call('ZRANK', uq, member)
  if not rank then return end
  redis.call('ZREM', uq, member)
  local later = redis.call('ZRANGE', uq, rank, -1, 'WITHSCORES')
  local delta = tonumber(step)
  for i = 1, #later, 2 do
    local tag = fmt(tonumber(later[i + 1]) - delta)
    redis.call('ZADD', uq, tag, later[i])
    redis.call('ZADD', QUEUE, tag, later[i])
    redis.call('HSET', job_key(member_id(later[i])), '_t', tag)
  end
end

-- Drop the ids of deleted jobs from the old end of a history list (oldest
-- first), at most `most` of them. It stops at the first job still there, so a
-- long-lived job keeps the ids behind it (list.lua skips those).
local function trim_history(key, most)
  for _ = 1, most do
    local head = redis.call('LINDEX', key, 0)
    if not head or redis.call('EXISTS', job_key(head)) == 1 then return end
    redis.call('LPOP', key)
  end
end

-- What the caller decodes a Job from: {JSON at enqueue, state, attempts, patches}.
local function job_reply(jk)
  local f = redis.call('HMGET', jk, 'd', '_s', '_a', 'o')
  f[4] = f[4] or ''
  return f
end

-- The job a change returns to a caller that may hold a copy of it. `known` is
-- the byte length of the patches in that copy ('' = no copy). Patches only
-- grow, so if the job's patches were that long before this change, the copy
-- was current: reply with the new length alone, and the caller applies its
-- own patch (or none, if `after` == `before`) instead of decoding the job
-- again. Otherwise the whole job reply.
local function changed_reply(jk, known, before, state, attempts, after)
  if known ~= '' and tonumber(known) == #before then return #after end
  return {redis.call('HGET', jk, 'd'), state, attempts, after}
end
