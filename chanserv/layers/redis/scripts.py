"""
The Lua scripts of the Redis channel layer and the key layout they share
(the layout and its reasons are in ``docs/internals.rst``).  The scripts
run atomically in Redis; the Python here is called on the reactor thread.
"""

from __future__ import annotations

from chanserv.layers.redis.connection import Script

__all__ = [
    "ALL_SCRIPTS",
    "BLOCK",
    "CHANNEL_STATS",
    "CHANNEL_STATS_TTL",
    "COUNT_FULL",
    "GLOBAL_STATS_KEY",
    "GLOBAL_STATS_TTL",
    "GROUP_ADD",
    "GROUP_DISCARD",
    "GROUP_MEMBERS",
    "GROUP_SEND",
    "HEARTBEAT",
    "LEAVE_ALL",
    "LISTS_STATS",
    "POP_MANY",
    "REQUEUE",
    "ROOM",
    "SEND",
    "SEND_MANY",
    "STAT_EXPIRED",
    "UNREGISTER",
]

#: Seconds a channel's statistics counters outlive their last update.
CHANNEL_STATS_TTL = 3600
#: Seconds the global statistics counters outlive their last update.
GLOBAL_STATS_TTL = 86400
#: The name the global counters are kept under (not a valid channel name).
GLOBAL_STATS_KEY = "#global#"
#: The counter of messages dropped because their body expired unread.
STAT_EXPIRED = "expired_count"

# Shared Lua helpers, prepended to the scripts that need them.
_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local T = redis.call('TIME')
local NOW = tonumber(T[1]) + tonumber(T[2]) / 1000000
local NOW_MS = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local SEC = T[1]
"""

# bump: a counter (INCRBY), kept ``ttl`` seconds after its last update;
# with ``rate``, also its bucket for the current second, kept 3 s, for the
# *_per_second statistics -- and then the counter's expiry is refreshed
# once per second it is bumped in, not on every bump.
_BUMP = """
local function bump(key, by, ttl, rate)
  if redis.call('INCRBY', key, by) == by then
    redis.call('EXPIRE', key, ttl)
  end
  if not rate then
    redis.call('EXPIRE', key, ttl)
  elseif redis.call('INCRBY', key .. ':' .. SEC, by) == by then
    redis.call('EXPIRE', key .. ':' .. SEC, 3)
    redis.call('EXPIRE', key, ttl)
  end
end
"""

# References, names and memberships.  ``expired`` notes messages found
# expired (a group reference once per local member it missed);
# ``record_expired`` adds them to the channels' and the global
# expired_count once per script call and returns how many there were.
_GROUPS = """
local EXPIRED, EXPIRED_N = {}, 0
local function expired(channel, n)
  EXPIRED[channel] = (EXPIRED[channel] or 0) + n
  EXPIRED_N = EXPIRED_N + n
end
local function record_expired(sprefix)
  if EXPIRED_N == 0 then return 0 end
  for channel, n in pairs(EXPIRED) do
    if not string.find(channel, '?', 1, true) then
      local key = sprefix .. channel .. ':%(stat)s'
      redis.call('INCRBY', key, n)
      redis.call('EXPIRE', key, %(channel_ttl)d)
    end
  end
  local key = sprefix .. '%(global)s:%(stat)s'
  redis.call('INCRBY', key, EXPIRED_N)
  redis.call('EXPIRE', key, %(global_ttl)d)
  local n = EXPIRED_N
  EXPIRED, EXPIRED_N = {}, 0
  return n
end
local function is_inbox(list) return string.sub(list, -1) == '!' end
-- A message sent to one channel is inline: "\\0<deadline ms> <local channel
-- or nothing> <body>".  Anything else in a list is a reference to a body
-- key ("<key>", or "<key> <local channel>" / "<key> #<group>" in an inbox).
local function is_inline(ref) return string.byte(ref, 1) == 0 end
-- An inline message's deadline, its channel ('' in a channel's own list),
-- and where its body starts.
local function inline_parts(ref)
  local space = string.find(ref, ' ', 2, true)
  local after = string.find(ref, ' ', space + 1, true)
  return tonumber(string.sub(ref, 2, space - 1)), string.sub(ref, space + 1, after - 1), after + 1
