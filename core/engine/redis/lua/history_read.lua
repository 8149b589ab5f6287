-- Read a channel's history with what is needed to decide whether a resume is complete.
-- KEYS[1] hist:{p}:<channel>   KEYS[2] epoch:{p}
-- ARGV[1] epoch to create if none  ARGV[2] history ttl ms  ARGV[3] since offset ('' = latest messages)
-- ARGV[4] max messages (-1 = all)
-- Returns {epoch, last offset, newest dropped offset, {{id, {field, value}}, ...}}.
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {epoch, '0-0', '0-0', {}}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local doomed = {}
for i, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '(' .. (now_ms - tonumber(ARGV[2])) .. '-0', 'COUNT', 1000)) do
  doomed[i] = e[1]
end
if #doomed > 0 then redis.call('XDEL', KEYS[1], unpack(doomed)) end  -- XDEL: see publish_append.lua
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, dropped = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then dropped = info[i + 1] end
end
local count = tonumber(ARGV[4])
local entries
if ARGV[3] == '' then
  if count < 0 then
    entries = redis.call('XRANGE', KEYS[1], '-', '+')
  else
    entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', count)
  end
elseif count < 0 then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], '+')
else
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], '+', 'COUNT', count)
end
return {epoch, last, dropped, entries}
