-- A pattern's snapshot in one atomic step (cluster/snapshot.rs): the
-- version counter, then every key below the prefix that has a value.
-- KEYS[1] version counter, KEYS[2] index of keys with a value; ARGV[1] the
-- prefix of key hashes, ARGV[2]/ARGV[3] the ZRANGEBYLEX bounds ("-"/"+"
-- for every key), ARGV[4] the most value bytes to return (0: no limit),
-- ARGV[5] the prefix of key histories.
-- {version, name, key version, image, image version, n, n entries, ...}
-- (the image plus the n history entries after it is the value) |
-- {'toolarge', bytes}
local names = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3])
local limit = tonumber(ARGV[4])
local out = {redis.call('GET', KEYS[1]) or '0'}
local total = 0
for _, name in ipairs(names) do
  local h = redis.call('HMGET', ARGV[1] .. name, 'v', 'i', 'val', 'iv', 'oc')
  if h[2] == '1' then
    local oc = tonumber(h[5] or '0')
    local later = {}
    if oc > 0 then later = redis.call('LRANGE', ARGV[5] .. name, -oc, -1) end
    total = total + #h[3]
    for _, e in ipairs(later) do total = total + #e end
    if limit > 0 and total > limit then return {'toolarge', tostring(total)} end
    out[#out + 1] = name
    out[#out + 1] = h[1]
    out[#out + 1] = h[3]
    out[#out + 1] = h[4] or h[1]
    out[#out + 1] = tostring(#later)
    for _, e in ipairs(later) do out[#out + 1] = e end
  end
end
return out