end
local function inline_message(deadline, channel, body)
  return '\\0' .. deadline .. ' ' .. channel .. ' ' .. body
end
local function body_key(list, ref)
  if is_inbox(list) then
    local space = string.find(ref, ' ', 1, true)
    if space then return string.sub(ref, 1, space - 1) end
  end
  return ref
end
-- Whether the message is still to be delivered (its body not expired).
local function alive(list, ref)
  if is_inline(ref) then return (inline_parts(ref)) > NOW_MS end
  return redis.call('EXISTS', body_key(list, ref)) == 1
end
-- Milliseconds the message has left (PTTL's answer: -2 when expired).
local function ttl_of(list, ref)
  if is_inline(ref) then
    local left = (inline_parts(ref)) - NOW_MS
    if left > 0 then return left end
    return -2
  end
  return redis.call('PTTL', body_key(list, ref))
end
-- The channel a reference is for, or '#<group>' for a group reference.
local function target_of(prefix, list, ref)
  if is_inline(ref) then
    local _, channel = inline_parts(ref)
    if channel ~= '' then return channel end
  elseif is_inbox(list) then
    local space = string.find(ref, ' ', 1, true)
    if space then return string.sub(ref, space + 1) end
  end
  return string.sub(list, #prefix + 1)
end
local function process_of(channel)
  local bang = string.find(channel, '!', 1, true)
  if bang then return string.sub(channel, 1, bang) end
  return nil
end
local function blocked_field(channel) return channel .. ' blocked' end
local function uncount(prefix, process, channel)
  local counts = prefix .. ':count:' .. process
  if redis.call('HINCRBY', counts, channel, -1) <= 0 then
    redis.call('HDEL', counts, channel)
  end
end
local function leave(prefix, group, channel)
  local process = process_of(channel)
  if process then
    local key = prefix .. ':group:' .. group .. ':' .. process
    redis.call('ZREM', key, channel)
    if redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', prefix .. ':procs:' .. group, process)
      redis.call('SREM', prefix .. ':pgroups:' .. process, group)
    end
  else
    redis.call('ZREM', prefix .. ':group:' .. group, channel)
  end
  redis.call('SREM', prefix .. ':groups:' .. channel, group)
end
local function evict(prefix, channel)
  local index = prefix .. ':groups:' .. channel
  for _, group in ipairs(redis.call('SMEMBERS', index)) do leave(prefix, group, channel) end
  redis.call('DEL', index)
end
local function registered(prefix, process)
  return redis.call('SISMEMBER', prefix .. ':registered', process) == 1
end
-- A registered process whose heartbeat stopped is dead: forget it all.
local function bury(prefix, process)
  local pgroups = prefix .. ':pgroups:' .. process
  for _, group in ipairs(redis.call('SMEMBERS', pgroups)) do
    local key = prefix .. ':group:' .. group .. ':' .. process
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      redis.call('DEL', prefix .. ':groups:' .. member)
    end
    redis.call('DEL', key)
    redis.call('ZREM', prefix .. ':procs:' .. group, process)
  end
  redis.call('DEL', pgroups, prefix .. process, prefix .. ':count:' .. process)
  redis.call('SREM', prefix .. ':registered', process)
end
-- Drop the references at the head of ``list`` whose body expired (they
-- would count against capacity); their channels leave all their groups.
local function purge(prefix, list)
  local evicted = {}
  while true do
    local ref = redis.call('LINDEX', list, 0)
    if not ref or alive(list, ref) then break end
    redis.call('LPOP', list)
    local target = target_of(prefix, list, ref)
    if string.sub(target, 1, 1) == '#' then
      -- A group message the process never read: its members missed it.
      local key = prefix .. ':group:' .. string.sub(target, 2) .. ':' .. string.sub(list, #prefix + 1)
      for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        expired(member, 1)
        if not evicted[member] then
          evicted[member] = true
          evict(prefix, member)
        end
      end
    else
      if is_inbox(list) then uncount(prefix, string.sub(list, #prefix + 1), target) end
      expired(target, 1)
      if not evicted[target] then
        evicted[target] = true
        evict(prefix, target)
      end
    end
  end
  return evicted
end
-- The key of process's members of group after dropping what lapsed, and
-- how many there are (0 when the process is dead or has none left).
local function local_members(prefix, group, process, cutoff)
  local key = prefix .. ':group:' .. group .. ':' .. process
  purge(prefix, prefix .. process)
  if registered(prefix, process) then
    if redis.call('EXISTS', prefix .. ':alive:' .. process) == 0 then
      bury(prefix, process)
      return key, 0
    end
  else
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. cutoff)) do
      leave(prefix, group, member)
    end
  end
  local n = redis.call('ZCARD', key)
  if n == 0 then
    redis.call('ZREM', prefix .. ':procs:' .. group, process)
    redis.call('SREM', prefix .. ':pgroups:' .. process, group)
  end
  return key, n
end
local function expire_nonlocal(prefix, group, cutoff)
  local key = prefix .. ':group:' .. group
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. cutoff)) do
    leave(prefix, group, member)
  end
  return key
end
""" % {
    "stat": STAT_EXPIRED,
    "global": GLOBAL_STATS_KEY,
    "channel_ttl": CHANNEL_STATS_TTL,
    "global_ttl": GLOBAL_STATS_TTL,
}

#: KEYS: list, channel count stat, channel full stat, global count stat,
#: global full stat, the inbox's count hash (any key for a normal channel).
#: ARGV: body, expiry (ms), capacity, channel stat ttl, global stat ttl, key
#: prefix, list ttl (ms), "1" to keep the channel's own counters (not for
#: single-use ``?`` channels), channel, stats prefix.  The message goes in
#: the list inline.  Returns 1, or {1, messages found expired (counted in
#: expired_count)} when there were any, or the error "full" or (a blocked
#: local channel, not counted) "blocked".
SEND = Script(
    "send",
    _NOW
    + _BUMP
    + _GROUPS
    + """
local own = ARGV[8] == '1'
local inbox = is_inbox(KEYS[1])
purge(ARGV[6], KEYS[1])
local dropped = record_expired(ARGV[10])
local queued
if inbox then
  local fields = redis.call('HMGET', KEYS[6], ARGV[9], blocked_field(ARGV[9]))
  if fields[2] then return redis.error_reply('blocked') end
  queued = tonumber(fields[1] or '0')
else
  queued = redis.call('LLEN', KEYS[1])
end
if queued >= tonumber(ARGV[3]) then
  if own then bump(KEYS[3], 1, ARGV[4], true) end
  bump(KEYS[5], 1, ARGV[5], true)
  return redis.error_reply('full')
end
local deadline = string.format('%d', NOW_MS + tonumber(ARGV[2]))
redis.call('RPUSH', KEYS[1], inline_message(deadline, inbox and ARGV[9] or '', ARGV[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if inbox then
  redis.call('HINCRBY', KEYS[6], ARGV[9], 1)
  redis.call('PEXPIRE', KEYS[6], ARGV[7])
end
if own then bump(KEYS[2], 1, ARGV[4], true) end
bump(KEYS[4], 1, ARGV[5], true)
if dropped > 0 then return {1, dropped} end
return 1
""",
)

#: Many sends in one call (the sends a process made in one reactor turn).
#: ARGV: key prefix, stats prefix, expiry (ms), list ttl (ms), channel stat
#: ttl, global stat ttl, default capacity, then per message its channel and
#: body -- and its capacity when the default capacity is empty.  A
#: channel's own counters are kept unless its name holds a ``?`` (a
#: single-use channel).  Each message gets the capacity check and inline
#: push of SEND, in order.  Returns one 1 (sent), 0 (full) or 2 (a blocked local
#: channel, not counted) per message, then, when there were any, the
#: messages found expired (counted in expired_count).
SEND_MANY = Script(
    "send_many",
    _NOW
    + _BUMP
    + _GROUPS
    + """
local prefix, sprefix = ARGV[1], ARGV[2]
local expiry, ttl = ARGV[3], ARGV[4]
local default = tonumber(ARGV[7])
local stride = default and 2 or 3
local deadline = string.format('%d', NOW_MS + tonumber(expiry))
local out = {}
local sent, full = 0, 0
-- Purged once per list (no body expires while a script runs); lists and
-- count hashes pushed to get their expiry once, and each channel's
-- counters one bump by all its messages (a batch to one channel: one
-- bump, not one per message), at the end.
local purged, pushed, counted, bumps, lengths = {}, {}, {}, {}, {}
for i = 8, #ARGV, stride do
  local channel = ARGV[i]
  local capacity = default or tonumber(ARGV[i + 2])
  local own = not string.find(channel, '?', 1, true)
  local process = process_of(channel)
  local local_name = process and process ~= channel
  local list = prefix .. (process or channel)
  if not purged[list] then
    purge(prefix, list)
    purged[list] = true
  end
  local queued
  local blocked = false
  local counts = prefix .. ':count:' .. (process or '')
  if local_name then
    local fields = redis.call('HMGET', counts, channel, blocked_field(channel))
    blocked = fields[2] ~= false
    queued = tonumber(fields[1] or '0')
  else
    -- Read once per list, then counted here: nothing else changes it
    -- while the script runs.
    queued = lengths[list]
    if not queued then
      queued = redis.call('LLEN', list)
      lengths[list] = queued
    end
  end
  if blocked then
    out[#out + 1] = 2
  elseif queued >= capacity then
    out[#out + 1] = 0
    full = full + 1
    if own then
      local key = sprefix .. channel .. ':channel_full_count'
      bumps[key] = (bumps[key] or 0) + 1
    end
  else
    if local_name then
      redis.call('RPUSH', list, inline_message(deadline, channel, ARGV[i + 1]))
      redis.call('HINCRBY', counts, channel, 1)
      counted[counts] = true
    else
      redis.call('RPUSH', list, inline_message(deadline, '', ARGV[i + 1]))
      lengths[list] = queued + 1
    end
    pushed[list] = true
    if own then
      local key = sprefix .. channel .. ':messages_count'
      bumps[key] = (bumps[key] or 0) + 1
    end
    out[#out + 1] = 1
    sent = sent + 1
  end
end
for key in pairs(pushed) do redis.call('PEXPIRE', key, ttl) end
for key in pairs(counted) do redis.call('PEXPIRE', key, ttl) end
for key, n in pairs(bumps) do bump(key, n, ARGV[5], true) end
if sent > 0 then bump(sprefix .. '#global#:messages_count', sent, ARGV[6], true) end
if full > 0 then bump(sprefix .. '#global#:channel_full_count', full, ARGV[6], true) end
local dropped = record_expired(sprefix)
if dropped > 0 then out[#out + 1] = dropped end
return out
""",
)

#: KEYS: the group's non-local zset, its process zset, global count stat,
#: global full stat.  ARGV: body, expiry (ms), group expiry (s), body key,
#: key prefix, stats prefix, default capacity, channel stat ttl, global stat
#: ttl, list ttl (ms), group, mode, then pairs.  Mode "auto": non-local
#: members come from the zset (lapsed ones removed first) and the pairs are
#: (Lua pattern, capacity), first match wins; mode "given": the pairs are
#: (member, capacity).  Non-local members with room get a reference, full
#: ones are skipped and counted; each live process with members gets one
#: group reference in its inbox.  Returns {sent, full, processes, local
#: members, messages found expired (counted in expired_count)}.
GROUP_SEND = Script(
    "group_send",
    _NOW
    + _BUMP
    + _GROUPS
    + """
local prefix = ARGV[5]
local group = ARGV[11]
local cutoff = NOW - tonumber(ARGV[3])
local members = {}
local caps = {}
if ARGV[12] == 'given' then
  for i = 13, #ARGV, 2 do
    members[#members + 1] = ARGV[i]
    caps[#caps + 1] = tonumber(ARGV[i + 1])
  end
else
  expire_nonlocal(prefix, group, cutoff)
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local expiry = tonumber(ARGV[2])
local body_key = ARGV[4]
local sent, full = 0, 0
local evicted = {}
for i, member in ipairs(members) do
  local list = prefix .. member
  for channel in pairs(purge(prefix, list)) do evicted[channel] = true end
  if not evicted[member] then
    local capacity = caps[i]
    if not capacity then
      capacity = tonumber(ARGV[7])
      for j = 13, #ARGV, 2 do
        if string.match(member, ARGV[j]) then
          capacity = tonumber(ARGV[j + 1])
          break
        end
      end
    end
    local own = not string.find(member, '?', 1, true)
    if redis.call('LLEN', list) >= capacity then
      full = full + 1
      if own then bump(ARGV[6] .. member .. ':channel_full_count', 1, ARGV[8], true) end
    else
      redis.call('RPUSH', list, body_key)
      redis.call('PEXPIRE', list, ARGV[10])
      sent = sent + 1
      if own then bump(ARGV[6] .. member .. ':messages_count', 1, ARGV[8], true) end
    end
  end
end
local processes, deliveries = 0, 0
for _, process in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local _, n = local_members(prefix, group, process, cutoff)
  if n > 0 then
    local inbox = prefix .. process
    redis.call('RPUSH', inbox, body_key .. ' #' .. group)
    redis.call('PEXPIRE', inbox, ARGV[10])
    processes = processes + 1
    deliveries = deliveries + n
  end
end
local pushes = sent + processes
if pushes > 0 then
  redis.call('SET', body_key, ARGV[1], 'PX', expiry)
  if pushes > 1 then redis.call('SET', body_key .. ':n', pushes, 'PX', expiry) end
end
if sent + deliveries > 0 then bump(KEYS[3], sent + deliveries, ARGV[9], true) end
if full > 0 then bump(KEYS[4], full, ARGV[9], true) end
return {sent, full, processes, deliveries, record_expired(ARGV[6])}
""",
)

#: KEYS: the lists to pop from, in the order to try them.  ARGV: limit, key
#: prefix, group expiry (s), stats prefix, then optionally the list and
#: element a BLPOP already took.  Pops round-robin across the lists until
#: ``limit`` messages are taken or all are empty; a reference's body is read
#: and deleted (or its read count decremented) in the same step; a message
#: that expired is skipped, counted in expired_count (a group reference once
#: per local member) and its channel evicted from its groups.  Returns a
#: flat {list, reference, body, members, ...}: for an inline message the
#: "reference" is the element without its body (" " and the body make it
#: whole again); ``members`` is "" for a direct message, else the
#: space-separated local members a group reference went to (a group
#: reference with none left is skipped); when messages were found expired,
#: their number follows last.
POP_MANY = Script(
    "pop_many",
    _NOW
    + _GROUPS
    + """
local out = {}
local n = 0
local limit = tonumber(ARGV[1])
local prefix = ARGV[2]
local cutoff = NOW - tonumber(ARGV[3])
local function take(list, ref)
  if is_inline(ref) then
    local deadline, channel, start = inline_parts(ref)
    local target = channel ~= '' and channel or string.sub(list, #prefix + 1)
    if channel ~= '' then uncount(prefix, string.sub(list, #prefix + 1), channel) end
    if deadline <= NOW_MS then
      expired(target, 1)
      evict(prefix, target)
      return
    end
    out[#out + 1] = list
    out[#out + 1] = string.sub(ref, 1, start - 2)
    out[#out + 1] = string.sub(ref, start)
    out[#out + 1] = ''
    n = n + 1
    return
  end
  local key = body_key(list, ref)
  local counter = key .. ':n'
  local target = target_of(prefix, list, ref)
  local group = string.sub(target, 1, 1) == '#'
  local process = string.sub(list, #prefix + 1)
  if is_inbox(list) and not group then uncount(prefix, process, target) end
  local body = redis.call('GET', key)
  if not body then
    redis.call('DEL', counter)
    if group then
      local zset = prefix .. ':group:' .. string.sub(target, 2) .. ':' .. process
      for _, member in ipairs(redis.call('ZRANGE', zset, 0, -1)) do expired(member, 1) end
    else
      expired(target, 1)
      evict(prefix, target)
    end
    return
  end
  local members = ''
  local skip = false
  if group then
    local zset, count = local_members(prefix, string.sub(target, 2), process, cutoff)
    if count == 0 then
      skip = true
    else
      members = table.concat(redis.call('ZRANGE', zset, 0, -1), ' ')
    end
  end
  if not skip then
    out[#out + 1] = list
    out[#out + 1] = ref
    out[#out + 1] = body
    out[#out + 1] = members
    n = n + 1
  end
  if redis.call('EXISTS', counter) == 1 and redis.call('DECR', counter) > 0 then return end
  redis.call('DEL', key, counter)
end
if ARGV[5] then take(ARGV[5], ARGV[6]) end
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
local dropped = record_expired(ARGV[4])
if dropped > 0 then out[#out + 1] = dropped end
return out
""",
)

#: Puts messages taken by POP_MANY back at the head of their lists (a
#: receive cancelled while its pop was in flight).  KEYS: the lists, one per
#: message.  ARGV: expiry (ms), list ttl (ms), key prefix, then (body key,
#: reference, body) triples, in the order they were taken; an inline
#: message goes back whole, with its deadline, as (empty, the element,
#: empty).
REQUEUE = Script(
    "requeue",
    _NOW
    + _GROUPS
    + """
local expiry = tonumber(ARGV[1])
local prefix = ARGV[3]
for i = #KEYS, 1, -1 do
  local base = 4 + (i - 1) * 3
  local list, ref = KEYS[i], ARGV[base + 1]
  if ARGV[base] ~= '' then redis.call('SET', ARGV[base], ARGV[base + 2], 'PX', expiry) end
  redis.call('LPUSH', list, ref)
  redis.call('PEXPIRE', list, ARGV[2])
  local target = target_of(prefix, list, ref)
  if is_inbox(list) and string.sub(target, 1, 1) ~= '#' then
    local counts = prefix .. ':count:' .. string.sub(list, #prefix + 1)
    redis.call('HINCRBY', counts, target, 1)
    redis.call('PEXPIRE', counts, ARGV[2])
  end
end
return #KEYS
""",
)

#: KEYS: the member's group index.  ARGV: member, group expiry (ms), group,
#: key prefix.
GROUP_ADD = Script(
    "group_add",
    _NOW
    + _GROUPS
    + """
local channel, gexp, group, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local process = process_of(channel)
redis.call('SADD', KEYS[1], group)
if process then
  local key = prefix .. ':group:' .. group .. ':' .. process
  local procs = prefix .. ':procs:' .. group
  local pgroups = prefix .. ':pgroups:' .. process
  redis.call('ZADD', key, NOW, channel)
  redis.call('ZADD', procs, NOW, process)
  redis.call('SADD', pgroups, group)
  if registered(prefix, process) then
    redis.call('PERSIST', key)
    redis.call('PERSIST', procs)
    redis.call('PERSIST', pgroups)
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIRE', key, gexp)
    redis.call('PEXPIRE', pgroups, gexp)
    redis.call('PEXPIRE', KEYS[1], gexp)
    if redis.call('PTTL', procs) ~= -1 then redis.call('PEXPIRE', procs, gexp) end
  end
else
  local key = prefix .. ':group:' .. group
  redis.call('ZADD', key, NOW, channel)
  redis.call('PEXPIRE', key, gexp)
  redis.call('PEXPIRE', KEYS[1], gexp)
end
return 1
""",
)

#: ARGV: member, group, key prefix.
GROUP_DISCARD = Script(
    "group_discard",
    _NOW
    + _GROUPS
    + """
leave(ARGV[3], ARGV[2], ARGV[1])
return 1
""",
)

#: ARGV: channel, key prefix.  The channel is gone: it leaves every group,
#: and a local channel is no longer blocked.
LEAVE_ALL = Script(
    "leave_all",
    _NOW
    + _GROUPS
    + """
evict(ARGV[2], ARGV[1])
local process = process_of(ARGV[1])
if process then
  redis.call('HDEL', ARGV[2] .. ':count:' .. process, blocked_field(ARGV[1]))
end
return 1
""",
)

#: KEYS: the process's count hash.  ARGV: local channel, "1" to block it
#: or "0" to unblock it, list ttl (ms).  A block mark expires with the
#: hash, whose expiry it refreshes.
BLOCK = Script(
    "block",
    _NOW
    + _GROUPS
    + """
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], blocked_field(ARGV[1]), '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], blocked_field(ARGV[1]))
end
return 1
""",
)

#: ARGV: group, group expiry (s), key prefix, stats prefix.  Drops lapsed
#: members, dead processes and members whose list shows an expired message
#: (counting the expired messages); returns {messages found expired, the
#: other members...} (non-local ones first).
GROUP_MEMBERS = Script(
    "group_members",
    _NOW
    + _GROUPS
    + """
local group, prefix = ARGV[1], ARGV[3]
local cutoff = NOW - tonumber(ARGV[2])
local key = expire_nonlocal(prefix, group, cutoff)
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  purge(prefix, prefix .. member)
end
local result = {0}
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do result[#result + 1] = member end
for _, process in ipairs(redis.call('ZRANGE', prefix .. ':procs:' .. group, 0, -1)) do
  local zset, n = local_members(prefix, group, process, cutoff)
  if n > 0 then
    for _, member in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
      result[#result + 1] = member
    end
  end
end
result[1] = record_expired(ARGV[4])
return result
""",
)

#: ARGV: key prefix, process prefix, heartbeat ttl (ms), "1" to register,
#: "1" to also bury dead processes.  Returns 1, or 0 when the process was
#: registered but its heartbeat is gone: Redis lost its state.
HEARTBEAT = Script(
    "heartbeat",
    _NOW
    + _GROUPS
    + """
local prefix, process, ttl = ARGV[1], ARGV[2], ARGV[3]
local alive = prefix .. ':alive:' .. process
local result = 1
if ARGV[4] == '1' then
  redis.call('SADD', prefix .. ':registered', process)
  redis.call('SET', alive, '1', 'PX', ttl)
  local pgroups = prefix .. ':pgroups:' .. process
  for _, group in ipairs(redis.call('SMEMBERS', pgroups)) do
    redis.call('PERSIST', prefix .. ':group:' .. group .. ':' .. process)
    redis.call('PERSIST', prefix .. ':procs:' .. group)
  end
  redis.call('PERSIST', pgroups)
elseif redis.call('EXISTS', alive) == 1 and registered(prefix, process) then
  redis.call('PEXPIRE', alive, ttl)
else
  result = 0
end
if ARGV[5] == '1' then
  for _, other in ipairs(redis.call('SMEMBERS', prefix .. ':registered')) do
    if redis.call('EXISTS', prefix .. ':alive:' .. other) == 0 then bury(prefix, other) end
  end
end
return result
""",
)

#: ARGV: key prefix, process prefix.  A clean stop: forget the process.
UNREGISTER = Script(
    "unregister",
    _NOW
    + _GROUPS
    + """
redis.call('DEL', ARGV[1] .. ':alive:' .. ARGV[2])
bury(ARGV[1], ARGV[2])
return 1
""",
)

#: KEYS: channel full stat, global full stat.  ARGV: count, channel stat
#: ttl, global stat ttl.  Counts messages an interface had to drop for a
#: connection whose queue overflowed.
COUNT_FULL = Script(
    "count_full",
    _NOW
    + _BUMP
    + """
bump(KEYS[1], tonumber(ARGV[1]), ARGV[2], true)
bump(KEYS[2], tonumber(ARGV[1]), ARGV[3], true)
return 1
""",
)

#: KEYS: list, channel count stat, channel full stat, the inbox's count
#: hash, channel expired stat.  ARGV: channel.  Returns {messages count,
#: channel full count, pending, PTTL of the oldest body or -2, messages in
#: the last whole second, full in the last whole second, expired count}.  Pending, for a local channel,
#: counts its direct sends waiting in the inbox.
CHANNEL_STATS = Script(
    "channel_stats",
    _NOW
    + _GROUPS
    + """
local last = ':' .. (tonumber(SEC) - 1)
local pttl = -2
local ref = redis.call('LINDEX', KEYS[1], 0)
if ref then pttl = ttl_of(KEYS[1], ref) end
local pending
if is_inbox(KEYS[1]) and string.sub(ARGV[1], -1) ~= '!' then
  pending = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
else
  pending = redis.call('LLEN', KEYS[1])
end
return {
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  tonumber(redis.call('GET', KEYS[3]) or '0'),
  pending,
  pttl,
  tonumber(redis.call('GET', KEYS[2] .. last) or '0'),
  tonumber(redis.call('GET', KEYS[3] .. last) or '0'),
  tonumber(redis.call('GET', KEYS[5]) or '0'),
}
""",
)

#: KEYS: list, the inbox's count hash.  ARGV: key prefix, channel, stats
#: prefix.  Drops expired references at the head of the list (evicting
#: their channels, counting them in expired_count); returns {the messages
#: queued for the channel, or -1 if it is blocked; messages found expired}.
ROOM = Script(
    "room",
    _NOW
    + _GROUPS
    + """
purge(ARGV[1], KEYS[1])
local dropped = record_expired(ARGV[3])
if is_inbox(KEYS[1]) then
  local fields = redis.call('HMGET', KEYS[2], ARGV[2], blocked_field(ARGV[2]))
  if fields[2] then return {-1, dropped} end
  return {tonumber(fields[1] or '0'), dropped}
end
return {redis.call('LLEN', KEYS[1]), dropped}
""",
)

#: KEYS: any keys (a SCAN batch); the lists among them are counted.
#: Returns {pending, smallest PTTL of an oldest body or -2}.
LISTS_STATS = Script(
    "lists_stats",
    _NOW
    + _GROUPS
    + """
local pending, pttl = 0, -2
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'list' then
    pending = pending + redis.call('LLEN', key)
    local ref = redis.call('LINDEX', key, 0)
    if ref then
      local left = ttl_of(key, ref)
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
    SEND_MANY,
    GROUP_SEND,
    POP_MANY,
    REQUEUE,
    GROUP_ADD,
    GROUP_DISCARD,
    LEAVE_ALL,
    GROUP_MEMBERS,
    HEARTBEAT,
    UNREGISTER,
    COUNT_FULL,
    CHANNEL_STATS,
    ROOM,
    LISTS_STATS,
    BLOCK,
)
