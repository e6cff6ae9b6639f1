-- Every limit of one policy tested, then (only if all admit) hit: one atomic step in Redis.
-- KEYS: one key per limit. ARGV: strategy, now in ms ('' = the Redis server's clock, so
-- every replica shares one clock), then amount and period (ms) of each limit.
-- Returns {admitted, now, then per limit: admits, remaining, reset_ms}.
-- The same definitions as gateway/pipeline/ratelimit/memory.py (integer milliseconds).
-- Key TTLs only collect garbage: each is the state's lifetime plus SLACK, so that expiry
-- (on the server's real clock) never decides a count — the script does, from `now`.
local SLACK = 60000
local strategy = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function idiv(a, b) return (a - math.fmod(a, b)) / b end
local n = #KEYS
local amount, period, s1, s2, s3, oks = {}, {}, {}, {}, {}, {}
local admit = true
for i = 1, n do
  local a = tonumber(ARGV[1 + 2 * i])
  local p = tonumber(ARGV[2 + 2 * i])
  amount[i] = a
  period[i] = p
  local ok
  if strategy == 'fixed-window' then
    local v = redis.call('HMGET', KEYS[i], 'c', 'e')
    local c = tonumber(v[1]) or 0
    local e = tonumber(v[2]) or 0
    if e <= now then c = 0; e = 0 end
    s1[i] = c; s2[i] = e
    ok = c < a
  elseif strategy == 'moving-window' then
    -- newest first; the entries still in the window are a prefix: binary search it
    local lo, hi = 0, a
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local v = redis.call('LINDEX', KEYS[i], mid)
      if v and tonumber(v) + p > now then lo = mid + 1 else hi = mid end
    end
    s1[i] = lo
    if lo > 0 then s2[i] = tonumber(redis.call('LINDEX', KEYS[i], lo - 1)) else s2[i] = false end
    ok = lo < a
  else
    local v = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
    local idx = idiv(now, p)
    local si = tonumber(v[1])
    local c = tonumber(v[2]) or 0
    local pr = tonumber(v[3]) or 0
    if si ~= idx then
      if si == idx - 1 then pr = c else pr = 0 end
      c = 0
    end
    s1[i] = c; s2[i] = pr; s3[i] = idx
    ok = pr * (p - (now - idx * p)) + c * p < a * p
  end
  oks[i] = ok
  if not ok then admit = false end
end
local out = {0, now}
if admit then out[1] = 1 end
for i = 1, n do
  local a, p = amount[i], period[i]
  local remaining, reset
  if strategy == 'fixed-window' then
    local c, e = s1[i], s2[i]
    if admit then
      if c == 0 then e = now + p end
      c = c + 1
      redis.call('HSET', KEYS[i], 'c', c, 'e', e)
      redis.call('PEXPIRE', KEYS[i], e - now + SLACK)
    end
    remaining = a - c
    if c > 0 then reset = e - now else reset = p end
  elseif strategy == 'moving-window' then
    local count, oldest = s1[i], s2[i]
    if admit then
      redis.call('LPUSH', KEYS[i], now)
      redis.call('LTRIM', KEYS[i], 0, a - 1)
      redis.call('PEXPIRE', KEYS[i], p + SLACK)
      count = count + 1
      if not oldest then oldest = now end
    end
    remaining = a - count
    if oldest then reset = oldest + p - now else reset = p end
  else
    local c, pr, idx = s1[i], s2[i], s3[i]
    if admit then
      c = c + 1
      redis.call('HSET', KEYS[i], 'i', idx, 'c', c, 'p', pr)
      redis.call('PEXPIRE', KEYS[i], 2 * p + SLACK)
    end
    local left = p - (now - idx * p)
    remaining = a - idiv(pr * left + c * p, p)
    if remaining > 0 then
      reset = left
    elseif c < a then
      reset = idiv(pr * left - (a - c) * p, pr) + 1
    else
      reset = left + idiv(p * (c - a), c) + 1
    end
  end
  if remaining < 0 then remaining = 0 end
  local ok = 0
  if oks[i] then ok = 1 end
  out[#out + 1] = ok
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
return out
