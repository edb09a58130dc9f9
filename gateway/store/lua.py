"""The Redis store's server-side scripts: each one runs atomically on the server.

``COMMIT`` is the whole write path of the control plane: check the
compare-and-set expectations, write the changed documents, bump the
revision, append the audit entries (old → new, built from the values it read
in the same atomic step) and publish the notice. ``ADMIT`` is the tenant
limits rule of ``gateway.store.quota`` (same formulas, same ``Retry-After``)
evaluated atomically across replicas. ``RENEW``/``RELEASE`` are the
compare-then-act halves of the canary controller's lease (``SET NX PX``
takes it).
"""

from __future__ import annotations

# KEYS: state hash, revision, audit list. ARGV: channel, payload JSON
# {actor, action, note, at (string), changes: [[key, text|false]], expect: [[key, text|false]]}.
# Returns {-1, key} on a failed expectation, else {revision, entry JSON...}.
COMMIT = """
local p = cjson.decode(ARGV[2])
for _, e in ipairs(p.expect) do
  local cur = redis.call('HGET', KEYS[1], e[1])
  if cur ~= e[2] then return {-1, e[1]} end
end
local pending = {}
for _, c in ipairs(p.changes) do
  local old = redis.call('HGET', KEYS[1], c[1])
  if old ~= c[2] then table.insert(pending, {c[1], old, c[2]}) end
end
if #pending == 0 then return {tonumber(redis.call('GET', KEYS[2]) or '0')} end
local rev = redis.call('INCR', KEYS[2])
local out = {rev}
for _, c in ipairs(pending) do
  local key, old, new = c[1], c[2], c[3]
  if new == false then
    redis.call('HDEL', KEYS[1], key)
  else
    redis.call('HSET', KEYS[1], key, new)
  end
  local entry = '{"revision":' .. rev .. ',"at":' .. p.at
    .. ',"actor":' .. cjson.encode(p.actor) .. ',"action":' .. cjson.encode(p.action)
    .. ',"key":' .. cjson.encode(key) .. ',"old":' .. (old or 'null')
    .. ',"new":' .. (new or 'null') .. ',"note":' .. cjson.encode(p.note) .. '}'
  redis.call('RPUSH', KEYS[3], entry)
  table.insert(out, entry)
end
-- the audit log keeps its newest entries (replica status and canary holds
-- write for as long as the fleet runs)
redis.call('LTRIM', KEYS[3], -100000, -1)
redis.call('PUBLISH', ARGV[1], '{"type":"changed","revision":' .. rev .. '}')
return out
"""

# KEYS: lease. ARGV: holder, ttl ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: requests this minute, requests last minute, tokens this minute, tokens
# last minute, stream leases (zset). ARGV: now (s), elapsed share of the minute,
# rpm, tpm, streams (0 = unlimited), stream id, lease (s).
# Returns {1} or {0, reason, limit, retry-after seconds as a string}.
ADMIT = """
local now, f = tonumber(ARGV[1]), tonumber(ARGV[2])
local function wait(cur, prev, limit)
  if cur + 1 > limit then
    local need = 0
    if cur > 0 then need = math.max(0, 1 - (limit - 1) / cur) end
    return (1 - f) * 60 + need * 60
  end
  if prev <= 0 then return 0 end
  return math.max(0, 1 - (limit - cur - 1) / prev - f) * 60
end
local checks = {{'requests_per_min', tonumber(ARGV[3]), KEYS[1], KEYS[2]},
                {'tokens_per_min', tonumber(ARGV[4]), KEYS[3], KEYS[4]}}
for _, c in ipairs(checks) do
  if c[2] > 0 then
    local cur = tonumber(redis.call('GET', c[3]) or '0')
    local prev = tonumber(redis.call('GET', c[4]) or '0')
    if prev * (1 - f) + cur + 1 > c[2] then
      return {0, c[1], c[2], tostring(wait(cur, prev, c[2]))}
    end
  end
end
local streams = tonumber(ARGV[5])
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= streams then
    return {0, 'concurrent_streams', streams, '1'}
  end
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[7]), ARGV[6])
  redis.call('EXPIRE', KEYS[5], math.ceil(tonumber(ARGV[7])))
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 130)
return {1}
"""

