-- Grants up to ARGV[3] tokens from the bucket at KEYS[1], refilled by Redis's own clock.
-- ARGV: 1 = tokens per millisecond, 2 = burst, 3 = tokens wanted (0 = none),
--       4 = tokens given back (added before granting), 5 = key TTL in milliseconds,
--       6 = the asking instance's last-known level of this bucket in tokens, or -1,
--       7 = tokens the instance admitted without Redis (an outage) since its last ask,
--           charged to the bucket, which may then owe tokens (go below zero),
--       8 = with regions: the share of the limit (millionths) to assume when KEYS[2], the
--           key's rights in this region, holds none yet (a new key, or a Redis that lost it).
-- With regions (KEYS[2] given) the bucket is this region's part: ARGV 1 and 2 scaled by the
-- share the rights record, which only the rights script changes (see rights.lua).
-- A missing bucket is new, or was lost (Redis restarted without persistence, flushed,
-- evicted, failed over to a lagging replica): it is created at the asker's last-known
-- level rather than full, so a lost bucket does not hand a spent key a fresh burst,
-- and given a new epoch (its creation time) so instances drop leases of the old one.
-- Returns {granted, milli-tokens left, milliseconds until the next whole token, epoch}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local seed = tonumber(ARGV[6])
local debit = tonumber(ARGV[7])
-- A new bucket starts full, but with regions at most at the share the asker knew: the
-- rights' share may have grown since, and added capacity starts empty.
local fresh = burst
if KEYS[2] then
  local known = tonumber(ARGV[8])
  local share = tonumber(redis.call('HGET', KEYS[2], 'share')) or known
  rate = rate * share / 1000000
  fresh = burst * math.min(share, known) / 1000000
  burst = burst * share / 1000000
end
-- A region holding no share refills nothing: divisions below use at least this rate.
local pace = math.max(rate, 1e-9)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'epoch')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
local epoch = tonumber(b[3])
if tokens == nil or ts == nil or epoch == nil then
  tokens = fresh
  if seed >= 0 then
    tokens = math.min(fresh, seed)
    -- Tokens handed back belong to the lost bucket's epoch: not added to the new one;
    -- the seed already counts what was admitted offline.
    back = 0
    debit = 0
  end
  ts = now
  epoch = now
end
-- Refill, returns and the debit together, then the cap: a debit is paid from the refill
-- the outage accrued, not from a bucket already capped at the burst.
if now > ts then
  tokens = tokens + (now - ts) * rate
end
tokens = math.min(burst, tokens + back - debit)
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)), 'epoch', tostring(epoch))
-- Kept while it differs from a full bucket (a debt takes longer to refill).
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[5]), 2 * math.ceil((burst - tokens) / pace)))
local wait = 0
if tokens < 1 then
  wait = math.min(math.ceil((1 - tokens) / pace), tonumber(ARGV[5]))
end
return {granted, math.floor(tokens * 1000), wait, epoch}
