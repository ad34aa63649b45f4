#!lua name=cdp_migrate_v1
--
-- ngx_cdp: the migration of a standalone Redis from the unsharded key
-- layout (versions before shards: <prefix>:events, <prefix>:profile:<pid>,
-- ...) to the sharded one (store/README.md, "Shards"), revision @REV@.  A
-- third library of Redis Functions beside cdp_v1 and cdp_admin_v1; nginx
-- never loads it: store/migrate.sh does, then calls cdp_migrate_step until
-- it answers done (store/README.md, "Upgrading from the unsharded
-- layout").
--
-- STANDALONE REDIS ONLY (numkeys 0: the keys are found with SCAN and
-- named from the prefix).
--
-- Each call does a bounded amount of work and writes its progress in the
-- same call, in the hash <prefix>:migration: a call is atomic, so a kill
-- of the script (or of redis-cli) between two calls loses nothing, and
-- every move is also idempotent by itself (an old key that is gone was
-- moved; an event already in its shard's stream is not added twice), so
-- a call repeated after a failure redoes nothing, and calling it again
-- after done changes nothing.
--
-- The phases, in order (field phase):
--   keys     SCAN <prefix>:* (the cursor in field cursor), and for each
--            key of the old layout (no '{' after its kind, but sent):
--              profile:<pid>, ids:<pid>, timeline:<pid>,
--              timeline_old:<pid>  -> <kind>:{<tag(pid)>}:<pid> (RENAME);
--                     the stream ids a profile's first_event, timeline
--                     and timeline_old list are written to the index
--                     <prefix>:migration:where (id -> the shard of pid)
--                     in the same call
--              idx:<type>:<h>      -> idx:{<tag(h)>}:<type>:<h> (RENAME)
--              agg:<day>           -> agg:{<tag 0>}:<day> (RENAME keeps
--                     its TTL; added into it when that exists)
--              msgids:<period>     -> msgids:{<tag i>}:<period> for EVERY
--                     shard i (the new version looks a messageId up in
--                     the shard of its message's profile, unknown here),
--                     each with the set's TTL
--              suppressed          -> suppressed:{<tag i>} for every
--                     shard i (a copy per shard, as the new version keeps
--                     it)
--              once:<worker>:<n>   deleted: these bitmaps only serve to
--                     skip a batch replayed from nginx's spool, and the
--                     new version never replays an older version's spool
--              sent:{<pid>}        -> sent:{<tag(pid)>}:<pid> (RENAME)
--              out:<NAME>, dead:<NAME>   NAME added to the set
--                     <prefix>:migration:destinations (their own phases
--                     move them), with, at the SCAN's end, the names
--                     <prefix>:destinations lists
--              segment:<NAME>      NAME added to the set
--                     <prefix>:migration:segments (phase segments moves
--                     its members: a set may have millions)
--            The other keys (audit, seq:profile, destinations, browser:*)
--            keep their names; segments:due and segments:backfill have
--            their phases (segments, finish).
--   events   the old stream <prefix>:events, in id order (XRANGE from the
--            cursor): each entry is added with its own id to the stream
--            of the shard the index names (the shard of the profile whose
--            first_event, timeline or timeline_old lists it), or of shard
--            0 when no profile lists it (an API message stored on no
--            profile), then deleted from the old stream.  Ids are added
--            in increasing order, so each shard's stream takes them.  At
--            the end the old stream's consumer groups are created on
--            every shard's stream (at the oldest entry a group still had
--            pending, else where it was) and the old stream is deleted.
--   merges   the old <prefix>:merges the same way, each entry to the
--            shard of its survivor (field "to"), as the new version
--            writes them.
--   consent  the old <prefix>:consent_log to shard 0's
--            consent_log:{<tag 0>} (a RENAME when that does not exist).
--   out      for each destination name of the set, in byte order (field
--            name: the one under way), the old out-stream
--            <prefix>:out:<NAME> the same way, each entry to
--            out:{<tag(p)>}:<NAME>, p its field p (the profile it was
--            counted on; shard 0 for an empty one, a deletion notice),
--            and its consumer groups as the events' (the group cdp of
--            nginx's deliverers delivers what it had not acknowledged
--            again).
--   dead     the old dead letters <prefix>:dead:<NAME> so too, to
--            dead:{<tag(p)>}:<NAME>; a dead letter whose shard's stream
--            has a newer id gets a new one (its id names nothing).
--   segments for each name of the set <prefix>:migration:segments, the
--            members of the old set <prefix>:segment:<NAME> (SPOP, at
--            most step a call) each to segment:{<tag(pid)>}:<NAME> in
--            the same call (into it when a new version wrote one); then
--            the old <prefix>:segments:due (ZPOPMIN) each to
--            segments:due:{<tag(pid)>} with its score (ZADD LT: the
--            earlier time when the new set has one).  A member whose
--            profile is a link (merged_into) is dropped: the new version
--            evaluates profiles, never links, so a link would stay in
--            the set for good.  An old set that is empty is gone (Redis
--            deletes it), its name taken off the set of names.
--   finish   the index is deleted (unless the old stream has entries
--            left), so are the sets of destination and segment names;
--            the segment backfill's state, old (segments:backfill) and
--            new (segments:backfill:{<tag>}), is deleted: a backfill
--            under the old name had a SCAN cursor of the old keys, and
--            one under the new name ran before this pass moved profiles
--            (a new nginx started too early): the next backfill starts
--            over and evaluates every profile (no harm done twice).
--   done     nothing more; "again" (ARGV[3]) starts another pass, for
--            keys an old nginx wrote after the first one (the counts of
--            conflicts and left are the last pass's).
--
-- SCAN's cursor is only good in the Redis process that gave it (a restart
-- seeds the key hashes anew): the run_id of the server is kept with it,
-- and a keys phase that finds another one starts its SCAN over (what it
-- moved already has a new name and is skipped).
--
-- A key whose new name exists already (a new version wrote there before
-- the migration) is not overwritten: it stays under its old name, is
-- counted as a conflict and named in the set <prefix>:migration:conflicts.
-- An event, merge, consent or out-stream entry whose shard's stream
-- already has a newer entry (the same cause) stays in the old stream,
-- counted as left.
--

local REV = '@REV@'

local WIRE_SHARDS = 16      -- the shards of a bare "<prefix>"
local MAX_SHARDS = 1024
local MAX_STEP = 100000
local CHUNK = 1000          -- arguments per variadic command
local MAX_CONFLICT_NAMES = 1000

-- the counters of <prefix>:migration, in the order of the summary
local COUNTS = {'scanned', 'profile', 'ids', 'timeline', 'timeline_old',
                'idx', 'indexed', 'agg', 'msgids', 'suppressed', 'once',
                'events', 'orphans', 'merges', 'consent_log', 'sent',
                'out', 'dead', 'groups', 'segment', 'due', 'segment_links',
                'conflicts', 'left'}

local PHASES = {'keys', 'events', 'merges', 'consent', 'out', 'dead',
                'segments', 'finish', 'done'}


-- ---------------------------------------------------------------------
-- shards: the helpers of store/shard.lua (libraries share no code: the
-- block is generated)

-- shard:begin (generated by store/wire.sh from
-- store/shard.lua: edit that, then run store/wire.sh --update)
--
-- Shards.  A profile id's shard is the CRC16 (XMODEM, Redis Cluster's) of
-- the id modulo the shards; shard i's hash tag is "{<i>.<k>}", k the
-- smallest that puts the tag's slot in the i-th part of the 16384 slots
-- (ngx_cdp_module/ngx_cdp_shard.h says why; nginx computes the same, and
-- so does tests/integration/cdp_shard.py).
--
local NSH = WIRE_SHARDS     -- the shards of this call's store
local CRC = nil             -- the CRC16 table, made at first use
local TAGS = {}             -- [shards][shard] -> "{<i>.<k>}"
local TAG_OF = {}           -- [id] -> tag, for this call's NSH

