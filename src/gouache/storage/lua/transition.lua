-- Move a job to a new state (checked), persist changes, settle quota, fix the queue.
-- ARGV: id, target, owner ('' = unchecked), allowed source states (' a b '),
--       mode ('cancel': a job not in a source state is returned unchanged),
--       effect ('commit' | 'refund' | 'requeue' | 'keep'), patch (JSON fragment)
-- Returns {'ok', job_reply} | {'missing'} | {'lease'} | {'illegal', state}
local id, target, owner = ARGV[1], ARGV[2], ARGV[3]
local jk = job_key(id)
local f = redis.call('HMGET', jk, '_s', '_o')
local state = f[1]
if not state then return {'missing'} end
if not has(ARGV[4], state) then
  if ARGV[5] == 'cancel' then return {'ok', job_reply(jk)} end
  if owner ~= '' and f[2] ~= owner then return {'lease'} end
  return {'illegal', state}
end
if owner ~= '' and f[2] ~= owner then return {'lease'} end
patch(jk, ARGV[7])
local effect = ARGV[6]
if effect == 'commit' or effect == 'refund' then
  settle(jk, effect == 'commit')
  drop_lease(jk, id)
  if state == 'queued' then unqueue(jk) end
elseif effect == 'requeue' then
  drop_lease(jk, id)
  requeue(jk)
end
set_state(jk, state, target)
return {'ok', job_reply(jk)}
