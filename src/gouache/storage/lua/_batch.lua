-- The end of the script: run a batch of operations, in order, each isolated.
-- ARGV: name, argument count, arguments..., then the next operation...
-- Returns one reply per operation; an operation that fails becomes an error
-- reply in its place (its own earlier writes stay, as with any script error)
-- and the others still run.
local out, i, n = {}, 1, #ARGV
while i <= n do
  local name, count = ARGV[i], tonumber(ARGV[i + 1])
  local args = {}
  for k = 1, count do args[k] = ARGV[i + 1 + k] end
  i = i + 2 + count
  local op = OPS[name]
  local ok, res
  if op then
    ok, res = pcall(op, args)
  else
    ok, res = false, 'unknown operation ' .. tostring(name)
  end
  if not ok then
    res = {err = type(res) == 'table' and res.err or tostring(res)}
  elseif res == nil then
    res = false
  end
  out[#out + 1] = res
end
for edge, delta in pairs(MOVED) do
  if delta ~= 0 then redis.call('HINCRBY', MOVES, edge, delta) end
end
return out
