"""
The Lua scripts of the Redis channel layer, and the key layout they share.

Keys (``prefix`` defaults to ``asgi:``, ``stats_prefix`` to ``asgi-meta:``)::

    <prefix><hex>              message body (string), PX expiry
    <prefix><hex>:n            readers left, for a body shared by a group send
    <prefix><channel>          list of message references, PX expiry + 1 s;
                               for a process-local channel, its ``prefix!``
    <prefix>:group:<group>     zset member -> time of the last group_add,
                               on each shard holding members (see below)
    <stats_prefix><channel>:<stat>, <stats_prefix>#global#:<stat>   counters

A list element (a *reference*) is the body key; on a ``prefix!`` list it is
the body key, a space and the full ``prefix!local`` name, so the body itself
stays the same for every member of a group (one copy per shard, read-counted)
and may be encrypted.  Channel and group names are in clear in keys, as in
asgi_redis; message contents never are when encryption is on.

Every script runs atomically, so a send's capacity check and push, or a
receive's pop and body read-and-delete, cannot interleave with anything.
Times for group memberships come from the server's clock (``TIME``), so
processes with skewed clocks agree.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "CHANNEL_STATS",
    "GROUP_ADD",
    "GROUP_MEMBERS",
    "GROUP_SEND",
    "POP_MANY",
    "REQUEUE",
    "SEND",
    "Script",
    "glob_to_lua",
]


class Script:
    """A Lua script and its SHA1, for EVALSHA (with EVAL after NOSCRIPT)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.strip() + "\n"
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return "<Script %s %s>" % (self.name, self.sha[:8])


# Shared Lua helpers, prepended to the scripts that need them.
_BUMP = """
local function bump(key, by, ttl)
  redis.call('INCRBY', key, by)
  redis.call('EXPIRE', key, ttl)
end
"""

_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_BODY_KEY = """
local function body_key(list, ref)
  if string.sub(list, -1) == '!' then
    local space = string.find(ref, ' ', 1, true)
    if space then return string.sub(ref, 1, space - 1) end
  end
  return ref
end
"""

#: KEYS: body, list, channel count stat, channel full stat, global count
#: stat, global full stat.  ARGV: body, expiry (ms), capacity, reference,
#: channel stat ttl, global stat ttl.  Returns 1, or the error "full".
SEND = Script(
    "send",
    _BUMP
    + """
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  bump(KEYS[4], 1, ARGV[5])
  bump(KEYS[6], 1, ARGV[6])
  return redis.error_reply('full')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 1000)
bump(KEYS[3], 1, ARGV[5])
bump(KEYS[5], 1, ARGV[6])
return 1
""",
)

#: KEYS: group, global count stat, global full stat.  ARGV: body, expiry
#: (ms), group expiry (s), body key, key prefix, stats prefix, default
#: capacity, channel stat ttl, global stat ttl, mode, then pairs.  Mode
#: "auto": members come from the group zset (expired ones removed first) and
#: the pairs are (Lua pattern, capacity), first match wins; mode "given": the
#: pairs are (member, capacity).  Returns {sent, full}.
GROUP_SEND = Script(
    "group_send",
    _BUMP
    + _NOW
    + """
local members = {}
local caps = {}
local given = ARGV[10] == 'given'
if given then
  for i = 11, #ARGV, 2 do
    members[#members + 1] = ARGV[i]
    caps[#caps + 1] = tonumber(ARGV[i + 1])
  end
else
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now() - tonumber(ARGV[3])))
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local expiry = tonumber(ARGV[2])
local body_key = ARGV[4]
local sent, full = 0, 0
for i, member in ipairs(members) do
  local name, ref = member, body_key
  local bang = string.find(member, '!', 1, true)
  if bang then
    name = string.sub(member, 1, bang)
    ref = body_key .. ' ' .. member
  end
  local capacity = caps[i]
  if not capacity then
    capacity = tonumber(ARGV[7])
    for j = 11, #ARGV, 2 do
      if string.match(name, ARGV[j]) then
        capacity = tonumber(ARGV[j + 1])
        break
      end
    end
  end
  local list = ARGV[5] .. name
  if redis.call('LLEN', list) >= capacity then
    full = full + 1
    bump(ARGV[6] .. name .. ':channel_full_count', 1, ARGV[8])
  else
    redis.call('RPUSH', list, ref)
    redis.call('PEXPIRE', list, expiry + 1000)
    sent = sent + 1
    bump(ARGV[6] .. name .. ':messages_count', 1, ARGV[8])
  end
end
if sent > 0 then
  redis.call('SET', body_key, ARGV[1], 'PX', expiry)
  if sent > 1 then redis.call('SET', body_key .. ':n', sent, 'PX', expiry) end
  bump(KEYS[2], sent, ARGV[9])
end
if full > 0 then bump(KEYS[3], full, ARGV[9]) end
return {sent, full}
""",
)