# Tenant-limit leases (gateway.store.lease): one replica settles its last lease
# and is granted its next one, atomically. KEYS: requests this minute, requests
# last minute, tokens this minute, tokens last minute, slots held (hash replica
# → n), slot lease expiries (zset replica → expiry), replicas waiting for a slot
# (zset replica → expiry). ARGV: now (s), elapsed
# share of the minute, rpm, tpm, streams (0 = unlimited), replica, lease ttl (s),
# settle requests, settle tokens, want requests, want tokens, want slots, slots
# in use, refusing streams (1/0). A positive settle gives unused credits back to this minute (never
# below zero), a negative one counts what was used beyond the lease. Rates are
# granted from the sliding-window room left (``quota`` rule: estimate + n ≤
# limit), counted at once; slots are granted from the limit minus what the
# other replicas hold, never fewer than those in use, and no spare one while
# another replica waits for a slot. Returns {requests granted, tokens granted,
# slots held, requests retry-after s, tokens retry-after s, other replicas
# waiting for a slot} (the retry-afters as strings).
GRANT = """
local now, f, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local function wait(cur, prev, limit)
  if cur + 1 > limit then
    local need = 0
    if cur > 0 then need = math.max(0, 1 - (limit - 1) / cur) end
    return (1 - f) * 60 + need * 60
  end
  if prev <= 0 then return 0 end
  return math.max(0, 1 - (limit - cur - 1) / prev - f) * 60
end
local rates = {{tonumber(ARGV[3]), KEYS[1], KEYS[2], tonumber(ARGV[8]), tonumber(ARGV[10])},
               {tonumber(ARGV[4]), KEYS[3], KEYS[4], tonumber(ARGV[9]), tonumber(ARGV[11])}}
local out = {0, 0, 0, '0', '0', 0}
for i, r in ipairs(rates) do
  local limit, curk, prevk, settle, want = r[1], r[2], r[3], r[4], r[5]
  if limit > 0 then
    local cur = tonumber(redis.call('GET', curk) or '0')
    if settle > 0 then
      settle = math.min(settle, cur)
    end
    if settle ~= 0 then
      cur = cur - settle
      redis.call('SET', curk, cur, 'EX', 130)
    end
    local prev = tonumber(redis.call('GET', prevk) or '0')
    local room = math.floor(limit - prev * (1 - f) - cur)
    local granted = math.max(0, math.min(want, room))
    if granted > 0 then
      cur = cur + granted
      redis.call('SET', curk, cur, 'EX', 130)
    end
    out[i] = granted
    if granted < want then out[i + 3] = tostring(wait(cur, prev, limit)) end
  end
end
local streams = tonumber(ARGV[5])
if streams > 0 then
  -- slot leases expire on the server's clock: replicas' clocks disagree, and one
  -- running ahead would otherwise expire the others' slots early
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1e6
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)) do
    redis.call('HDEL', KEYS[5], gone)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  local others = 0
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[6] then others = others + tonumber(all[i + 1]) end
  end
  local want, inuse, refusing = tonumber(ARGV[12]), tonumber(ARGV[13]), ARGV[14] == '1'
  local waiting = redis.call('ZCARD', KEYS[7])
  if redis.call('ZSCORE', KEYS[7], ARGV[6]) then waiting = waiting - 1 end
  -- a spare slot goes to a replica that is refusing streams, not one that might need it
  if waiting > 0 and not refusing then want = inuse end
  local held = math.max(inuse, math.min(want, streams - others))
  if refusing and held <= inuse then
    redis.call('ZADD', KEYS[7], now + ttl, ARGV[6])
    redis.call('EXPIRE', KEYS[7], math.ceil(ttl) + 1)
  else
    redis.call('ZREM', KEYS[7], ARGV[6])
  end
  if held > 0 then
    redis.call('HSET', KEYS[5], ARGV[6], held)
    redis.call('ZADD', KEYS[6], now + ttl, ARGV[6])
    redis.call('EXPIRE', KEYS[5], math.ceil(ttl) + 1)
    redis.call('EXPIRE', KEYS[6], math.ceil(ttl) + 1)
  else
    redis.call('HDEL', KEYS[5], ARGV[6])
    redis.call('ZREM', KEYS[6], ARGV[6])
  end
  out[3] = held
  out[6] = waiting
end
return out
"""
