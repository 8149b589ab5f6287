-- Record that a node has (or no longer has) subscribers of a channel: in the partition's registry
-- snapshot and, in the same order as publications, in the partition log.
-- KEYS[1] subs:{p}   KEYS[2] log:{p}
-- ARGV[1] channel  ARGV[2] node  ARGV[3] '1' has subscribers / '0' has none  ARGV[4] approximate log cap
local field = ARGV[1] .. '\n' .. ARGV[2]
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], field, '1')
else
  redis.call('HDEL', KEYS[1], field)
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[4]), '*', 'k', 's', 'c', ARGV[1], 'n', ARGV[2], 'on', ARGV[3])