local function crc16(s)
    if not CRC then
        CRC = {}
        for i = 0, 255 do
            local c = bit.lshift(i, 8)
            for _ = 1, 8 do
                if bit.band(c, 0x8000) ~= 0 then
                    c = bit.bxor(bit.lshift(c, 1), 0x1021)
                else
                    c = bit.lshift(c, 1)
                end
                c = bit.band(c, 0xffff)
            end
            CRC[i] = c
        end
    end
    local c = 0
    for i = 1, #s do
        c = bit.bxor(bit.band(bit.lshift(c, 8), 0xffff),
                     CRC[bit.bxor(bit.rshift(c, 8), string.byte(s, i))])
    end
    return c
end

-- the hash tag of shard i of NSH, "{<i>.<k>}"
local function shard_tag(i)
    local t = TAGS[NSH]
    if not t then
        t = {}
        TAGS[NSH] = t
    end
    if not t[i] then
        local lo = math.floor(i * 16384 / NSH)
        local hi = math.floor((i + 1) * 16384 / NSH)
        local k = 0
        while true do
            local slot = crc16(i .. '.' .. k) % 16384
            if slot >= lo and slot < hi then
                break
            end
            k = k + 1
        end
        t[i] = '{' .. i .. '.' .. k .. '}'
    end
    return t[i]
end

