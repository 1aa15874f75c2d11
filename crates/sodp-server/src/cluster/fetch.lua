-- What brings a copy of a key from version ARGV[1] to the current one
-- (cluster/catch_up.rs). KEYS[1] the key's hash, KEYS[2] its history.
-- {'current'} | {'changes', entry...} (oldest first) |
-- {'image', version, initialized, image value, deadline or '', image
-- version, entry...} (the retained entries after ARGV[1] or after the
-- image, whichever is older: the image plus those after it is the value).
local since = tonumber(ARGV[1])
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if tonumber(v) == since then return {'current'} end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
local first = #entries + 1
for j = #entries, 1, -1 do
  local ver = tonumber(string.match(entries[j], '^%d+ (%d+) '))
  if ver <= since then break end
  first = j
end
if first <= #entries and tonumber(string.match(entries[first], '^(%d+) ')) == since then
  local out = {'changes'}
  for j = first, #entries do out[#out + 1] = entries[j] end
  return out
end
local h = redis.call('HMGET', KEYS[1], 'v', 'i', 'val', 'x', 'iv')
local iv = h[5] or h[1] or '0'
local start = math.min(since, tonumber(iv))
first = #entries + 1
for j = #entries, 1, -1 do
  local ver = tonumber(string.match(entries[j], '^%d+ (%d+) '))
  if ver <= start then break end
  first = j
end
local out = {'image', h[1] or '0', h[2] or '0', h[3] or '', h[4] or '', iv}
for j = first, #entries do out[#out + 1] = entries[j] end
return out
