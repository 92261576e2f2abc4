//! The Lua scripts of the Redis store: one per state change, each the exact counterpart of a
//! [`waitroom::MemoryStore`] method (read them side by side). Every script touches only the
//! keys of one room, all passed in `KEYS` and all under the room's hash tag, so a script runs
//! on the one Cluster slot that holds the room.
//!
//! Numbers that Lua computes stay below 2^53 (Lua numbers are doubles); numbers written back
//! are either `ARGV` strings, or go through `INCRBY` / `HINCRBY`, or are formatted with `%d`
//! (Lua's default number format would write large values in exponent notation).

/// Helpers shared by the scripts (prepended to each).
const PRELUDE: &str = r#"
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
local function fmt(n) return string.format('%d', n) end
local function num(v) return tonumber(v or '0') or 0 end
-- The controller state (see codec.rs): version, serving and the advance records.
local function ctl_of(raw)
  local c = { version = 0, serving = 0, history = {} }
  if not raw or raw == '' then return c end
  local f = split(raw, '|')
  if f[1] ~= 'c1' then error({ err = 'flashgate: unknown controller state format' }) end
  c.version = tonumber(f[2])
  c.serving = tonumber(f[3])
  if f[15] ~= '' then
    for _, rec in ipairs(split(f[15], ',')) do
      local p = split(rec, ':')
      c.history[#c.history + 1] = {
        at = tonumber(p[1]), sa = tonumber(p[2]), sa_key = p[2], admitted = tonumber(p[3]) }
    end
  end
  return c
end
local function since(now, at) if now > at then return now - at end return 0 end
local function touch(key, ttl) redis.call('EXPIRE', key, ttl) end
-- Decrements an active-minute bucket, removing it at zero (never below zero).
local function decrement(key, minute)
  local c = num(redis.call('HGET', key, minute))
  if c <= 1 then
    redis.call('HDEL', key, minute)
  else
    redis.call('HINCRBY', key, minute, -1)
  end
end
"#;

/// `issue`: KEYS issued; ARGV count, floor. Returns the first number, or -1 if the counter is
/// below `floor` (the store lost state: the node must re-seed before numbering anyone).
const ISSUE: &str = r#"
local cur = num(redis.call('GET', KEYS[1]))
if cur < tonumber(ARGV[2]) then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1]) - tonumber(ARGV[1]) + 1
"#;

