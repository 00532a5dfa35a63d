-- Persist non-state changes. ARGV: id, patch (JSON fragment)
-- Returns {'ok', job_reply} | {'missing'}
local jk = job_key(ARGV[1])
if redis.call('EXISTS', jk) == 0 then return {'missing'} end
patch(jk, ARGV[2])
return {'ok', job_reply(jk)}