#: KEYS: the lists to pop from, in the order to try them.  ARGV: limit,
#: then optionally the list and reference a BLPOP already took.  Pops
#: round-robin across the lists until ``limit`` messages are taken or all
#: are empty; each body is read and deleted (or its read count decremented)
#: in the same step, and a reference whose body expired is skipped.
#: Returns a flat {list, reference, body, ...}.
POP_MANY = Script(
    "pop_many",
    _BODY_KEY
    + """
local out = {}
local n = 0
local limit = tonumber(ARGV[1])
local function take(list, ref)
  local key = body_key(list, ref)
  local counter = key .. ':n'
  local body = redis.call('GET', key)
  if body and redis.call('EXISTS', counter) == 1 then
    if redis.call('DECR', counter) > 0 then
      out[#out + 1] = list; out[#out + 1] = ref; out[#out + 1] = body
      n = n + 1
      return
    end
  end
  redis.call('DEL', key, counter)
  if body then
    out[#out + 1] = list; out[#out + 1] = ref; out[#out + 1] = body
    n = n + 1
  end
end
if ARGV[2] then take(ARGV[2], ARGV[3]) end
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
#: message.  ARGV: expiry (ms), then (body key, reference, body) triples,
#: in the order they were taken.
REQUEUE = Script(
    "requeue",
    """
local expiry = tonumber(ARGV[1])
for i = #KEYS, 1, -1 do
  local base = 2 + (i - 1) * 3
  redis.call('SET', ARGV[base], ARGV[base + 2], 'PX', expiry)
  redis.call('LPUSH', KEYS[i], ARGV[base + 1])
  redis.call('PEXPIRE', KEYS[i], expiry + 1000)
end
return #KEYS
""",
)

#: KEYS: group.  ARGV: member, group expiry (ms).
GROUP_ADD = Script(
    "group_add",
    _NOW
    + """
redis.call('ZADD', KEYS[1], now(), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

#: KEYS: group.  ARGV: group expiry (s).  Drops expired members, returns
#: the others.
GROUP_MEMBERS = Script(
    "group_members",
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now() - tonumber(ARGV[1])))
return redis.call('ZRANGE', KEYS[1], 0, -1)
""",
)

#: KEYS: list, channel count stat, channel full stat.  Returns {messages
#: count, channel full count, pending, PTTL of the oldest body or -2}.
CHANNEL_STATS = Script(
    "channel_stats",
    _BODY_KEY
    + """
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
local full = tonumber(redis.call('GET', KEYS[3]) or '0')
local pending = redis.call('LLEN', KEYS[1])
local pttl = -2
local ref = redis.call('LINDEX', KEYS[1], 0)
if ref then pttl = redis.call('PTTL', body_key(KEYS[1], ref)) end
return {count, full, pending, pttl}
""",
)


_LUA_MAGIC = set("^$()%.[]*+-?")
_SAFE_SET_CHARS = re.compile(r"^[A-Za-z0-9_.!-]+$")


def glob_to_lua(glob: str) -> str | None:
    """
    An anchored Lua pattern matching what ``fnmatch`` matches for ``glob``,
    or None if the glob uses a form this translation does not cover (a
    character set with other than letters, digits, ``_``, ``.``, ``-``, or
    an unclosed ``[``); such capacities are resolved in Python instead.
    """
    out = ["^"]
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 1 if i < n and glob[i] in "!]" else i)
            if end < 0:
                return None
            content = glob[i:end]
            i = end + 1
            negate = content.startswith("!")
            if negate:
                content = content[1:]
            if not content or not _SAFE_SET_CHARS.match(content) or "!" in content:
                return None
            parts = []
            for k, ch in enumerate(content):
                if ch == "-" and 0 < k < len(content) - 1:
                    if content[k - 1] > content[k + 1]:
                        return None  # an empty range: leave it to fnmatch
                    parts.append("-")
                elif ch.isalnum():
                    parts.append(ch)
                else:
                    parts.append("%" + ch)
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        elif c in _LUA_MAGIC:
            out.append("%" + c)
        else:
            out.append(c)
    out.append("$")
    return "".join(out)
