-- One job as job_reply, or false. ARGV: id
OPS.get = function(ARGV)
  local f = job_reply(job_key(ARGV[1]))
  if not f[2] then return false end
  return f
end
