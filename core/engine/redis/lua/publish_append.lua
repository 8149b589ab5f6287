-- Append one publication to its channel history and to its partition log, atomically.
-- KEYS[1] hist:{p}:<channel>   KEYS[2] log:{p}   KEYS[3] epoch:{p}   KEYS[4] idem:{p}:<key> (unused unless ARGV[6] == '1')
-- ARGV[1] channel  ARGV[2] payload (msgpack [event, sender, data])  ARGV[3] history size
-- ARGV[4] history ttl ms  ARGV[5] epoch to create if the partition has none  ARGV[6] '1' when idempotent
-- ARGV[7] idempotency window ms  ARGV[8] approximate cap of the partition log
-- Returns {offset, epoch, duplicate (0/1)}.
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    return {prev, epoch, 1}
  end
end
-- Retention removes entries with XDEL, not XTRIM: only XDEL advances the stream's
-- max-deleted-entry-id, which history_read uses to tell a complete resume from a gap.
local function drop(ids)
  if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
end
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2])
local now_ms = tonumber(string.match(id, '^(%d+)'))
local ttl = tonumber(ARGV[4])
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
local doomed = {}
if excess > 0 then
  for i, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)) do doomed[i] = e[1] end
end
drop(doomed)
doomed = {}
for i, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '(' .. (now_ms - ttl) .. '-0', 'COUNT', 1000)) do doomed[i] = e[1] end
drop(doomed)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[8]), '*', 'k', 'm', 'c', ARGV[1], 'o', id, 'e', epoch, 'p', ARGV[2])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[4], id, 'PX', tonumber(ARGV[7]))
end
return {id, epoch, 0}
