"""
The Lua scripts of the Redis channel layer, and the key layout they share.

Keys (``prefix`` defaults to ``asgi:``, ``stats_prefix`` to ``asgi-meta:``)::

    <prefix><hex>              message body (string), PX expiry
    <prefix><hex>:n            readers left, for a body shared by a group send
    <prefix><channel>          list of references to bodies; for a
                               process-local channel, its ``prefix!``;
                               PX 2 * expiry + 1 s after the last push
    <prefix>:group:<group>     zset member -> server time of its last
                               group_add, on the shard of each member's list
    <prefix>:groups:<channel>  set of the groups of ``channel`` (same shard)
    <stats_prefix><channel>:<stat>, <stats_prefix>#global#:<stat>
                               counters (none per single-use ``?``
                               channel), plus ``:<second>`` buckets kept 3 s

A list element (a *reference*) is the body key; on a ``prefix!`` list it is
the body key, a space and the full ``prefix!local`` name, so that one body
serves every member of a group on a shard (read-counted) and may be
encrypted.  Channel and group names are in clear in keys, as in asgi_redis;
message contents never are when encryption is on.

A reference whose body expired is dropped when it reaches the head of its
list (so it stops counting against capacity), and its channel leaves all
its groups.  Lists outlive their last message's expiry by ``expiry + 1``
seconds so that this is noticed when the list is next touched.

Every script runs atomically, so a send's capacity check and push, or a
receive's pop and body read-and-delete, cannot interleave with anything.
Times come from the server's clock (``TIME``), so processes with skewed
clocks agree on group expiry.
"""

from __future__ import annotations

from chanserv.layers.redis.connection import Script

__all__ = [
    "ALL_SCRIPTS",
    "CHANNEL_STATS",
    "GROUP_ADD",
    "GROUP_DISCARD",
    "GROUP_MEMBERS",
    "GROUP_SEND",
    "LISTS_STATS",
    "POP_MANY",
    "REQUEUE",
    "ROOM",
    "SEND",
    "Script",
]


# Shared Lua helpers, prepended to the scripts that need them.
_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local T = redis.call('TIME')
local NOW = tonumber(T[1]) + tonumber(T[2]) / 1000000
local SEC = T[1]
"""

# bump: a counter (INCRBY + EXPIRE); with ``rate``, also its bucket for the
# current second, kept 3 s, for the *_per_second statistics.
_BUMP = """
local function bump(key, by, ttl, rate)
  redis.call('INCRBY', key, by)
  redis.call('EXPIRE', key, ttl)
  if rate and redis.call('INCRBY', key .. ':' .. SEC, by) == by then
    redis.call('EXPIRE', key .. ':' .. SEC, 3)
  end
end
"""

_REFS = """
local function body_key(list, ref)
  if string.sub(list, -1) == '!' then
    local space = string.find(ref, ' ', 1, true)
    if space then return string.sub(ref, 1, space - 1) end
  end
  return ref
