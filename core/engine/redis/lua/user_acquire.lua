-- Count a connection of a user against the cluster-wide limit.
-- KEYS[1] uconn:{p}:<user> (zset client -> expiry ms)
-- ARGV[1] client  ARGV[2] limit  ARGV[3] now ms  ARGV[4] expiry ms
-- Returns 1 when counted, 0 when the limit is reached.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[4]))
return 1
