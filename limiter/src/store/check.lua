-- apiguard-limiter: decide every check of one call atomically, in one round trip.
--
-- KEYS[i]  the Redis key of check i: apiguard:{TAG}:<log|counter>:<window_ms>:<client key>.
--          Every key of one call carries the same {TAG}, so in Redis Cluster they share a slot.
-- ARGV[1]  a call id unique across every limiter instance; log members are
--          <call id>:<i>:x<cost>, so two calls in the same millisecond are two members.
-- ARGV[2]  the latest Redis TIME (ms) at which this call may still count: past it the caller
--          has long answered 503 (a Redis paused or blocked while the call waited), so the
--          script returns { 2 } and writes nothing.
-- ARGV[3 + 4(i-1) .. 6 + 4(i-1)]  check i: algorithm ("log" | "counter"), limit, window_ms, cost.
--
-- Returns { allowed (1 | 0), then for each check: remaining, reset_ms, retry_after_ms }, or
-- { 2 } for a call that came too late.
--
-- Cost: O(log n) per log check plus the calls that leave the window; a refused log check reads
-- at most `cost` more members for its retry_after_ms (see retry_after), whatever n is.
--
-- The one clock is Redis TIME (ms), so limiter replicas with skewed clocks still agree.
-- Nothing is written unless every check fits: an over-limit call consumes nothing.
--
-- log:     a sorted set of admitted calls scored by admission time, one member per call
--          whatever its cost (memory is bounded by calls, not units), plus one member '=' whose
--          score is minus the sum of the costs in the set. A call admitted at T counts its
--          cost while now - window < T. Exact. Members written before costs were recorded
--          (<call id>:<i>:<n>, one per unit) count 1 each; a set without '=' is summed once.
-- counter: a hash {w = fixed-window index, c = its count, p = the previous window's count};
--          estimate = p * (window - elapsed) / window + c. Approximate; retry_after and
--          remaining are rounded so they never promise too early.

-- The cost a log member stands for: x<cost> at its end, else 1 (one member per unit).
local function cost_of(member)
  local c = string.match(member, ':x(%d+)$')
  return c and tonumber(c) or 1
end

-- Milliseconds until enough cost has left the log `key` for `s.cost` more to fit, reading
-- O(log n + cost) whatever the window holds (a refused caller may keep asking, and Redis serves
-- everyone else meanwhile). Ranks count from the oldest call; '=' (negative score) is rank 0
-- whenever the set counts anything, which a refusal implies. Every member stands for at least
-- 1 unit, so the call whose departure frees `must_leave` units is among the oldest `must_leave`:
-- read at most `cost` of them. When `must_leave` exceeds `cost` (the window holds more than the
-- limit: a limit lowered, or one key shared by limits of different sizes) and those do not free
-- enough, the member as many ranks further as units are still missing frees at least that
-- much: an answer that may be late, never early (exact when those calls cost 1 each).
local function retry_after(key, s, now)
  local must_leave, left = s.count + s.cost - s.limit, 0
  local reading = math.min(must_leave, s.cost)
  local e = redis.call('ZRANGE', key, 1, reading, 'WITHSCORES')
  for j = 1, #e, 2 do
    left = left + cost_of(e[j])
    if left >= must_leave then
      return tonumber(e[j + 1]) + s.window - now
    end
  end
  local rank = #e / 2 + (must_leave - left)
  local at = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  if #at == 0 then
    -- Fewer members than that: the newest one's departure empties the window.
    at = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  end
  if #at == 0 then
    return s.window
  end
  return tonumber(at[2]) + s.window - now
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then
  return { 2 }
end
local n = #KEYS
local fits = true
local st = {}

for i = 1, n do
  local b = 3 + (i - 1) * 4
  local s = { algo = ARGV[b], limit = tonumber(ARGV[b + 1]), window = tonumber(ARGV[b + 2]),
              cost = tonumber(ARGV[b + 3]) }
  local key = KEYS[i]
  if s.algo == 'log' then
    local sum = redis.call('ZSCORE', key, '=')
    local gone = redis.call('ZRANGEBYSCORE', key, 0, now - s.window)
    if sum then
      s.count = -tonumber(sum)
      for _, m in ipairs(gone) do
        s.count = s.count - cost_of(m)
      end
    end
    redis.call('ZREMRANGEBYSCORE', key, 0, now - s.window)
    if not sum then
      s.count = 0
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, 0, '+inf')) do
        s.count = s.count + cost_of(m)
      end
    end
    -- Keep '=' equal to what is left (never 0: a score of 0 would fall in the expiry range).
    if #gone > 0 or not sum then
      if s.count > 0 then
        redis.call('ZADD', key, -s.count, '=')
      else
        redis.call('ZREM', key, '=')
      end
    end
    s.fits = s.count + s.cost <= s.limit
  else
    s.index = math.floor(now / s.window)
    s.elapsed = now - s.index * s.window
    local h = redis.call('HMGET', key, 'w', 'c', 'p')
    local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    if w == s.index - 1 then
      p = c
      c = 0
    elseif w ~= s.index then
      p = 0
      c = 0
    end
    s.curr, s.prev = c, p
    s.fits = p * (s.window - s.elapsed) / s.window + c + s.cost <= s.limit
  end
  fits = fits and s.fits
  st[i] = s
end

if fits then
  for i = 1, n do
    local s = st[i]
    if s.algo == 'log' then
      s.count = s.count + s.cost
      redis.call('ZADD', KEYS[i], now, ARGV[1] .. ':' .. i .. ':x' .. s.cost, -s.count, '=')
      redis.call('PEXPIRE', KEYS[i], s.window)
    else
      s.curr = s.curr + s.cost
      redis.call('HSET', KEYS[i], 'w', s.index, 'c', s.curr, 'p', s.prev)
      redis.call('PEXPIRE', KEYS[i], 2 * s.window)
    end
  end
end

local out = { fits and 1 or 0 }
for i = 1, n do
  local s = st[i]
  local remaining, reset, retry = 0, 0, 0
  if s.algo == 'log' then
    remaining = math.max(0, s.limit - s.count)
    if s.count > 0 then
      local newest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
      reset = tonumber(newest[2]) + s.window - now
    end
    if not fits then
      if s.cost > s.limit then
        retry = s.window
      elseif not s.fits then
        retry = retry_after(KEYS[i], s, now)
      end
    end
  else
    local W, L, k, c, p, e = s.window, s.limit, s.cost, s.curr, s.prev, s.elapsed
    local est = p * (W - e) / W + c
    remaining = math.max(0, math.floor(L - est))
    if c > 0 then
      reset = (W - e) + W
    elseif p > 0 then
      reset = W - e
    end
    if not fits and not s.fits then
      if k > L then
        retry = W
      elseif L - c - k >= 0 and p > 0 then
        retry = math.max(1, math.ceil(W * (1 - (L - c - k) / p) - e))
      else
        local at = 0
        if c > 0 then
          at = math.max(0, W * (1 - (L - k) / c))
        end
        retry = (W - e) + math.ceil(at)
      end
    end
  end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out
