-- Count a user's live connections and ask every node holding them to close them.
-- KEYS[1] uconn:{p}:<user>   KEYS[2] log:{p} (the partition of the user's personal channel)
-- ARGV[1] user  ARGV[2] close code  ARGV[3] now ms  ARGV[4] approximate log cap
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[4]), '*', 'k', 'x', 'u', ARGV[1], 'code', ARGV[2])
return n