end
local function channel_of(prefix, list, ref)
  if string.sub(list, -1) == '!' then
    local space = string.find(ref, ' ', 1, true)
    if space then return string.sub(ref, space + 1) end
  end
  return string.sub(list, #prefix + 1)
end
"""

# A channel whose message expired unread leaves all its groups (the ASGI
# spec's recommendation; asgi_redis never did it).  ``<prefix>:groups:<c>``
# is the set of groups ``c`` was added to, kept by group_add/group_discard.
# purge drops the expired references at the head of a list (they would
# count against its capacity) and evicts their channels; it returns the
# set of channels evicted.
_EVICT = """
local function evict(prefix, channel)
  local index = prefix .. ':groups:' .. channel
  local groups = redis.call('SMEMBERS', index)
  for _, group in ipairs(groups) do
    redis.call('ZREM', prefix .. ':group:' .. group, channel)
  end
  if #groups > 0 then redis.call('DEL', index) end
end
local function purge(prefix, list)
  local evicted = {}
  while true do
    local ref = redis.call('LINDEX', list, 0)
    if not ref or redis.call('EXISTS', body_key(list, ref)) == 1 then break end
    redis.call('LPOP', list)
    local channel = channel_of(prefix, list, ref)
    if not evicted[channel] then
      evicted[channel] = true
      evict(prefix, channel)
    end
  end
  return evicted
end
"""

#: KEYS: body, list, channel count stat, channel full stat, global count
#: stat, global full stat.  ARGV: body, expiry (ms), capacity, reference,
#: channel stat ttl, global stat ttl, key prefix, list ttl (ms), "1" to keep
#: the channel's own counters (not for single-use ``?`` channels).  Returns
#: 1, or the error "full".
SEND = Script(
    "send",
    _NOW
    + _BUMP
    + _REFS
    + _EVICT
    + """
local own = ARGV[9] == '1'
purge(ARGV[7], KEYS[2])
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  if own then bump(KEYS[4], 1, ARGV[5], true) end
  bump(KEYS[6], 1, ARGV[6], true)
  return redis.error_reply('full')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
if own then bump(KEYS[3], 1, ARGV[5], true) end
bump(KEYS[5], 1, ARGV[6], true)
return 1
""",
)

#: KEYS: group, global count stat, global full stat.  ARGV: body, expiry
#: (ms), group expiry (s), body key, key prefix, stats prefix, default
#: capacity, channel stat ttl, global stat ttl, list ttl (ms), mode, then
#: pairs.  Mode "auto": members come from the group zset (expired ones
#: removed first) and the pairs are (Lua pattern, capacity), first match
#: wins; mode "given": the pairs are (member, capacity).  Members whose
#: list shows an expired message are evicted, not sent to; full members are
#: skipped.  Returns {sent, full}.
GROUP_SEND = Script(
    "group_send",
    _NOW
    + _BUMP
    + _REFS
    + _EVICT
    + """
local prefix = ARGV[5]
local members = {}
local caps = {}
if ARGV[11] == 'given' then
  for i = 12, #ARGV, 2 do
    members[#members + 1] = ARGV[i]
    caps[#caps + 1] = tonumber(ARGV[i + 1])
  end
else
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (NOW - tonumber(ARGV[3])))
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local expiry = tonumber(ARGV[2])
local body_key = ARGV[4]
local sent, full = 0, 0
local purged = {}
local evicted = {}
for i, member in ipairs(members) do
  local name, ref = member, body_key
  local bang = string.find(member, '!', 1, true)
  if bang then
    name = string.sub(member, 1, bang)
    ref = body_key .. ' ' .. member
  end
  local list = prefix .. name
  if not purged[list] then
    purged[list] = true
    for channel in pairs(purge(prefix, list)) do evicted[channel] = true end
  end
  if not evicted[member] then
    local capacity = caps[i]
    if not capacity then
      capacity = tonumber(ARGV[7])
      for j = 12, #ARGV, 2 do
        if string.match(name, ARGV[j]) then
          capacity = tonumber(ARGV[j + 1])
          break
        end
      end
    end
    local own = not string.find(name, '?', 1, true)
    if redis.call('LLEN', list) >= capacity then
      full = full + 1
      if own then bump(ARGV[6] .. name .. ':channel_full_count', 1, ARGV[8], true) end
    else
      redis.call('RPUSH', list, ref)
      redis.call('PEXPIRE', list, ARGV[10])
      sent = sent + 1
      if own then bump(ARGV[6] .. name .. ':messages_count', 1, ARGV[8], true) end
    end
  end
end
if sent > 0 then
  redis.call('SET', body_key, ARGV[1], 'PX', expiry)
  if sent > 1 then redis.call('SET', body_key .. ':n', sent, 'PX', expiry) end
  bump(KEYS[2], sent, ARGV[9], true)
end
if full > 0 then bump(KEYS[3], full, ARGV[9], true) end
return {sent, full}
""",
)

#: KEYS: the lists to pop from, in the order to try them.  ARGV: limit, key
#: prefix, then optionally the list and reference a BLPOP already took.
#: Pops round-robin across the lists until ``limit`` messages are taken or
#: all are empty; each body is read and deleted (or its read count
#: decremented) in the same step; a reference whose body expired is
#: skipped and its channel evicted from its groups.  Returns a flat
#: {list, reference, body, ...}.
POP_MANY = Script(
    "pop_many",
    _REFS
    + _EVICT
    + """
local out = {}
local n = 0
local limit = tonumber(ARGV[1])
local prefix = ARGV[2]
local function take(list, ref)
  local key = body_key(list, ref)
  local counter = key .. ':n'
  local body = redis.call('GET', key)
  if not body then
    redis.call('DEL', counter)
    evict(prefix, channel_of(prefix, list, ref))
    return
  end
  out[#out + 1] = list
  out[#out + 1] = ref
  out[#out + 1] = body
  n = n + 1
  if redis.call('EXISTS', counter) == 1 and redis.call('DECR', counter) > 0 then return end
  redis.call('DEL', key, counter)
end
if ARGV[3] then take(ARGV[3], ARGV[4]) end
local active = KEYS
while n < limit and #active > 0 do
  local still = {}
  for _, list in ipairs(active) do
    if n >= limit then break end
    local ref = redis.call('LPOP', list)
    if ref then
      take(list, ref)
      still[#still + 1] = list
    end
  end
  active = still
end
return out
""",
)

#: Puts messages taken by POP_MANY back at the head of their lists (a
#: receive cancelled while its pop was in flight).  KEYS: the lists, one per
#: message.  ARGV: expiry (ms), list ttl (ms), then (body key, reference,
#: body) triples, in the order they were taken.
REQUEUE = Script(
    "requeue",
    """
local expiry = tonumber(ARGV[1])
for i = #KEYS, 1, -1 do
  local base = 3 + (i - 1) * 3
  redis.call('SET', ARGV[base], ARGV[base + 2], 'PX', expiry)
  redis.call('LPUSH', KEYS[i], ARGV[base + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
""",
)

#: KEYS: group, the member's group index.  ARGV: member, group expiry
#: (ms), group name.
GROUP_ADD = Script(
    "group_add",
    _NOW
    + """
redis.call('ZADD', KEYS[1], NOW, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""",
)

#: KEYS: group, the member's group index.  ARGV: member, group name.
GROUP_DISCARD = Script(
    "group_discard",
    """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
""",
)

#: KEYS: group.  ARGV: group expiry (s), key prefix.  Drops expired members
#: and members whose list shows an expired message; returns the others.
GROUP_MEMBERS = Script(
    "group_members",
    _NOW
    + _REFS
    + _EVICT
    + """
local prefix = ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (NOW - tonumber(ARGV[1])))
local purged = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local name = member
  local bang = string.find(member, '!', 1, true)
  if bang then name = string.sub(member, 1, bang) end
  if not purged[name] then
    purged[name] = true
    purge(prefix, prefix .. name)
  end
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
""",
)

#: KEYS: list, channel count stat, channel full stat.  Returns {messages
#: count, channel full count, pending, PTTL of the oldest body or -2,
#: messages in the last whole second, full in the last whole second}.
CHANNEL_STATS = Script(
    "channel_stats",
    _NOW
    + _REFS
    + """
local last = ':' .. (tonumber(SEC) - 1)
local pttl = -2
local ref = redis.call('LINDEX', KEYS[1], 0)
if ref then pttl = redis.call('PTTL', body_key(KEYS[1], ref)) end
return {
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  tonumber(redis.call('GET', KEYS[3]) or '0'),
  redis.call('LLEN', KEYS[1]),
  pttl,
  tonumber(redis.call('GET', KEYS[2] .. last) or '0'),
  tonumber(redis.call('GET', KEYS[3] .. last) or '0'),
}
""",
)

#: KEYS: list.  ARGV: key prefix.  Drops expired references at its head
#: (evicting their channels); returns its length.
ROOM = Script(
    "room",
    _REFS
    + _EVICT
    + """
purge(ARGV[1], KEYS[1])
return redis.call('LLEN', KEYS[1])
""",
)

#: KEYS: any keys (a SCAN batch); the lists among them are counted.
#: Returns {pending, smallest PTTL of an oldest body or -2}.
LISTS_STATS = Script(
    "lists_stats",
    _REFS
    + """
local pending, pttl = 0, -2
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'list' then
    pending = pending + redis.call('LLEN', key)
    local ref = redis.call('LINDEX', key, 0)
    if ref then
      local left = redis.call('PTTL', body_key(key, ref))
      if left >= 0 and (pttl < 0 or left < pttl) then pttl = left end
    end
  end
end
return {pending, pttl}
""",
)


#: Every script, loaded on each connection.
ALL_SCRIPTS = (
    SEND,
    GROUP_SEND,
    POP_MANY,
    REQUEUE,
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_MEMBERS,
    CHANNEL_STATS,
    ROOM,
    LISTS_STATS,
)
