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
