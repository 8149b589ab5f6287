-- Take or keep a partition lease. KEYS[1] lease:{p}   ARGV[1] owner  ARGV[2] lease ms
-- Returns 1 when the caller holds the lease afterwards.
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
