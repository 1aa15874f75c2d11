-- One atomic mutation of one or more keys (cluster/commit.rs builds the call).
-- KEYS[1] version counter, KEYS[2] the presence registry of the node the
-- binding belongs to, KEYS[3] index of keys with a value, KEYS[4] deadlines;
-- then per key: its hash, its history list, its presence owners.
-- A key's hash: v version, i initialized, x deadline, and its image: val
-- (MessagePack) at version iv, followed by the oc changes (ob bytes of
-- ops) since, which the history always still holds. A write ships its
-- value only when the node finds that worth it; without one the script
-- asks for it ('needvalue') once the ops since the image outweigh the
-- image, or the history could trim one of them.
-- ARGV[1] number of keys, ARGV[2] history length, ARGV[3] channel prefix,
-- ARGV[4] "1" when the node has lost its connection since its last commit
-- (Redis may have restarted or failed over), ARGV[5] the idempotency
-- fingerprint ("a b"; "" for a call without idempotency_key) and ARGV[6]
-- its window in ms, the record being the last of KEYS; then per key 9
-- fields: name, base version, initialized after ("1"/"0"),
-- value (MessagePack; "" not shipped), deadline ("-" kept, "0" removed, else Unix ms),
-- ops (MessagePack), binding ("" or "+owner\npath", "-owner\npath",
-- "~nodeprefix\npath"), the deadline the key must still have ("" none),
-- the value's encoded size after the change (decimal).
local n = tonumber(ARGV[1])
local hlen = tonumber(ARGV[2])
local chan = ARGV[3]
local fingerprint = ARGV[5]
local record = KEYS[4 + n * 3 + 1]
local function arg(i, j) return ARGV[6 + (i - 1) * 9 + j] end
local function hash(i) return KEYS[4 + (i - 1) * 3 + 1] end
local function hist(i) return KEYS[4 + (i - 1) * 3 + 2] end
local function owners(i) return KEYS[4 + (i - 1) * 3 + 3] end
local function binding(i)
  local b = arg(i, 7)
  if b == '' then return nil end
  local nl = string.find(b, '\n', 2, true)
  return string.sub(b, 1, 1), string.sub(b, 2, nl - 1), string.sub(b, nl + 1)
end

-- 0. An idempotent call some node already committed: its outcome, and
-- nothing changes (the record is written by the same step as the change,
-- so no node can die between the two).
if fingerprint ~= '' then
  local seen = redis.call('GET', record)
  if seen then return {'seen', seen} end
end

-- 1. Conditions: every key still at the version the node drafted on.
for i = 1, n do
  local cur = redis.call('HGET', hash(i), 'v') or '0'
  if cur ~= arg(i, 2) then return {'stale', tostring(i), cur} end
  local expiring = arg(i, 8)
  if expiring ~= '' and redis.call('HGET', hash(i), 'x') ~= expiring then
    return {'stale', tostring(i), cur}
  end
  local kind, who, path = binding(i)
  if kind == '-' or kind == '~' then
    local owner = redis.call('HGET', owners(i), path)
    local mine = owner == who or (kind == '~' and owner and string.sub(owner, 1, #who) == who)
    if not mine then return {'notowner'} end
  end
  if arg(i, 4) == '' then
    local f = redis.call('HMGET', hash(i), 'iv', 'ob', 'oc')
    local image = redis.call('HSTRLEN', hash(i), 'val')
    if not f[1] or tonumber(f[2]) + #arg(i, 6) > math.max(image, 256)
        or tonumber(f[3]) + 1 >= hlen then
      return {'needvalue'}
    end
  end
end

-- 2. The version: the persisted counter + 1 (as a single server counts).
-- With no counter (a fresh Redis, or one that lost it), or when the node
-- has been cut off since its last commit (Redis may have restarted or
-- failed over and rolled the counter back), at least Redis's clock in
-- microseconds, so no version is ever handed out twice.
local counter = redis.call('GET', KEYS[1])
local version = tonumber(counter or '0') + 1
if not counter or ARGV[4] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if now > version then version = now end
end
local vs = string.format('%.0f', version)
redis.call('SET', KEYS[1], vs)
if fingerprint ~= '' then
  redis.call('SET', record, fingerprint .. " " .. vs, 'PX', ARGV[6])
end

-- 3. Store, record, publish.
for i = 1, n do
  local name, base, init, value, exp, ops = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4), arg(i, 5), arg(i, 6)
  local h = hash(i)
  if value ~= '' then
    redis.call('HSET', h, 'v', vs, 'i', init, 'val', value, 'iv', vs, 'ob', 0, 'oc', 0)
  else
    redis.call('HSET', h, 'v', vs, 'i', init)
    redis.call('HINCRBY', h, 'ob', #ops)
    redis.call('HINCRBY', h, 'oc', 1)
  end
  if exp == '0' then
    redis.call('HDEL', h, 'x')
    redis.call('ZREM', KEYS[4], name)
  elseif exp ~= '-' then
    redis.call('HSET', h, 'x', exp)
    redis.call('ZADD', KEYS[4], exp, name)
  end
  if init == '1' then
    redis.call('ZADD', KEYS[3], 0, name)
  else
    redis.call('ZREM', KEYS[3], name)
  end
  local kind, who, path = binding(i)
  if kind == '+' then
    redis.call('HSET', owners(i), path, who)
    redis.call('SADD', KEYS[2], name .. '\n' .. path)
  elseif kind then
    redis.call('HDEL', owners(i), path)
    redis.call('SREM', KEYS[2], name .. '\n' .. path)
  end
  local entry = base .. ' ' .. vs .. ' ' .. exp .. ' ' .. arg(i, 9) .. ' ' .. ops
  redis.call('RPUSH', hist(i), entry)
  redis.call('LTRIM', hist(i), -hlen, -1)
  redis.call('PUBLISH', chan .. name, entry)
end
return {'ok', vs}
