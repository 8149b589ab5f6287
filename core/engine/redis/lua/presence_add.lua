-- Add or refresh a client in a channel's presence.
-- KEYS[1] presence:{p}:<channel> (hash client -> entry)   KEYS[2] presence-exp:{p}:<channel> (zset client -> expiry ms)
-- ARGV[1] client  ARGV[2] entry (msgpack)  ARGV[3] expiry ms  ARGV[4] key ttl ms
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
