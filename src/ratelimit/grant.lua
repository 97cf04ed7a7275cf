-- Grants up to ARGV[3] tokens from the bucket at KEYS[1], refilled by Redis's own clock.
-- ARGV: 1 = tokens per millisecond, 2 = burst, 3 = tokens wanted (0 = none),
--       4 = tokens given back (added before granting), 5 = key TTL in milliseconds.
-- Returns {granted, milli-tokens left, milliseconds until the next whole token}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end
tokens = math.min(burst, tokens + back)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
local wait = 0
if tokens < 1 then
  wait = math.ceil((1 - tokens) / rate)
end
return {granted, math.floor(tokens * 1000), wait}
