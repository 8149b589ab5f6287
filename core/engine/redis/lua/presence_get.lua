-- The live entries of a channel's presence, dropping those whose node stopped refreshing them.
-- KEYS[1] presence hash   KEYS[2] presence expiry zset   ARGV[1] now ms
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HVALS', KEYS[1])