-- the shard of a profile id (or of an identifier's h)
local function shard_of(id)
    return crc16(id) % NSH
end

-- the hash tag of the shard of a profile id (or of an identifier's h)
local function tag(id)
    local t = TAG_OF[id]
    if not t then
        t = shard_tag(crc16(id) % NSH)
        TAG_OF[id] = t
    end
    return t
end
-- shard:end


-- ---------------------------------------------------------------------
-- the call's state

local P                     -- "<prefix>:"
local STATE                 -- <prefix>:migration
local WHERE                 -- <prefix>:migration:where
local CONFLICTS             -- <prefix>:migration:conflicts
local NAMES                 -- <prefix>:migration:destinations
local SEGMENTS              -- <prefix>:migration:segments
local C = {}                -- the counters, read at the call's start

local function fail(msg)
    error({cdp_error = 'ERR cdp_migrate_step: ' .. msg})
end

local function bump(name, n)
    C[name] = (C[name] or 0) + (n or 1)
end

local function conflict(key)
    bump('conflicts')
    if redis.call('SCARD', CONFLICTS) < MAX_CONFLICT_NAMES then
        redis.call('SADD', CONFLICTS, key)
    end
end

-- a stream id as 40 digits that sort like the id (both parts padded)
local function id_key(id)
    local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
    if not ms then
        return nil
    end
    return string.rep('0', 20 - #ms) .. ms .. string.rep('0', 20 - #seq)
        .. seq
end

-- the id just before id ("5-0" -> "4-18446744073709551615"), "0-0" at
-- least: a consumer group created there delivers id and what follows
local function id_before(id)
    local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
    if not ms then
        return '0-0'
    end
    if seq ~= '0' then
        return ms .. '-' .. string.format('%.0f', tonumber(seq) - 1)
    end
    if ms == '0' then
        return '0-0'
    end
    return string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
end

-- SCAN MATCH pattern of the literal string s
local function glob_quote(s)
    return (string.gsub(s, '([%*%?%[%]\\])', '\\%1'))
end


-- ---------------------------------------------------------------------
-- keys: one key of the old layout to its new name

-- index: the stream ids of list (a Lua table) -> shard
local function index_ids(ids, shard)
    local n = #ids
    for j = 1, n, CHUNK do
        local args = {}
        for x = j, math.min(j + CHUNK - 1, n) do
            args[#args + 1] = ids[x]
            args[#args + 1] = shard
        end
        redis.call('HSET', WHERE, unpack(args))
    end
    bump('indexed', n)
end

-- a list's ids into the index, read a chunk at a time
local function index_list(key, shard)
    local len = redis.call('LLEN', key)
    for j = 0, len - 1, CHUNK do
        index_ids(redis.call('LRANGE', key, j, j + CHUNK - 1), shard)
    end
end

local WANT_TYPE = {profile = 'hash', ids = 'set', timeline = 'list',
                   timeline_old = 'list'}

-- <prefix>:<kind>:<pid> -> <prefix>:<kind>:{<tag(pid)>}:<pid>
local function move_profile_key(key, kind, pid)
    local t = redis.call('TYPE', key)['ok']
    if t == 'none' then
        return                  -- moved already (SCAN returns a key twice)
    end
    if t ~= WANT_TYPE[kind] then
        conflict(key)           -- not ours: left where it is
        return
    end
    local shard = tostring(shard_of(pid))
    if kind == 'profile' then
        local first = redis.call('HGET', key, 'first_event')
        if first then
            index_ids({first}, shard)
        end
    elseif kind ~= 'ids' then
        index_list(key, shard)
    end
    local new = P .. kind .. ':' .. shard_tag(tonumber(shard)) .. ':' .. pid
    if redis.call('EXISTS', new) == 1 then
        conflict(key)
        return
    end
    redis.call('RENAME', key, new)
    bump(kind)
end

-- a key renamed when its new name is free (gone: moved already)
local function rename(key, new, count)
    if redis.call('EXISTS', key) == 0 then
        return
    end
    if redis.call('EXISTS', new) == 1 then
        conflict(key)
        return
    end
    redis.call('RENAME', key, new)
    bump(count)
end

-- the later of two PTTLs (-1: none, which wins)
local function later_pttl(a, b)
    if a == -1 or b == -1 then
        return -1
    end
    return math.max(a, b)
end

local function set_pttl(key, pttl)
    if pttl == -1 then
        redis.call('PERSIST', key)
    elseif pttl > 0 then
        redis.call('PEXPIRE', key, pttl)
    end
end

-- agg:<day> -> agg:{<tag 0>}:<day>; into it when a new version wrote one
local function move_agg(key, day)
    if redis.call('TYPE', key)['ok'] ~= 'hash' then
        if redis.call('EXISTS', key) == 1 then
            conflict(key)
        end
        return
    end
    local new = P .. 'agg:' .. shard_tag(0) .. ':' .. day
    local t = redis.call('TYPE', new)['ok']
    if t == 'none' then
        redis.call('RENAME', key, new)          -- keeps its TTL
    elseif t == 'hash' then
        local pttl = later_pttl(redis.call('PTTL', key),
                                redis.call('PTTL', new))
        local flat = redis.call('HGETALL', key)
        for j = 1, #flat, 2 do
            if string.match(flat[j + 1], '^%-?%d+$') then
                redis.call('HINCRBY', new, flat[j], flat[j + 1])
            end
        end
        set_pttl(new, pttl)
        redis.call('DEL', key)
    else
        conflict(key)
        return
    end
    bump('agg')
end

-- a set copied into every shard's name (rest: ":<period>" or ""), each
-- copy with the old set's TTL (or its own when later), then deleted
local function spread_set(key, kind, rest, count)
    if redis.call('TYPE', key)['ok'] ~= 'set' then
        if redis.call('EXISTS', key) == 1 then
            conflict(key)
        end
        return
    end
    local pttl = redis.call('PTTL', key)
    for i = 0, NSH - 1 do
        local new = P .. kind .. ':' .. shard_tag(i) .. rest
        local t = redis.call('TYPE', new)['ok']
        if t ~= 'none' and t ~= 'set' then
            conflict(key)
            return
        end
    end
    for i = 0, NSH - 1 do
        local new = P .. kind .. ':' .. shard_tag(i) .. rest
        local had = redis.call('PTTL', new)
        redis.call('SUNIONSTORE', new, new, key)
        if had == -2 then
            set_pttl(new, pttl)
        else
            set_pttl(new, later_pttl(pttl, had))
        end
    end
    redis.call('DEL', key)
    bump(count)
end

-- the old layout's name of one key, and what becomes of it
local function migrate_key(key)
    local rest = string.sub(key, #P + 1)
    if rest == 'suppressed' then
        spread_set(key, 'suppressed', '', 'suppressed')
        return
    end
    -- sent:{<pid>}: the old name has a '{' too, and nothing after '}'
    local sent = string.match(rest, '^sent:{([^{}]+)}$')
    if sent then
        rename(key, P .. 'sent:' .. tag(sent) .. ':' .. sent, 'sent')
        return
    end
    local kind, tail = string.match(rest, '^([a-z_]+):(.*)$')
    if not kind or string.sub(tail, 1, 1) == '{' then
        return                  -- a name of the sharded layout, or other
    end
    if WANT_TYPE[kind] then
        move_profile_key(key, kind, tail)
    elseif kind == 'idx' then
        local t, h = string.match(tail, '^([a-z_]+):(.+)$')
        if t then
            rename(key, P .. 'idx:' .. tag(h) .. ':' .. t .. ':' .. h, 'idx')
        end
    elseif kind == 'agg' then
        move_agg(key, tail)
    elseif kind == 'msgids' then
        spread_set(key, 'msgids', ':' .. tail, 'msgids')
    elseif kind == 'once' then
        if redis.call('DEL', key) == 1 then
            bump('once')
        end
    elseif (kind == 'out' or kind == 'dead') and tail ~= '' then
        -- a destination's stream: its name, for the phases out and dead
        -- (an old nginx may have had destinations <prefix>:destinations
        -- does not list any more)
        redis.call('SADD', NAMES, tail)
    elseif kind == 'segment' and tail ~= '' then
        -- a segment's set: its name, for phase segments (a set may be
        -- too big to move in one call)
        if redis.call('TYPE', key)['ok'] == 'set' then
            redis.call('SADD', SEGMENTS, tail)
        elseif redis.call('EXISTS', key) == 1 then
            conflict(key)       -- not ours: left where it is
        end
    end
    -- events, merges and consent_log are streams of their own phases,
    -- segments:due and segments:backfill have theirs (segments, finish);
    -- the rest (audit, seq, destinations, browser, migration) keeps its
    -- name
end

local function step_keys(st, step)
    local page = redis.call('SCAN', st.cursor, 'MATCH',
                            glob_quote(P) .. '*', 'COUNT', step)
    for _, key in ipairs(page[2]) do
        migrate_key(key)
    end
    bump('scanned', #page[2])
    st.cursor = page[1]
    if page[1] ~= '0' then
        return false
    end
    -- the destinations nginx registered, whether SCAN saw their streams
    -- or not (it did, unless they are empty)
    local dests = P .. 'destinations'
    if redis.call('TYPE', dests)['ok'] == 'hash' then
        local names = redis.call('HKEYS', dests)
        for j = 1, #names, CHUNK do
            redis.call('SADD', NAMES, unpack(names, j,
                                            math.min(j + CHUNK - 1, #names)))
        end
    end
    return true
end


-- ---------------------------------------------------------------------
-- streams: entries moved in id order, each with its own id
--
-- A move (made by stream_move) says what becomes of one old stream:
--   src      the old stream, <prefix>:<name>
--   dst(i)   the name of shard i's stream
--   shards   function(entries): the shard of each entry (a list)
--   count    the counter of the entries moved
--   fresh    an entry that cannot keep its id (its shard's stream has a
--            newer one) is added with a new one (else it stays, "left")
--   whole    everything goes to shard 0: the stream is renamed to dst(0)
--            when that does not exist yet

-- the last id each target stream gave (XADD takes only greater ones,
-- even when that entry was deleted since), read once a call
local TOP = {}

local function top_of(key)
    local k = TOP[key]
    if not k then
        k = id_key('0-0')
        local t = redis.call('TYPE', key)['ok']
        if t == 'stream' then
            local info = redis.call('XINFO', 'STREAM', key)
            for j = 1, #info, 2 do
                if info[j] == 'last-generated-id' then
                    k = id_key(info[j + 1])
                end
            end
        elseif t ~= 'none' then
            fail(key .. ' is a ' .. t .. ', not a stream: rename it away '
                 .. 'first')
        end
        TOP[key] = k
    end
    return k
end

--
-- Moves up to step entries of the old stream m.src after the cursor,
-- each to its shard's stream.  Returns true when m.src has no entry
-- after the cursor.
--
local function move_entries(st, m, step)
    local src = m.src
    local t = redis.call('TYPE', src)['ok']
    if t == 'none' then
        return true
    end
    if t ~= 'stream' then
        fail(src .. ' is a ' .. t .. ', not a stream: rename it away first')
    end
    local from = st.cursor == '' and '-' or '(' .. st.cursor
    local entries = redis.call('XRANGE', src, from, '+', 'COUNT', step)
    if #entries == 0 then
        return true
    end
    local shards = m.shards(entries)
    local done = {}
    for i, e in ipairs(entries) do
        local id, dst = e[1], m.dst(shards[i])
        local k = id_key(id)
        if k > top_of(dst) then
            redis.call('XADD', dst, id, unpack(e[2]))
            TOP[dst] = k
            done[#done + 1] = id
            bump(m.count)
        elseif #redis.call('XRANGE', dst, id, id) == 1 then
            done[#done + 1] = id        -- there already
        elseif m.fresh then
            TOP[dst] = id_key(redis.call('XADD', dst, '*', unpack(e[2])))
            done[#done + 1] = id
            bump(m.count)
        else
            bump('left')                -- dst has newer entries: stays
        end
    end
    for j = 1, #done, CHUNK do
        redis.call('XDEL', src, unpack(done, j, math.min(j + CHUNK - 1,
                                                        #done)))
    end
    st.cursor = entries[#entries][1]
    return false
end

-- the old stream's consumer groups on every shard's stream
local function copy_groups(m)
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', m.src)) do
        local name, at, pending
        for j = 1, #g, 2 do
            if g[j] == 'name' then
                name = g[j + 1]
            elseif g[j] == 'last-delivered-id' then
                at = g[j + 1]
            elseif g[j] == 'pending' then
                pending = g[j + 1]
            end
        end
        if name then
            if pending and pending > 0 then
                -- delivered, not acknowledged: delivered again
                local p = redis.call('XPENDING', m.src, name)
                if p[2] then
                    at = id_before(p[2])
                end
            end
            for i = 0, NSH - 1 do
                local r = redis.pcall('XGROUP', 'CREATE', m.dst(i), name, at,
                                      'MKSTREAM')
                if type(r) == 'table' and r.err
                   and not string.find(r.err, 'BUSYGROUP', 1, true) then
                    fail('XGROUP CREATE ' .. name .. ': ' .. r.err)
                end
            end
            bump('groups')
        end
    end
end

-- the end of an old stream: its groups copied, then deleted when empty
local function finish_stream(m)
    if redis.call('EXISTS', m.src) == 0 then
        return
    end
    copy_groups(m)
    if redis.call('XLEN', m.src) == 0 then
        redis.call('DEL', m.src)
    end
end

-- events: to the shard the index names, shard 0 when none does
local function event_shards(entries)
    local ids = {}
    for i, e in ipairs(entries) do
        ids[i] = e[1]
    end
    local out = {}
    for j = 1, #ids, CHUNK do
        local last = math.min(j + CHUNK - 1, #ids)
        local shards = redis.call('HMGET', WHERE, unpack(ids, j, last))
        for x = j, last do
            local s = tonumber(shards[x - j + 1])
            if not s or s >= NSH then
                s = 0
                bump('orphans')
            end
            out[x] = s
        end
    end
    return out
end

-- to the shard of the profile id in field name of each entry, shard 0
-- when it has none (or an empty one)
local function by_field(name)
    return function(entries)
        local out, seen = {}, {[''] = 0}
        for i, e in ipairs(entries) do
            local v = ''
            for j = 1, #e[2], 2 do
                if e[2][j] == name then
                    v = e[2][j + 1]
                end
            end
            local s = seen[v]
            if not s then
                s = shard_of(v)
                seen[v] = s
            end
            out[i] = s
        end
        return out
    end
end

local function shard0(entries)
    local out = {}
    for i = 1, #entries do
        out[i] = 0
    end
    return out
end

-- the function naming shard i's stream <prefix>:<kind>:{<tag i>}<rest>
local function sharded(kind, rest)
    return function(i)
        return P .. kind .. ':' .. shard_tag(i) .. (rest or '')
    end
end

-- the move of a phase's old stream (of destination name: out, dead)
local function stream_move(phase, name)
    if phase == 'events' then
        return {src = P .. 'events', dst = sharded('events'),
                shards = event_shards, count = 'events'}
    elseif phase == 'merges' then
        -- the survivor's shard (field "to"), as the new version writes them
        return {src = P .. 'merges', dst = sharded('merges'),
                shards = by_field('to'), count = 'merges'}
    elseif phase == 'consent' then
        return {src = P .. 'consent_log', dst = sharded('consent_log'),
                shards = shard0, count = 'consent_log', whole = true}
    end
    -- out, dead: the shard of the profile the entry names (p), shard 0
    -- for a deletion notice (no profile)
    return {src = P .. phase .. ':' .. name,
            dst = sharded(phase, ':' .. name), shards = by_field('p'),
            count = phase, fresh = (phase == 'dead')}
end

-- a step of a move: true when the old stream is done with
local function step_stream(st, step, m)
    if m.whole and st.cursor == ''
       and redis.call('TYPE', m.src)['ok'] == 'stream'
       and redis.call('EXISTS', m.dst(0)) == 0
    then
        -- nothing to merge with: the whole stream (and its groups)
        redis.call('RENAME', m.src, m.dst(0))
        bump(m.count, redis.call('XLEN', m.dst(0)))
        return true
    end
    if move_entries(st, m, step) then
        finish_stream(m)
        return true
    end
    return false
end

-- the first destination name after name ('': the first), or nil
local function next_name(name)
    local best
    for _, x in ipairs(redis.call('SMEMBERS', NAMES)) do
        if x > name and (not best or x < best) then
            best = x
        end
    end
    return best
end

-- a step of phase out or dead: the stream of the name under way (st.name),
-- then of the next; true when all are done with
local function step_destinations(st, step, phase)
    if st.name == '' then
        local first = next_name('')
        if not first then
            return true
        end
        st.name = first
    end
    if step_stream(st, step, stream_move(phase, st.name)) then
        local nxt = next_name(st.name)
        if not nxt then
            return true
        end
        st.name, st.cursor = nxt, ''
    end
    return false
end


-- ---------------------------------------------------------------------
-- segments: the members of the old sets, each to its shard's

-- a link (a merged profile) holds no membership: the new version
-- evaluates profiles, not links, so one moved would never leave (shard:
-- pid's, known already: the CRC16 is most of this phase's time)
local function is_link(pid, shard)
    return redis.call('HEXISTS', P .. 'profile:' .. shard_tag(shard) .. ':'
                      .. pid, 'merged_into') == 1
end

-- every shard's key (name_of(i)) is free or of type want: the members
-- can go there (else SADD or ZADD would fail the call half done)
local function shard_keys_free(name_of, want)
    for i = 0, NSH - 1 do
        local t = redis.call('TYPE', name_of(i))['ok']
        if t ~= 'none' and t ~= want then
            return false
        end
    end
    return true
end

--
-- Members (and, for a zset, their scores: a list beside, else nil) added
-- to their shards' keys name_of(shard), CHUNK at a time; links dropped.
--
local function spread_members(members, scores, name_of, count)
    local by = {}                       -- [shard] -> arguments
    local function flush(s)
        local args = by[s]
        if scores then
            -- the earlier time wins: a rule evaluated early only sets its
            -- next time, one evaluated late has missed a flip
            redis.call('ZADD', name_of(s), 'LT', unpack(args))
        else
            redis.call('SADD', name_of(s), unpack(args))
        end
        by[s] = nil
    end
    for j, pid in ipairs(members) do
        local s = shard_of(pid)
        if is_link(pid, s) then
            bump('segment_links')
        else
            local args = by[s]
            if not args then
                args = {}
                by[s] = args
            end
            if scores then
                args[#args + 1] = scores[j]
            end
            args[#args + 1] = pid
            if #args >= CHUNK then
                flush(s)
            end
            bump(count)
        end
    end
    for s in pairs(by) do
        flush(s)
    end
end

-- up to step members of the set <prefix>:segment:<name>; the number
-- taken, and whether the set is done with (gone, or not movable)
local function move_segment(name, step)
    local key = P .. 'segment:' .. name
    local function dst(i)
        return P .. 'segment:' .. shard_tag(i) .. ':' .. name
    end
    local t = redis.call('TYPE', key)['ok']
    if t == 'none' then
        return 0, true                  -- moved already
    end
    if t ~= 'set' or not shard_keys_free(dst, 'set') then
        conflict(key)                   -- left where it is
        return 0, true
    end
    -- SPOP takes them out in the call that adds them: a call is atomic,
    -- so each member moves once, whenever the run stops
    local members = redis.call('SPOP', key, step)
    spread_members(members, nil, dst, 'segment')
    return #members, redis.call('EXISTS', key) == 0
end

-- up to step entries of the old <prefix>:segments:due; true when done
local function move_due(step)
    local key = P .. 'segments:due'
    local function dst(i)
        return P .. 'segments:due:' .. shard_tag(i)
    end
    local t = redis.call('TYPE', key)['ok']
    if t == 'none' then
        return true
    end
    if t ~= 'zset' or not shard_keys_free(dst, 'zset') then
        conflict(key)
        return true
    end
    local flat = redis.call('ZPOPMIN', key, step)
    local members, scores = {}, {}
    for j = 1, #flat, 2 do
        members[#members + 1] = flat[j]
        scores[#scores + 1] = flat[j + 1]
    end
    spread_members(members, scores, dst, 'due')
    return redis.call('EXISTS', key) == 0
end

-- a step of phase segments: at most step members of the old sets (of any
-- names: many small segments take one call), then of the due set; true
-- when all are done with
local function step_segments(st, step)
    local left = step
    while left > 0 do
        local name = redis.call('SRANDMEMBER', SEGMENTS)
        if not name then
            st.name = ''
            return move_due(left)
        end
        st.name = name
        local n, over = move_segment(name, left)
        if over then
            redis.call('SREM', SEGMENTS, name)
        end
        -- a name found gone or in conflict counts one: bounded anyway
        left = left - math.max(n, 1)
    end
    return false
end


-- ---------------------------------------------------------------------
-- finish

local function step_finish()
    -- kept while the old stream has entries left (another pass uses it)
    if redis.call('EXISTS', P .. 'events') == 0 then
        redis.call('UNLINK', WHERE)
    end
    -- the next pass's SCAN finds the old out-streams with entries left,
    -- and the old segment sets
    redis.call('UNLINK', NAMES, SEGMENTS)
    -- the backfill's state: the old one had a SCAN cursor of the old
    -- names, a new one (a new nginx started too early) scanned before
    -- this pass moved the profiles; without one the next backfill starts
    -- over (one more evaluation of every profile, no harm)
    local bf = {P .. 'segments:backfill'}
    for i = 0, NSH - 1 do
        bf[#bf + 1] = P .. 'segments:backfill:' .. shard_tag(i)
    end
    for j = 1, #bf, CHUNK do
        redis.call('UNLINK', unpack(bf, j, math.min(j + CHUNK - 1, #bf)))
    end
    return true
end


-- ---------------------------------------------------------------------
-- the function

local function use_prefix(arg)
    if type(arg) ~= 'string' then
        return nil
    end
    local p, n = string.match(arg, '^(.*)|([0-9]+)$')
    if p then
        n = #n <= 4 and tonumber(n)
        if not n or n < 1 or n > MAX_SHARDS then
            return nil
        end
    else
        p, n = arg, WIRE_SHARDS
    end
    if #p < 1 or #p > 128 or string.find(p, '[%s{}]') then
        return nil
    end
    NSH = n
    TAG_OF = {}
    return p
end

local function summary(st)
    local t = {'pass=' .. st.pass, 'steps=' .. st.steps}
    for _, name in ipairs(COUNTS) do
        t[#t + 1] = name .. '=' .. (C[name] or 0)
    end
    return table.concat(t, ' ')
end

--
-- cdp_migrate_step: one bounded step of the migration.
--   KEYS: none
--   ARGV[1]  "<prefix>" (16 shards) or "<prefix>|<N>": the prefix and
--            shards of the nginx that will use the store
--   ARGV[2]  the step: keys a SCAN visits, or stream entries or segment
--            members moved (1 to 100000; default 1000); a call ends at
--            the end of a stream
--   ARGV[3]  optional "again": when the migration is done, another pass
--   reply: {done (0 or 1), the phase now, "pass=.. steps=.. scanned=..
--          profile=.. ...": the counters since the first call}
--   errors: "ERR cdp_migrate_step: ..." (bad arguments, a migration
--           started with other shards, a stream's name held by a key of
--           another type); the progress is not written then, and what
--           the call moved before the error the next one finds done
--
local function cdp_migrate_step(keys, args)
    if #keys ~= 0 then
        fail('want 0 keys')
    end
    local prefix = use_prefix(args[1])
    if not prefix then
        fail('bad prefix (1 to 128 bytes, no spaces or braces, then '
             .. 'optionally |<shards>, 1 to ' .. MAX_SHARDS .. ')')
    end
    local step = tonumber(args[2] or '1000')
    if not step or step < 1 or step > MAX_STEP or step % 1 ~= 0 then
        fail('bad step (1 to ' .. MAX_STEP .. ')')
    end
    local again = args[3] == 'again'
    if args[3] and not again then
        fail('ARGV[3] is "again" or nothing')
    end

    P = prefix .. ':'
    STATE = P .. 'migration'
    WHERE = STATE .. ':where'
    CONFLICTS = STATE .. ':conflicts'
    NAMES = STATE .. ':destinations'
    SEGMENTS = STATE .. ':segments'
    TOP = {}
    C = {}

    local t = redis.call('TYPE', STATE)['ok']
    if t ~= 'none' and t ~= 'hash' then
        fail(STATE .. ' is a ' .. t .. ', not the migration\'s hash')
    end
    local h = redis.call('HGETALL', STATE)
    local v = {}
    for j = 1, #h, 2 do
        v[h[j]] = h[j + 1]
    end
    if v.shards and tonumber(v.shards) ~= NSH then
        fail('this migration was started with ' .. v.shards
             .. ' shards, not ' .. NSH)
    end
    for _, name in ipairs(COUNTS) do
        C[name] = tonumber(v[name]) or 0
    end
    local now = redis.call('TIME')
    local now_ms = string.format('%.0f', tonumber(now[1]) * 1000
                                         + math.floor(tonumber(now[2]) / 1000))
    local run_id = string.match(redis.call('INFO', 'server'),
                                'run_id:(%x+)') or ''
    local st = {phase = v.phase or 'keys', cursor = v.cursor or '0',
                name = v.name or '',
                pass = tonumber(v.pass) or 1,
                steps = tonumber(v.steps) or 0}
    if st.phase == 'keys' and v.run_id and v.run_id ~= run_id then
        st.cursor = '0'         -- another process: its own hash seed
    end
    if not v.phase then
        redis.call('HSET', STATE, 'version', '1', 'revision', REV,
                   'prefix', prefix, 'shards', NSH, 'started_ms', now_ms)
    end

    if st.phase == 'done' then
        if not again then
            return {1, 'done', summary(st)}
        end
        st.phase, st.cursor, st.pass = 'keys', '0', st.pass + 1
        C.conflicts, C.left = 0, 0
        redis.call('HDEL', STATE, 'finished_ms')
        redis.call('DEL', CONFLICTS)
    end

    st.steps = st.steps + 1
    local finished
    if st.phase == 'keys' then
        finished = step_keys(st, step)
    elseif st.phase == 'events' or st.phase == 'merges'
           or st.phase == 'consent' then
        finished = step_stream(st, step, stream_move(st.phase))
    elseif st.phase == 'out' or st.phase == 'dead' then
        finished = step_destinations(st, step, st.phase)
    elseif st.phase == 'segments' then
        finished = step_segments(st, step)
    elseif st.phase == 'finish' then
        finished = step_finish()
    else
        fail('unknown phase in ' .. STATE)
    end

    if finished then
        for i, name in ipairs(PHASES) do
            if name == st.phase then
                st.phase = PHASES[i + 1]
                break
            end
        end
        -- the streams' cursor is the last id moved; SCAN's starts at 0
        st.cursor = (st.phase == 'keys') and '0' or ''
        st.name = ''
    end

    local out = {'phase', st.phase, 'cursor', st.cursor, 'name', st.name,
                 'pass', st.pass, 'steps', st.steps, 'run_id', run_id}
    for _, name in ipairs(COUNTS) do
        out[#out + 1] = name
        out[#out + 1] = C[name]
    end
    if st.phase == 'done' then
        out[#out + 1] = 'finished_ms'
        out[#out + 1] = now_ms
    end
    redis.call('HSET', STATE, unpack(out))

    return {st.phase == 'done' and 1 or 0, st.phase, summary(st)}
end

local function guarded(body)
    return function(keys, args)
        local ok, res = pcall(body, keys, args)
        if ok then
            return res
        end
        if type(res) == 'table' and res.cdp_error then
            return redis.error_reply(res.cdp_error)
        end
        error(res, 0)
    end
end

local function cdp_migrate_version(keys, args)
    return REV
end

redis.register_function{function_name = 'cdp_migrate_step',
                        callback = guarded(cdp_migrate_step)}
redis.register_function{function_name = 'cdp_migrate_version',
                        callback = cdp_migrate_version,
                        flags = {'no-writes'}}
