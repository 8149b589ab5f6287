-- Append publications to their channel histories and partition logs: each message atomically
-- (in both or in neither), and the messages in the order given. One call carries a batch of
-- messages whose keys are all on this shard, so a batch costs one script run, not one per message.
-- Per message m (0-based), KEYS[4m+1..4m+4] and ARGV[8m+1..8m+8]:
-- KEYS hist:{p}:<channel>, log:{p}, epoch:{p}, idem:{p}:<key> (unused unless ARGV 6 is '1')
-- ARGV channel, payload (msgpack [event, sender, data]), history size, history ttl ms,
--      epoch to create if the partition has none, '1' when idempotent, idempotency window ms,
--      approximate cap of the partition log
-- Returns, per message, {offset, epoch, duplicate (0/1)} or an error reply for that message alone.

-- Retention removes entries with XDEL, not XTRIM: only XDEL advances the stream's
-- max-deleted-entry-id, which history_read uses to tell a complete resume from a gap.
local function drop(hist, ids)
  if #ids > 0 then redis.call('XDEL', hist, unpack(ids)) end
end

local function append(k, a)
  local hist, log, epoch_key, idem_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local epoch = redis.call('GET', epoch_key)
  if not epoch then
    epoch = ARGV[a + 5]
    redis.call('SET', epoch_key, epoch)
  end
  local idempotent = ARGV[a + 6] == '1'
  if idempotent then
    local prev = redis.call('GET', idem_key)
    if prev then
      return {prev, epoch, 1}
    end
  end
  local id = redis.call('XADD', hist, '*', 'p', ARGV[a + 2])
  local now_ms = tonumber(string.match(id, '^(%d+)'))
  local ttl = tonumber(ARGV[a + 4])
  local excess = redis.call('XLEN', hist) - tonumber(ARGV[a + 3])
  local doomed = {}
  if excess > 0 then
    for i, e in ipairs(redis.call('XRANGE', hist, '-', '+', 'COUNT', excess)) do doomed[i] = e[1] end
  end
  drop(hist, doomed)
  doomed = {}
  for i, e in ipairs(redis.call('XRANGE', hist, '-', '(' .. (now_ms - ttl) .. '-0', 'COUNT', 1000)) do doomed[i] = e[1] end
  drop(hist, doomed)
  redis.call('PEXPIRE', hist, ttl)
  redis.call('XADD', log, 'MAXLEN', '~', tonumber(ARGV[a + 8]), '*', 'k', 'm', 'c', ARGV[a + 1], 'o', id, 'e', epoch,
             'p', ARGV[a + 2])
  if idempotent then
    redis.call('SET', idem_key, id, 'PX', tonumber(ARGV[a + 7]))
  end
  return {id, epoch, 0}
end

local out = {}
for m = 0, #KEYS / 4 - 1 do
  local ok, reply = pcall(append, m * 4, m * 8)
  if ok then
    out[m + 1] = reply
  else  -- a failed command (say WRONGTYPE) fails its message, not the rest of the batch
    out[m + 1] = redis.error_reply(type(reply) == 'table' and reply.err or tostring(reply))
  end
end
return out