/// `snapshot`: KEYS issued, ctl, claims, active, cmin, claimed, ovr; ARGV keep_minutes.
/// Prunes active minutes older than `keep_minutes` (by Redis `TIME`) and returns everything,
/// with `TIME`, in one consistent read.
const SNAPSHOT: &str = r#"
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local oldest = minute - tonumber(ARGV[1])
local active = redis.call('HGETALL', KEYS[4])
local kept = {}
for i = 1, #active, 2 do
  if tonumber(active[i]) < oldest then
    redis.call('HDEL', KEYS[4], active[i])
  else
    kept[#kept + 1] = active[i]; kept[#kept + 1] = active[i + 1]
  end
end
local cm = redis.call('HMGET', KEYS[5], 'm', 'n')
return { t[1], t[2], redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '',
  redis.call('HGETALL', KEYS[3]), kept, cm[1] or '0', cm[2] or '0',
  redis.call('GET', KEYS[6]) or '0', redis.call('GET', KEYS[7]) or '' }
"#;

/// `commit`: KEYS ctl, claims; ARGV expected, state (with version expected+1), then the
/// `serving_after` of every kept advance record. Compare-and-set on the version; claims of
/// records no longer kept are dropped. Returns 1 if it won.
const COMMIT: &str = r#"
local c = ctl_of(redis.call('GET', KEYS[1]))
if c.version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not keep[f] then redis.call('HDEL', KEYS[2], f) end
end
return 1
"#;

/// `claim`: KEYS issued, ctl, claims, active, entered, ended, cmin, claimed, ovr;
/// ARGV ticket, position, minute, now, claim_window_ms, max_per_minute, cap, session_minutes,
/// unlimited (0/1), ttl. Returns 0 Entered, 1 AlreadyEntered, 2 NotYet, 3 Full, 4 MinuteFull,
/// 5 Ended.
const CLAIM: &str = r#"
local ticket = tonumber(ARGV[1])
local issued = num(redis.call('GET', KEYS[1]))
if ticket == 0 or ticket > issued then return 2 end
if redis.call('GETBIT', KEYS[6], ARGV[1]) == 1 then return 5 end
if redis.call('GETBIT', KEYS[5], ARGV[1]) == 1 then return 1 end
local c = ctl_of(redis.call('GET', KEYS[2]))
local position = tonumber(ARGV[2])
local unlimited = ARGV[9] == '1'
local ttl = ARGV[10]
if not unlimited and position > c.serving then return 2 end
-- The store holds the line while paused, queue_all or sold out (flags P Q D S in the overrides).
if not unlimited then
  local ovr = redis.call('GET', KEYS[9])
  if ovr then
    local flags = string.match(ovr, '^[^|]*|[^|]*|[^|]*|([01][01][01][01])|')
    if flags and (flags:sub(1, 1) == '1' or flags:sub(2, 2) == '1' or flags:sub(4, 4) == '1') then
      return 2
    end
  end
end
local minute = ARGV[3]
local m_req = tonumber(minute)
local cm = redis.call('HMGET', KEYS[7], 'm', 'n')
local m_cur = tonumber(cm[1] or '')
local in_minute = 0
local past_minute = false
if m_cur == nil or m_req > m_cur then
  -- Only a newer minute resets the count: a claim decided before a minute boundary that lands
  -- after the next minute's claims must not wipe them.
  redis.call('HSET', KEYS[7], 'm', minute, 'n', '0')
  touch(KEYS[7], ttl)
else
  in_minute = num(cm[2])
  past_minute = m_req < m_cur
end
local reserved = nil
if not unlimited then
  -- A claim for a minute the store has left is retried in the current one.
  if past_minute or in_minute >= tonumber(ARGV[6]) then return 4 end
  local now, window = tonumber(ARGV[4]), tonumber(ARGV[5])
  -- The advance that admitted this position, if its reservation still holds.
  for _, r in ipairs(c.history) do
    if r.sa >= position then
      if r.sa - r.admitted < position and since(now, r.at) < window then
        if num(redis.call('HGET', KEYS[3], r.sa_key)) < r.admitted then reserved = r.sa_key end
      end
      break
    end
  end
  if not reserved then
    local m = tonumber(minute)
    local oldest = m - tonumber(ARGV[8])
    if oldest < 0 then oldest = 0 end
    local used = 0
    local active = redis.call('HGETALL', KEYS[4])
    for i = 1, #active, 2 do
      local am = tonumber(active[i])
      if am >= oldest and am <= m then used = used + tonumber(active[i + 1]) end
    end
    for _, r in ipairs(c.history) do
      if since(now, r.at) < window then
        local left = r.admitted - num(redis.call('HGET', KEYS[3], r.sa_key))
        if left > 0 then used = used + left end
      end
    end
    if used >= tonumber(ARGV[7]) then return 3 end
  end
end
redis.call('SETBIT', KEYS[5], ARGV[1], 1)
touch(KEYS[5], ttl)
if reserved then
  redis.call('HINCRBY', KEYS[3], reserved, 1)
  touch(KEYS[3], ttl)
end
redis.call('HINCRBY', KEYS[4], minute, 1)
touch(KEYS[4], ttl)
redis.call('HINCRBY', KEYS[7], 'n', 1)
redis.call('INCR', KEYS[8])
return 0
"#;

/// `check_in`: KEYS ended, active; ARGV ticket, from, to, ttl. Returns 1 Moved, 0 Ended.
const CHECK_IN: &str = r#"
if ARGV[1] == '0' then return 1 end
if redis.call('GETBIT', KEYS[1], ARGV[1]) == 1 then return 0 end
if ARGV[2] ~= ARGV[3] then
  decrement(KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  touch(KEYS[2], ARGV[4])
end
return 1
"#;

/// `release`: KEYS issued, entered, ended, active; ARGV ticket, minute ('' for none), ttl.
const RELEASE: &str = r#"
local ticket = tonumber(ARGV[1])
if ticket == 0 or ticket > num(redis.call('GET', KEYS[1])) then return 0 end
if redis.call('GETBIT', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('SETBIT', KEYS[3], ARGV[1], 1)
touch(KEYS[3], ARGV[3])
if ARGV[2] ~= '' and redis.call('GETBIT', KEYS[2], ARGV[1]) == 1 then
  decrement(KEYS[4], ARGV[2])
end
return 1
"#;

/// `reseed`: KEYS issued, ctl, claims, active, cmin, claimed, ovr;
/// ARGV expected_version, state ('' to leave it), issued, claimed_total, claims_minute,
/// claims_in_minute, ttl, overrides, number of claim pairs N, N pairs (serving_after, claims),
/// then pairs (minute, count). Every number is raised to at least the given one; the state is
/// replaced by compare-and-set on the version; the overrides are set only if the key is
/// absent. Returns 0 if the compare-and-set lost.
const RESEED: &str = r#"
if ARGV[2] ~= '' then
  local c = ctl_of(redis.call('GET', KEYS[2]))
  if c.version ~= tonumber(ARGV[1]) then return 0 end
  redis.call('SET', KEYS[2], ARGV[2])
end
local function raise(key, v)
  if num(redis.call('GET', key)) < tonumber(v) then redis.call('SET', key, v) end
end
raise(KEYS[1], ARGV[3])
raise(KEYS[6], ARGV[4])
local ttl = ARGV[7]
local cm = redis.call('HMGET', KEYS[5], 'm', 'n')
local m, given = num(cm[1]), tonumber(ARGV[5])
if cm[1] == false or m < given then
  redis.call('HSET', KEYS[5], 'm', ARGV[5], 'n', ARGV[6])
  touch(KEYS[5], ttl)
elseif m == given and num(cm[2]) < tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[5], 'n', ARGV[6])
end
local function hraise(key, field, v)
  if num(redis.call('HGET', key, field)) < tonumber(v) then
    redis.call('HSET', key, field, v)
    touch(key, ttl)
  end
end
redis.call('SET', KEYS[7], ARGV[8], 'NX')
local pairs_n = tonumber(ARGV[9])
local i = 10
for _ = 1, pairs_n do hraise(KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
while i < #ARGV do hraise(KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2 end
return 1
"#;

/// The scripts, ready to call (EVALSHA, with EVAL when the server's script cache is empty).
#[derive(Debug)]
pub struct Scripts {
    pub issue: redis::Script,
    pub snapshot: redis::Script,
    pub commit: redis::Script,
    pub claim: redis::Script,
    pub check_in: redis::Script,
    pub release: redis::Script,
    pub reseed: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let s = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            issue: s(ISSUE),
            snapshot: s(SNAPSHOT),
            commit: s(COMMIT),
            claim: s(CLAIM),
            check_in: s(CHECK_IN),
            release: s(RELEASE),
            reseed: s(RESEED),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
