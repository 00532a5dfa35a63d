-- One job as job_reply, or false. ARGV: id
local jk = job_key(ARGV[1])
if redis.call('EXISTS', jk) == 0 then return false end
return job_reply(jk)
