-- One key's rights across regions in this region's Redis (KEYS[1], a hash) and the
-- region's bucket of that key (KEYS[2]): merges what the caller read from every region,
-- publishes this region's demand, makes the caller's gives, and resizes the bucket to the
-- new share, all in one atomic step, so that a give has shrunk the bucket before any peer
-- can read it. The rights are a CRDT (see src/ratelimit/regions): counters only grow and
-- merge by maximum. Fields: g:<from>:<to> units given, dv:<r>/do:<r> region r's demand
-- (version, requests per 1000 s: a policy of 5 a minute still shows), share (units this
-- region enforces), gen (counts the rounds that gave), seen/ws (requests counted in the
-- demand window since ws), fp (the regions' configuration it was written under).
-- ARGV: 1 = this region's index, 2 = number of regions, 3 = this region's initial share,
--       4 = share to assume when the hash has none (what grant.lua assumed),
--       5 = requests the caller saw since its last call, 6 = demand window in ms,
--       7 = the gen the caller planned its gives from (-1: no gives),
--       8 = the policy's tokens per millisecond, 9 = its burst, 10 = TTL in ms,
--       11 = the fingerprint of the regions' configuration (a hash written under another
--            one is left as it is: its indices name other regions),
--       then a count and that many (from, to, units) give counters,
--       then a count and that many (region, version, requests per 1000 s) demands,
--       then a count and that many (to, units) gives.
-- Returns the hash after the change, as HGETALL does, then '_gave' and 1 if this call gave.
local WHOLE = 1000000
local me = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local function num(field)
  return tonumber(redis.call('HGET', KEYS[1], field)) or 0
end
-- Integers as plain digits: tostring turns large numbers into exponent notation.
local function int(x)
  return string.format('%.0f', x)
end
-- initial + received - given, as every region computes it (Rights::share).
local function share()
  local s = tonumber(ARGV[3])
  for r = 0, n - 1 do
    if r ~= me then
      s = s + num('g:' .. r .. ':' .. me) - num('g:' .. me .. ':' .. r)
    end
  end
  return math.max(0, math.min(WHOLE, s))
end
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp and fp ~= ARGV[11] then
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, '_gave')
  table.insert(out, '0')
  return out
end
redis.call('HSET', KEYS[1], 'fp', ARGV[11])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A hash without a share is new here, or Redis lost it: then so is the bucket's history.
local had = tonumber(redis.call('HGET', KEYS[1], 'share'))
local old = had or tonumber(ARGV[4])
local i = 12
for _ = 1, tonumber(ARGV[i]) do
  local field = 'g:' .. ARGV[i + 1] .. ':' .. ARGV[i + 2]
  local units = tonumber(ARGV[i + 3])
  if units > num(field) then
    redis.call('HSET', KEYS[1], field, int(units))
  end
  i = i + 3
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  local r, version, observed = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local v, o = num('dv:' .. r), num('do:' .. r)
  if version > v or (version == v and observed > o) then
    redis.call('HSET', KEYS[1], 'dv:' .. r, int(version), 'do:' .. r, int(observed))
  end
  i = i + 3
end
i = i + 1
-- This region's demand: requests counted by every instance, published once per window as
-- a moving average (a quarter of the newest window; the first window as it is): one noisy
-- window of two saturated regions must not move rights back and forth.
local seen = num('seen') + tonumber(ARGV[5])
-- A new hash publishes at once, the caller's count taken as one window's: an idle region
-- says so in its first round, and a busy one is not taken for idle meanwhile.
local ws = tonumber(redis.call('HGET', KEYS[1], 'ws')) or (now - tonumber(ARGV[6]))
if now - ws >= tonumber(ARGV[6]) then
  local rate = seen * 1000000 / (now - ws)
  local smooth = rate
  if num('dv:' .. me) > 0 then
    smooth = num('do:' .. me) * 0.75 + rate * 0.25
  end
  -- Floored, so that an idle region's demand decays to zero.
  smooth = math.floor(smooth)
  redis.call('HSET', KEYS[1], 'dv:' .. me, int(num('dv:' .. me) + 1), 'do:' .. me, int(smooth))
  seen, ws = 0, now
end
redis.call('HSET', KEYS[1], 'seen', int(seen), 'ws', int(ws))
-- Gives, only from the state the caller planned on: of two instances planning at once,
-- one gives.
local s = share()
local gen = num('gen')
local gave = false
if tonumber(ARGV[7]) == gen then
  for _ = 1, tonumber(ARGV[i]) do
    local to, units = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if to ~= me and to >= 0 and to < n and units > 0 and units <= s then
      local field = 'g:' .. me .. ':' .. to
      redis.call('HSET', KEYS[1], field, int(num(field) + units))
      s = s - units
      gave = true
    end
    i = i + 2
  end
  if gave then
    gen = gen + 1
  end
end
redis.call('HSET', KEYS[1], 'share', int(s), 'gen', int(gen))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[10]))
-- The bucket follows the share: refilled at the old share's pace until now, then capped at
-- the new capacity. A shrink drops the tokens above it; a grow adds none (the added
-- capacity starts empty). A missing bucket next to a known share expired because it was
-- full at that share: made so, or grant.lua would make it full at the new one. Next to no
-- known share (Redis lost both), it is left for grant.lua to seed from what the asking
-- instance last saw.
local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts', 'epoch')
local tokens, ts, epoch = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
local missing = tokens == nil or ts == nil or epoch == nil
if s ~= old and (had or not missing) then
  local rate, burst = tonumber(ARGV[8]), tonumber(ARGV[9])
  if missing then
    tokens, ts, epoch = burst * old / WHOLE, now, now
  end
  if now > ts then
    tokens = math.min(burst * old / WHOLE, tokens + (now - ts) * rate * old / WHOLE)
    ts = now
  end
  tokens = math.min(tokens, burst * s / WHOLE)
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', tostring(ts), 'epoch', tostring(epoch))
  -- Kept while it differs from a full bucket, as grant.lua does.
  local pace = math.max(rate * s / WHOLE, 1e-9)
  redis.call('PEXPIRE', KEYS[2], math.max(1000, 2 * math.ceil((burst * s / WHOLE - tokens) / pace)))
end
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, '_gave')
table.insert(out, gave and '1' or '0')
return out
