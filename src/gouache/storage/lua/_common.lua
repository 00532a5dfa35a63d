-- Prepended to every gouache script when it is loaded (see storage/redis.py).
--
-- KEYS[1] is the deployment's base key "{prefix}". Every other key is derived
-- from it, so all of them share its hash tag and live in one Redis Cluster
-- slot: the scripts run unchanged on a cluster.
--
-- Job hash fields: d = the job's JSON at enqueue; o = later field values as a
-- JSON fragment (',"progress":40,...') that patches append to: decoded after d,
-- a repeated key's last value wins; _s state; _a attempts; _u user id (a string: Discord ids
-- do not fit a Lua double); _t virtual finish tag; _m queue member; _st the
-- job's step (cost/weight in millionths); _c cost; _day quota day;
-- _o lease owner; _l lease deadline.
local P = KEYS[1]
local QUEUE = P .. ':queue'          -- zset: every queued job, score tag, member seq..id
local LEASES = P .. ':leases'        -- zset: leased job id by deadline
local COUNTS = P .. ':counts'        -- hash: state -> number of jobs
local VTIME = P .. ':vt'             -- virtual time of the fair queue
local LASTFIN = P .. ':lastfin'      -- hash: user -> finish tag of their last served job
local WAKE = P .. ':wake'            -- pub/sub channel: the queue stopped being empty
local ACTIVE = ' submitted running generated storing '
local SEQ_DIGITS = 15                -- members are zero-padded seq + id: ties sort by seq

local function job_key(id) return P .. ':job:' .. id end
local function user_queue(user) return P .. ':uq:' .. user end
local function quota_key(user, day) return P .. ':quota:' .. user .. ':' .. day end
local function member_id(member) return string.sub(member, SEQ_DIGITS + 1) end
-- Tags and virtual time are whole numbers; '..' would format them with %.14g.
local function fmt(n) return string.format('%.0f', n) end
local function has(list, word) return string.find(list, ' ' .. word .. ' ', 1, true) ~= nil end

local function set_state(jk, from, to)
  redis.call('HSET', jk, '_s', to)
  redis.call('HINCRBY', COUNTS, from, -1)
  redis.call('HINCRBY', COUNTS, to, 1)
end

-- Commit (success) or refund (anything else) the quota a finished job reserved,
-- on the day it was reserved on. A day whose key has expired is left alone.
local function settle(jk, commit)
  local f = redis.call('HMGET', jk, '_u', '_day', '_c')
  if not f[2] then return end
  local qk = quota_key(f[1], f[2])
  local used = redis.call('HGET', qk, 'used')
  if not used then return end
  if commit then
    redis.call('HINCRBY', qk, 'committed', f[3])
  else
    local left = tonumber(used) - tonumber(f[3])
    if left < 0 then left = 0 end
    redis.call('HSET', qk, 'used', left)
  end
end

local function drop_lease(jk, id)
  redis.call('HDEL', jk, '_o', '_l')
  redis.call('ZREM', LEASES, id)
end

-- Put a job back with its old tag and seq (FairQueue.restore): ahead of its
-- user's later jobs, so a retried job goes to the front of its user's queue.
local function requeue(jk)
  local f = redis.call('HMGET', jk, '_u', '_t', '_m')
  local was_empty = redis.call('ZCARD', QUEUE) == 0
  redis.call('ZADD', user_queue(f[1]), f[2], f[3])
  redis.call('ZADD', QUEUE, f[2], f[3])
  if was_empty then redis.call('PUBLISH', WAKE, '1') end
end

-- Take a queued job out (FairQueue.remove with shift): the user's later jobs
-- move up by the removed job's step, so cancelling costs the user nothing.
local function unqueue(jk)
  local f = redis.call('HMGET', jk, '_u', '_m', '_st')
  local uq = user_queue(f[1])
  redis.call('ZREM', QUEUE, f[2])
  local rank = redis.call('ZRANK', uq, f[2])
  if not rank then return end
  redis.call('ZREM', uq, f[2])
  local later = redis.call('ZRANGE', uq, rank, -1, 'WITHSCORES')
  local delta = tonumber(f[3])
  for i = 1, #later, 2 do
    local tag = fmt(tonumber(later[i + 1]) - delta)
    redis.call('ZADD', uq, tag, later[i])
    redis.call('ZADD', QUEUE, tag, later[i])
    redis.call('HSET', job_key(member_id(later[i])), '_t', tag)
  end
end

-- Append a patch (a JSON fragment built by the caller) to the job's overrides.
local function patch(jk, fragment)
  if fragment ~= '' then redis.call('APPEND', jk .. ':o', fragment) end
end

-- What the caller decodes a Job from.
local function job_reply(jk)
  local f = redis.call('HMGET', jk, 'd', '_s', '_a')
  f[4] = redis.call('GET', jk .. ':o') or ''
  return f
end
