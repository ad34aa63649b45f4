#!lua name=cdp_v1
--
-- ngx_cdp: the Redis side. One library of Redis Functions, loaded by the
-- module on connect when missing or older (revision @REV@), or by hand
-- with store/load.sh. Key layout and rules: store/README.md.
--
-- Identity spans keys that nginx cannot name in advance (the profile an
-- e-mail address belongs to, the profiles a merge absorbs): the functions
-- derive them from the prefix of KEYS[1], so this library needs a
-- standalone Redis (not Redis Cluster).
--

local REV = '@REV@'

local TYPES = {'user_id', 'email', 'phone'}      -- by priority
local MAX_HOPS = 64
local AGG_RETENTION = 25 * 30 * 86400   -- agg:<date>, unless ARGV[1] says
-- batch ids (cdp_ingest): a bitmap key per 2^20 batches of a writer, kept
-- a week after its last batch, the longest a spooled batch is expected to
-- wait for its replay
local ONCE_BITS = 1048576
local ONCE_SECONDS = 7 * 86400

--
-- cdp_version
--   KEYS: none   ARGV: none
--   reply: the revision string of the loaded library
--
local function cdp_version(keys, args)
    return REV
end


-- the state of one cdp_ingest call

local P                 -- "<prefix>:"
local STREAM
local MAXLEN
local LIMIT = {}        -- per identifier type
local TL_MAX, TL_SLACK
local DEDUP             -- seconds a messageId is remembered
local SUPPRESSED        -- the suppression set is not empty
local DEST              -- the destinations of this call, or nil
local FACTS             -- the per-event facts kept, or nil
local SEGS              -- the segments, or nil
local SEGS_VERSION      -- SHA1 of their definitions
local NOW               -- ms, Redis's clock, for the segments' rules
local NOW_ISO           -- the same in ISO 8601, made when first needed
local MERGED            -- profiles a merge changed in this call
local stats
-- redis.call, for the per-event paths: an upvalue is one VM instruction
-- where "redis.call" is two table lookups (it is not there at load time)
local call


local function pkey(pid)
    return P .. 'profile:' .. pid
end

local function aidh(aid)
    return redis.sha1hex('anonymous_id:' .. aid)
end


--
-- The record fields that attrs adds, as a flat list of field/value pairs
-- for unpack(), and the touch (first and last touch attribution) fields:
-- attrs is "country TAB region TAB city TAB consent" (any part may be
-- empty), optionally followed by "TAB utm_source TAB utm_medium TAB
-- utm_campaign TAB utm_term TAB utm_content TAB referrer" for an event
-- that carries a campaign or an external referrer; or "".  Batches repeat
-- the same few attrs, so each is parsed once per call (cache).
--
local TOUCH = {'utm_source', 'utm_medium', 'utm_campaign', 'utm_term',
               'utm_content', 'referrer'}

local function attr_pairs(cache, attrs)
    local t = cache[attrs]
    if t then
        return t
    end

    t = {pairs = {}}

    if attrs ~= '' then
        local parts = {}
        for part in string.gmatch(attrs .. '\t', '([^\t]*)\t') do
            parts[#parts + 1] = part
        end

        local names = {'country', 'region', 'city', 'consent'}
        for i = 1, 4 do
            if parts[i] and parts[i] ~= '' then
                t.pairs[#t.pairs + 1] = names[i]
                t.pairs[#t.pairs + 1] = parts[i]
            end
        end

        if #parts >= 10 then
            t.touch = {}
            for i = 1, 6 do
                t.touch[i] = parts[4 + i]
            end
        end
    end

    cache[attrs] = t
    return t
end


-- the profile's first and last touch, from an event with a touch (fresh:
-- the profile was created by this event).  A browser's hits can arrive out
-- of order (two workers, two batches): the hits' times decide which touch
-- is first and which last, not the order they are counted in.
local function write_touch(pk, which, ts, touch)
    local set = {which .. '_touch_at', ts}

    for i = 1, 6 do
        set[#set + 1] = which .. '_' .. TOUCH[i]
        set[#set + 1] = touch[i]
    end
    call('HSET', pk, unpack(set))
end

local function set_touch(pk, ts, touch, fresh)
    local t = tonumber(ts)
    local cur = {false, false}

    if not fresh then
        cur = call('HMGET', pk, 'first_touch_at', 'last_touch_at')
    end

    if cur[1] == false or t < tonumber(cur[1]) then
        write_touch(pk, 'first', ts, touch)
    end
    if cur[2] == false or t >= tonumber(cur[2]) then
        write_touch(pk, 'last', ts, touch)
    end
end


-- stream ids "<ms>-<seq>" newest first
local function id_newer(a, b)
    local am, as = string.match(a, '^(%d+)-(%d+)$')
    local bm, bs = string.match(b, '^(%d+)-(%d+)$')
    am, bm = tonumber(am) or 0, tonumber(bm) or 0
    if am ~= bm then
        return am > bm
    end
    return (tonumber(as) or 0) > (tonumber(bs) or 0)
end


local function push_chunks(cmd, key, list, from, to)
    local i = from
    while i <= to do
        local j = math.min(i + 999, to)
        redis.call(cmd, key, unpack(list, i, j))
        i = j + 1
    end
end


--
-- The ids a profile's timeline drops (newest first), appended to its
-- archive <prefix>:timeline_old:<pid> oldest first: an erasure or an
-- export still finds every event the stream has.  The archive's head is
-- cut while it is older than the stream's first entry (events gone with
-- the stream's own trimming); ids a merge appends may be older than the
-- tail, which only delays that.
--
local function archive(pid, ids)
    if #ids == 0 then
        return
    end

    local ak = P .. 'timeline_old:' .. pid
    local old = {}
    for k = #ids, 1, -1 do
        old[#old + 1] = ids[k]
    end
    push_chunks('RPUSH', ak, old, 1, #old)

    local first = redis.call('XRANGE', STREAM, '-', '+', 'COUNT', 1)[1]
    if first then
        local head = redis.call('LRANGE', ak, 0, 999)
        local n = 0
        while n < #head and id_newer(first[1], head[n + 1]) do
            n = n + 1
        end
        if n > 0 then
            redis.call('LTRIM', ak, n, -1)
        end
    end
end


-- appends a stream entry id to the profile's timeline, trimmed lazily
local function timeline_push(pid, id)
    local tk = P .. 'timeline:' .. pid
    if call('LPUSH', tk, id) > TL_MAX + TL_SLACK then
        archive(pid, call('LRANGE', tk, TL_MAX, -1))
        call('LTRIM', tk, 0, TL_MAX - 1)
    end
end


--
-- The live profile id that x (an anonymous id or a profile id) resolves
-- to, following links; nil when profile:<x> does not exist.
--
local function resolve(x)
    for _ = 1, MAX_HOPS do
        local v = redis.call('HMGET', pkey(x), 'merged_into', 'events')
        if v[1] then
            x = v[1]
        elseif v[2] then
            return x
        else
            return nil
        end
    end

    error('ERR cdp: a profile link chain longer than ' .. MAX_HOPS
          .. ' from ' .. x)
end


local function idx_owner(t, h)
    local pid = redis.call('GET', P .. 'idx:' .. t .. ':' .. h)
    if pid then
        return resolve(pid)
    end
    return nil
end


local function merges_log(from, to, reason, t, id, ts)
    redis.call('XADD', P .. 'merges', 'MAXLEN', '~', MAXLEN, '*',
               'from', from, 'to', to, 'reason', reason, 'type', t,
               'id', id, 'at', ts)
end


local function new_profile(ts)
    local pid = 'p' .. redis.call('INCR', P .. 'seq:profile')
    redis.call('HSET', pkey(pid), 'events', '0', 'page_views', '0',
               'first_seen', ts, 'last_seen', ts)
    return pid
end


-- the identifiers of a profile by type: {user_id = {m...}, ...}
local function ids_by_type(pid)
    local out = {user_id = {}, email = {}, phone = {}}
    if pid == nil then
        return out
    end
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'ids:' .. pid)) do
        local t = string.match(m, '^([a-z_]+):')
        if out[t] then
            out[t][m] = true
        end
    end
    return out
end


local function count(set)
    local n = 0
    for _ in pairs(set) do
        n = n + 1
    end
    return n
end


-- may the profiles a and b become one without breaking a limit?
local function mergeable(a, b)
    local ia, ib = ids_by_type(a), ids_by_type(b)
    for _, t in ipairs(TYPES) do
        local u = {}
        for m in pairs(ia[t]) do u[m] = true end
        for m in pairs(ib[t]) do u[m] = true end
        if count(u) > LIMIT[t] then
            return false
        end
    end
    return true
end


local function hash_table(flat)
    local t = {}
    for i = 1, #flat, 2 do
        t[flat[i]] = flat[i + 1]
    end
    return t
end


local function timeline_merge(s, l, extra)
    local sk, lk = P .. 'timeline:' .. s, P .. 'timeline:' .. l
    local b = redis.call('LRANGE', lk, 0, -1)

    if extra then
        -- the first_event that is no longer first: older than b's
        -- entries when it was l's, anywhere when it was s's
        b[#b + 1] = extra
        table.sort(b, id_newer)
    end

    if #b == 0 then
        return
    end

    local a = redis.call('LRANGE', sk, 0, -1)

    -- the newest TL_MAX stay, the others go to s's archive
    local out, dropped, i, j = {}, {}, 1, 1

    while i <= #a or j <= #b do
        local id
        if j > #b or (i <= #a and id_newer(a[i], b[j])) then
            id = a[i]
            i = i + 1
        else
            id = b[j]
            j = j + 1
        end
        if #out < TL_MAX then
            out[#out + 1] = id
        else
            dropped[#dropped + 1] = id
        end
    end

    redis.call('DEL', sk, lk)
    push_chunks('RPUSH', sk, out, 1, #out)
    archive(s, dropped)
end


--
-- Merges profile l into profile s: l's identifiers, counters, traits,
-- attribution and timeline go to s; profile:<l> becomes a link to s.
--
local function merge(s, l, reason, t, id, ts)
    if s == l then
        return
    end

    local sk, lk = pkey(s), pkey(l)
    local S = hash_table(redis.call('HGETALL', sk))
    local L = hash_table(redis.call('HGETALL', lk))
    local set = {}

    local sf, lf = tonumber(S.first_seen) or 0, tonumber(L.first_seen) or 0
    local sl, ll = tonumber(S.last_seen) or 0, tonumber(L.last_seen) or 0

    set[#set + 1] = 'events'
    set[#set + 1] = tostring((tonumber(S.events) or 0)
                             + (tonumber(L.events) or 0))
    set[#set + 1] = 'page_views'
    set[#set + 1] = tostring((tonumber(S.page_views) or 0)
                             + (tonumber(L.page_views) or 0))

    if L.first_seen and (not S.first_seen or lf < sf) then
        set[#set + 1] = 'first_seen'
        set[#set + 1] = L.first_seen
    end

    local l_newer = L.last_seen and (not S.last_seen or ll > sl)

    if l_newer then
        set[#set + 1] = 'last_seen'
        set[#set + 1] = L.last_seen
    end

    -- first touch from the profile touched first, last touch from the
    -- one touched last
    local l_first = L.first_touch_at
                    and (not S.first_touch_at
                         or tonumber(L.first_touch_at)
                            < tonumber(S.first_touch_at))
    local l_last = L.last_touch_at
                   and (not S.last_touch_at
                        or tonumber(L.last_touch_at)
                           > tonumber(S.last_touch_at))

    local l_traits = (tonumber(L.traits_at) or 0)
                     > (tonumber(S.traits_at) or 0)

    for f, v in pairs(L) do
        local take = false

        if f == 'first_event' then
            take = false
        elseif string.sub(f, 1, 6) == 'first_' and f ~= 'first_seen' then
            take = l_first
        elseif string.sub(f, 1, 5) == 'last_' and f ~= 'last_seen' then
            take = l_last
        elseif string.sub(f, 1, 6) == 'trait.' or f == 'traits_at' then
            take = l_traits or S[f] == nil
        elseif f == 'country' or f == 'region' or f == 'city'
               or f == 'consent'
        then
            take = l_newer or S[f] == nil
        elseif f == 'user_id' then
            take = S[f] == nil
        elseif string.sub(f, 1, 3) == 'ev.' then
            -- the event facts of both: counts and sums add up, the
            -- earliest first and the latest last stay
            local a, b = tonumber(S[f]), tonumber(v)
            local kind = string.match(f, '^ev%.(%a+):')
            if a and b then
                if kind == 'first' then
                    v = tostring(math.min(a, b) == a and S[f] or v)
                elseif kind == 'last' then
                    v = (a >= b) and S[f] or v
                else
                    v = tostring(a + b)
                end
            end
            take = true
        end

        if take then
            set[#set + 1] = f
            set[#set + 1] = v
        end
    end

    -- the oldest event of both stays first_event, the other joins the list
    local extra = nil
    if L.first_event then
        if not S.first_event or id_newer(S.first_event, L.first_event) then
            set[#set + 1] = 'first_event'
            set[#set + 1] = L.first_event
            extra = S.first_event
        else
            extra = L.first_event
        end
    end

    redis.call('HSET', sk, unpack(set))

    -- identifiers: the index and the links now point at s

    local sids = P .. 'ids:' .. s
    local members = redis.call('SMEMBERS', P .. 'ids:' .. l)

    for _, m in ipairs(members) do
        local mt, mv = string.match(m, '^([a-z_]+):(.*)$')
        if mt == 'anonymous_id' or mt == 'profile_id' then
            redis.call('HSET', pkey(mv), 'merged_into', s, 'at', ts)
        elseif mt then
            redis.call('SET', P .. 'idx:' .. mt .. ':' .. mv, s)
        end
    end

    if #members > 0 then
        push_chunks('SADD', sids, members, 1, #members)
        redis.call('SADD', sids, 'profile_id:' .. l)
    else
        -- an anonymous profile: its id is the browser's
        redis.call('SADD', sids, 'anonymous_id:' .. l)
    end

    timeline_merge(s, l, extra)

    redis.call('DEL', lk, P .. 'ids:' .. l)
    redis.call('HSET', lk, 'merged_into', s, 'at', ts)

    -- l leaves every segment it was in; s is evaluated again (whole)
    for name in string.gmatch(L.segments or '', '[^,]+') do
        redis.call('SREM', P .. 'segment:' .. name, l)
    end
    if L.segments then
        redis.call('ZREM', P .. 'segments:due', l)
    end
    if MERGED then
        MERGED[s] = true
    end

    merges_log(l, s, reason, t, id, ts)
    stats.merges = stats.merges + 1
end


-- traits JSON object -> profile fields trait.<name>
local function traits_pairs(json, ts)
    local ok, obj = pcall(cjson.decode, json)
    local out = {}

    if not ok or type(obj) ~= 'table' then
        return out
    end

    for k, v in pairs(obj) do
        if type(k) == 'string' and k ~= '' then
            local tv = type(v)
            if tv == 'string' then
                out[#out + 1] = 'trait.' .. k
                out[#out + 1] = v
            elseif tv == 'number' or tv == 'boolean' then
                out[#out + 1] = 'trait.' .. k
                out[#out + 1] = tostring(v)
            elseif tv == 'table' then
                out[#out + 1] = 'trait.' .. k
                out[#out + 1] = cjson.encode(v)
            end
        end
    end

    if #out > 0 then
        out[#out + 1] = 'traits_at'
        out[#out + 1] = ts
    end

    return out
end


--
-- identify: aid with identifiers (user_id, email, phone, as hashes h) and
-- traits.  payload: "user_id TAB user_id h TAB email h TAB phone h TAB
-- traits JSON TAB event JSON" (any but the event may be empty).
-- Returns the profile id the event belongs to, or nil (dropped).
--
-- 1 when any of the identifiers (type:h, or the raw aid) is erased
local function suppressed(aid, ids)
    if not SUPPRESSED then
        return false
    end

    local probe = {}
    if aid ~= '' then
        probe[1] = 'anonymous_id:' .. aidh(aid)
    end
    for _, id in ipairs(ids) do
        probe[#probe + 1] = id[1] .. ':' .. id[2]
    end
    if #probe == 0 then
        return false
    end

    for _, hit in ipairs(redis.call('SMISMEMBER', P .. 'suppressed',
                                    unpack(probe)))
    do
        if hit == 1 then
            stats.suppressed = stats.suppressed + 1
            return true
        end
    end
    return false
end


local function id_list(uidh, eh, ph)
    local ids = {}          -- {type, h} by priority
    if uidh ~= '' then ids[#ids + 1] = {'user_id', uidh} end
    if eh ~= '' then ids[#ids + 1] = {'email', eh} end
    if ph ~= '' then ids[#ids + 1] = {'phone', ph} end
    return ids
end


local function identify_core(aid, ts, uid, uidh, eh, ph, traits)
    local ids = id_list(uidh, eh, ph)

    -- an erased person is not recreated
    if suppressed(aid, ids) then
        return nil
    end

    -- nil: the browser has no record (or there is no browser: the API)
    local cur = nil
    if aid ~= '' then
        cur = resolve(aid)
    end
    local known = cur ~= nil and cur ~= aid

    -- a shared device: another user on a browser that is someone's

    if known and uid ~= '' then
        local other = redis.call('HGET', pkey(cur), 'user_id')
        if other and other ~= uid then
            local target = idx_owner('user_id', uidh)
            if target == nil then
                target = new_profile(ts)
                redis.call('SET', P .. 'idx:user_id:' .. uidh, target)
                redis.call('SADD', P .. 'ids:' .. target, 'user_id:' .. uidh)
                redis.call('HSET', pkey(target), 'user_id', uid)
            end

            redis.call('SREM', P .. 'ids:' .. cur, 'anonymous_id:' .. aid)
            redis.call('SADD', P .. 'ids:' .. target, 'anonymous_id:' .. aid)
            redis.call('HSET', pkey(aid), 'merged_into', target, 'at', ts)
            merges_log(cur, target, 'shared_device', 'anonymous_id', aid, ts)
            stats.switches = stats.switches + 1

            cur = target
        end
    end

    -- the survivor: the owner of the strongest identifier, else the
    -- browser's known profile, else a new one

    local owners = {}
    local s = nil

    for i, id in ipairs(ids) do
        owners[i] = idx_owner(id[1], id[2])
        if s == nil and owners[i] then
            s = owners[i]
        end
    end

    if s == nil and known then
        s = cur
    end

    if s == nil and #ids > 0 then
        s = new_profile(ts)
    end

    if s == nil and aid == '' then
        return nil
    end

    if s == nil then
        -- traits alone: they go to the browser's profile
        if cur == nil then
            redis.call('HSET', pkey(aid), 'events', '0', 'page_views', '0',
                       'first_seen', ts)
            cur = aid
        end
        s = cur
    end

    for i, id in ipairs(ids) do
        local o = owners[i]
        if o and o ~= s then
            if mergeable(s, o) then
                merge(s, o, 'identify', id[1], id[2], ts)
            else
                stats.refused = stats.refused + 1
            end
        end
    end

    -- the browser's own profile joins the person

    if aid ~= '' then
        cur = resolve(aid)
    else
        cur = s                         -- no browser to join
    end

    if cur == s then
        -- already one (traits alone on the browser's own profile too)

    elseif cur == aid then
        merge(s, aid, 'identify', ids[1] and ids[1][1] or 'anonymous_id',
              ids[1] and ids[1][2] or aid, ts)
    elseif cur == nil then
        redis.call('HSET', pkey(aid), 'merged_into', s, 'at', ts)
        redis.call('SADD', P .. 'ids:' .. s, 'anonymous_id:' .. aid)
    elseif cur ~= s then
        if mergeable(s, cur) then
            merge(s, cur, 'identify', ids[1][1], ids[1][2], ts)
        else
            stats.refused = stats.refused + 1
        end
    end

    -- identifiers nobody holds yet, within the limits

    local have = ids_by_type(s)
    for _, id in ipairs(ids) do
        local m = id[1] .. ':' .. id[2]
        if not have[id[1]][m] then
            if redis.call('EXISTS', P .. 'idx:' .. id[1] .. ':' .. id[2]) == 0
               and count(have[id[1]]) < LIMIT[id[1]]
            then
                redis.call('SET', P .. 'idx:' .. id[1] .. ':' .. id[2], s)
                redis.call('SADD', P .. 'ids:' .. s, m)
                have[id[1]][m] = true
                if id[1] == 'user_id' then
                    redis.call('HSET', pkey(s), 'user_id', uid)
                end
            else
                stats.refused = stats.refused + 1
            end
        end
    end

    local set = traits_pairs(traits, ts)
    set[#set + 1] = 'last_seen'
    set[#set + 1] = ts
    redis.call('HSET', pkey(s), unpack(set))

    return s
end


-- "f TAB f TAB ...": the fields of an identify and of an api payload,
-- anchored at both ends (an unanchored "([^\t]*)$" is quadratic)
-- (written out: the string library cannot be used while a library loads)
local IDENTIFY_FIELDS = '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t'
                        .. '([^\t]*)\t(.*)$'

--
-- An api message's attrs: a head of fixed width, read with string.sub
-- (a pattern over the whole attrs cost more than the rest of a track
-- message's Lua), then what identify, alias and a first link read
-- (API_REST, from API_REST_AT):
--   1-32    the messageId's hash, or 32 "-"
--   33-96   the user id's h, or 64 "-"
--   97      the type's first letter (API_TYPES)
--   98-     "user_id TAB user_id h TAB email h TAB phone h TAB previousId
--           as a user id h TAB previousId as an anonymous id TAB traits"
--
local API_NO_MID = '--------------------------------'
local API_NO_UIDH = API_NO_MID .. API_NO_MID
local API_TYPES = {[116] = 'track', [112] = 'page', [115] = 'screen',
                   [103] = 'group', [105] = 'identify', [97] = 'alias'}
local API_REST_AT = 98
local API_REST = '^([^\t]*)\t[^\t]*\t([^\t]*)\t([^\t]*)\t([^\t]*)\t'
                 .. '([^\t]*)\t(.*)$'


--
-- The profile of an alias: previousId (an earlier user id, prev_uidh, or
-- an anonymous id, prev_aid) joins userId's profile.
--
local function alias(ts, uid, uidh, prev_uidh, prev_aid)
    local ids = id_list(uidh, '', '')
    if prev_uidh ~= '' then
        ids[#ids + 1] = {'user_id', prev_uidh}
    end
    if suppressed(prev_aid, ids) then
        return nil
    end

    local s = identify_core('', ts, uid, uidh, '', '', '')
    if s == nil then
        return nil
    end

    local from = nil
    if prev_uidh ~= '' then
        from = idx_owner('user_id', prev_uidh)
    end
    if from == nil and prev_aid ~= '' then
        from = resolve(prev_aid)
        if from == nil then
            -- never seen: the id now leads to the user
            redis.call('HSET', pkey(prev_aid), 'merged_into', s, 'at', ts)
            redis.call('SADD', P .. 'ids:' .. s, 'anonymous_id:' .. prev_aid)
            return s
        end
    end

    if from and from ~= s then
        if mergeable(s, from) then
            merge(s, from, 'alias', prev_uidh ~= '' and 'user_id'
                                    or 'anonymous_id',
                  prev_uidh ~= '' and prev_uidh or prev_aid, ts)
        else
            stats.refused = stats.refused + 1
        end
    end

    return s
end


-- the kinds of a hit whose browser id nginx minted, and their page views
local FRESH = {['page:new'] = '1', ['track:new'] = '0'}


--
-- A page or track event of the browser aid, whose record is pk (aid may
-- be nil: it is then read from pk when needed, as a new browser's is not):
-- counted on its profile.  first: the caller's HINCRBY of pk's events
-- gave 1.  Returns the profile id, or nil when the event is dropped.
-- cdp_ingest handles the two common cases itself: a browser nginx minted
-- the id for, and a returning browser with a profile of its own.
--
local function count_event(aid, pk, ts, kind, a, id, first)
    local page = (kind == 'page' or kind == 'page:new')
    local fresh = FRESH[kind]

    aid = aid or string.sub(pk, #P + #'profile:' + 1)
    local pid = aid

    if first or call('HINCRBY', pk, 'events', '1') == 1 then
        -- a new record, or a link to the person's profile
        local link = call('HGET', pk, 'merged_into')

        if link then
            call('HDEL', pk, 'events')
            pid = resolve(link)
            if pid == nil then
                return nil
            end
            pk = pkey(pid)
            call('HINCRBY', pk, 'events', '1')

        elseif SUPPRESSED and call('SISMEMBER', P .. 'suppressed',
                          'anonymous_id:' .. aidh(aid)) == 1
        then
            -- erased: the person is not recreated
            call('DEL', pk)
            stats.suppressed = stats.suppressed + 1
            return nil

        else
            call('HSET', pk, 'first_seen', ts, 'page_views', '0',
                 'first_event', id)
            id = nil
        end
    end

    local latest = true

    if fresh then
        -- a later hit of this browser got here first, from another
        -- worker's batch: this one is the earliest
        local v = call('HMGET', pk, 'first_seen', 'last_seen')
        if v[1] == false or tonumber(ts) < tonumber(v[1]) then
            call('HSET', pk, 'first_seen', ts)
        end
        latest = v[2] == false or tonumber(ts) >= tonumber(v[2])
    end

    if latest then
        call('HSET', pk, 'last_seen', ts, unpack(a.pairs))
    end

    if page then
        call('HINCRBY', pk, 'page_views', '1')
    end

    if a.touch then
        set_touch(pk, ts, a.touch, false)
    end

    if id then
        timeline_push(pid, id)
    end

    return pid
end


--
-- A message of the server API (kind "api"), aid its anonymousId mapped by
-- nginx to 32 hex digits, or "".  t is its type, h its attrs (see
-- API_REST above), id its stream entry (its payload, the event JSON).
-- Returns the profile id (the entry is on its timeline), "" when the
-- event is stored on no profile, or nil when it is dropped (an erased
-- person).
--
local NO_ATTRS = {pairs = {}}

-- an api event counted on the person's profile pid, on its timeline
local function api_count(pid, ts, kind, id)
    local pk = pkey(pid)
    redis.call('HINCRBY', pk, 'events', '1')
    if kind == 'page' then
        redis.call('HINCRBY', pk, 'page_views', '1')
    end
    redis.call('HSET', pk, 'last_seen', ts)
    timeline_push(pid, id)
    return pid
end

local function api(aid, ts, t, h, id)
    local uidh = string.sub(h, 33, 96)
    if uidh == API_NO_UIDH then
        uidh = ''
    end

    if t == 'identify' or t == 'alias' then
        local uid, eh, ph, prev_uidh, prev_aid, traits =
            string.match(h, API_REST, API_REST_AT)
        if not traits then
            stats.malformed = stats.malformed + 1
            return nil
        end

        local pid
        if t == 'identify' then
            pid = identify_core(aid, ts, uid, uidh, eh, ph, traits)
        else
            pid = alias(ts, uid, uidh, prev_uidh, prev_aid)
        end
        if pid then
            timeline_push(pid, id)
        end
        return pid
    end

    -- track, page, screen, group: counted on the person's profile

    local kind = (t == 'page' or t == 'screen') and 'page' or 'track'

    if uidh ~= '' then
        local pid = redis.call('GET', P .. 'idx:user_id:' .. uidh)
        local linked = false

        if pid and aid ~= '' then
            -- the browser already leads to the user: nothing to link
            local v = redis.call('HGET', pkey(aid), 'merged_into')
            linked = (v == pid)
        end

        if pid == false or (aid ~= '' and not linked) then
            local uid = string.match(h, '^([^\t]*)\t', API_REST_AT)
            if not uid then
                stats.malformed = stats.malformed + 1
                return nil
            end
            -- no browser (a mail proxy's "Email Opened"): the e-mail and
            -- phone hashes name the person too
            local eh, ph = '', ''
            if aid == '' then
                local _, e2, p2 = string.match(h, API_REST, API_REST_AT)
                eh, ph = e2 or '', p2 or ''
            end
            pid = identify_core(aid, ts, uid, uidh, eh, ph, '')
            if pid == nil then
                return nil
            end
        elseif SUPPRESSED and suppressed('', id_list(uidh, '', '')) then
            return nil
        end

        return api_count(pid, ts, kind, id)
    end

    if aid ~= '' then
        return count_event(aid, pkey(aid), ts, kind, NO_ATTRS, id)
    end

    -- no browser, no user id: an e-mail address or a phone number names
    -- the person (a mail service's proxy fetched a signed pixel: "Email
    -- Opened"), found or made as an identify would
    local _, eh, ph = string.match(h, API_REST, API_REST_AT)
    if eh and (eh ~= '' or ph ~= '') then
        local pid = identify_core('', ts, '', '', eh, ph, '')
        if pid == nil then
            return nil
        end
        return api_count(pid, ts, kind, id)
    end

    return ''
end


--
-- The api messages of a batch whose messageId was seen (set at i), within
-- the batch or in the last DEDUP seconds; the batch's new ones are added.
-- The messageId's hash is the first 32 characters of its attrs (32 "-"
-- for none: see API_REST).  Ids (hashes) are kept in sets per period of
-- DEDUP seconds, the current and the previous one looked at, each
-- expiring after two periods: a messageId is remembered between DEDUP and
-- 2 DEDUP seconds.  Four calls a batch instead of one a message.
--
local function dedup_scan(keys, args, n, S)
    local seen, mids, at = {}, {}, {}
    local batch = {}

    for i = 1, n do
        local a = 2 + S * (i - 1)
        if args[a + 1] == 'api' and string.byte(args[a + 2], 1) ~= 45 then
            local mid = string.sub(args[a + 2], 1, 32)
            if batch[mid] then
                seen[i] = true
            else
                batch[mid] = true
                mids[#mids + 1] = mid
                at[#mids] = i
            end
        end
    end

    if #mids == 0 then
        return seen
    end

    local period = math.floor(tonumber(args[2]) / 1000 / DEDUP)
    local cur = P .. 'msgids:' .. period
    local prev = P .. 'msgids:' .. (period - 1)

    for j = 1, #mids, 1000 do
        local k = math.min(j + 999, #mids)
        local h1 = redis.call('SMISMEMBER', cur, unpack(mids, j, k))
        local h2 = redis.call('SMISMEMBER', prev, unpack(mids, j, k))
        for x = 1, k - j + 1 do
            if h1[x] == 1 or h2[x] == 1 then
                seen[at[j + x - 1]] = true
            end
        end
        redis.call('SADD', cur, unpack(mids, j, k))
    end

    redis.call('EXPIRE', cur, 2 * DEDUP)

    return seen
end


--
-- Destinations (ARGV[1] after "|"): "NAME PURPOSE MAXLEN TAKES,..." with
-- PURPOSE the bit of the consent purpose (1 analytics, 2 marketing,
-- 4 personalization) and TAKES whether its types= and events= take
-- "Segment Entered" (1) and "Segment Exited" (2).  Parsed once per spec
-- while the library stays loaded.  ok[c + 1] says whether consent bits c
-- hold the purpose.
--
local DEST_SPECS = {}
local CONSENT_NAMES = {analytics = 1, marketing = 2, personalization = 4}

local function dest_parse(prefix, spec)
    local key = prefix .. '|' .. spec
    local list = DEST_SPECS[key]
    if list then
        return list
    end

    list = {}
    for name, bit, maxlen, takes in string.gmatch(spec,
                                           '([%w_-]+) (%d+) (%d+) ?(%d*)')
    do
        -- takes: 1 "Segment Entered", 2 "Segment Exited" (types, events)
        takes = tonumber(takes) or 0
        local d = {key = prefix .. 'out:' .. name, maxlen = maxlen,
                   ok = {}, touched = false,
                   entered = takes % 2 == 1,
                   exited = math.floor(takes / 2) % 2 == 1}
        bit = tonumber(bit)
        for c = 0, 7 do
            -- c has the bit when (c / bit) is odd
            d.ok[c + 1] = math.floor(c / bit) % 2 == 1
        end
        list[#list + 1] = d
    end

    DEST_SPECS[key] = list
    return list
end


-- the consent bits of a profile's "consent" field ("analytics,marketing")
local function consent_bits(text)
    local c = 0
    for name in string.gmatch(text, '[a-z]+') do
        c = c + (CONSENT_NAMES[name] or 0)
    end
    return c
end


--
-- The gate: the event just stored as stream entry id on profile pid (""
-- for none) goes to the out-stream of each destination its route names
-- whose purpose its consent holds.  The route (see ngx_cdp_dest_route):
-- byte 1 the consent, '0' + bits, or '?' for the consent last recorded on
-- the profile, else byte 2, the default; then one byte a destination, '1'
-- when its types and event names take the event.  The entry keeps the
-- event's own id, so that an erasure, which knows the ids of a person's
-- events, finds it in every out-stream too.
--
local function forward(route, pid, id, event)
    local c = string.byte(route, 1) - 48
    if c > 7 then
        -- '?'
        local text = pid ~= '' and call('HGET', pkey(pid), 'consent')
        c = text and consent_bits(text) or (string.byte(route, 2) - 48)
    end

    for j = 1, #DEST do
        if string.byte(route, 2 + j) == 49 then
            local d = DEST[j]
            if d.ok[c + 1] then
                -- an id at or below the stream's last (the event stream
                -- was recreated) is refused: the entry gets a new one
                if type(redis.pcall('XADD', d.key, id, 'event', event,
                                    'p', pid)) == 'table'
                then
                    call('XADD', d.key, '*', 'event', event, 'p', pid)
                end
                d.queued = d.queued + 1
                d.touched = true
            else
                d.consent = d.consent + 1
            end
        end
    end
end


--
-- Facts (ARGV[1]'s third part, see setup): for each event name a segment
-- rule or cdp_profile_event uses, "<len>:<name>#<k>;" then k summed
-- property names "<len>:<property>".  A track event of such a name has
-- ";<n>" after its route (n: 1-based, in this order); its profile keeps
--   ev.count:<name>            how many
--   ev.first:<name>            the time (ms) of the first, by event time
--   ev.last:<name>             the time of the latest
--   ev.sum:<property>:<name>   the sum of property over those whose
--                              property is a number
--
local FACT_SPECS = {}

local function facts_parse(spec)
    local list = FACT_SPECS[spec]
    if list then
        return list
    end

    list = {}
    local i = 1
    local function str()
        local n, at = string.match(spec, '^(%d+):()', i)
        if not n then
            return nil
        end
        local v = string.sub(spec, at, at + n - 1)
        i = at + n
        return v
    end

    while i <= #spec do
        local name = str()
        local k, at = string.match(spec, '^#(%d+);()', i)
        if not name or not k then
            break
        end
        i = at
        local f = {name = name, count = 'ev.count:' .. name,
                   first = 'ev.first:' .. name, last = 'ev.last:' .. name,
                   sums = {}}
        for _ = 1, tonumber(k) do
            local prop = str()
            if not prop then
                break
            end
            f.sums[#f.sums + 1] = {prop, 'ev.sum:' .. prop .. ':' .. name}
        end
        list[#list + 1] = f
    end

    FACT_SPECS[spec] = list
    return list
end


-- a number as the rules read one (NUM() of ngx_cdp_rule.h), or nil
local function NUM(v)
    if type(v) == 'number' then
        return v
    end
    if type(v) ~= 'string' then
        return nil
    end
    -- the common case first: counts and times are plain digits
    if string.find(v, '^%d+$') then
        return tonumber(v)
    end
    local _, e = string.find(v, '^%-?%d+')
    if not e then
        return nil
    end
    local _, f = string.find(v, '^%.%d+', e + 1)
    if f then
        e = f
    end
    _, f = string.find(v, '^[eE][-+]?%d+', e + 1)
    if f then
        e = f
    end
    if e ~= #v then
        return nil
    end
    return tonumber(v)
end


-- the facts of a track event named by FACTS[n], counted on profile pid
local function fact(pid, ts, n, event)
    local f = FACTS[n]
    if not f or pid == '' then
        return
    end

    local pk = pkey(pid)
    local t = tonumber(ts)
    local v = call('HMGET', pk, f.first, f.last)

    call('HINCRBY', pk, f.count, 1)
    if v[1] == false or t < (tonumber(v[1]) or 0) then
        call('HSET', pk, f.first, ts)
    end
    if v[2] == false or t > (tonumber(v[2]) or 0) then
        call('HSET', pk, f.last, ts)
    end

    if #f.sums > 0 then
        local ok, obj = pcall(cjson.decode, event)
        local props = ok and type(obj) == 'table' and obj.properties
        if type(props) == 'table' then
            for _, s in ipairs(f.sums) do
                local x = NUM(props[s[1]])
                if x then
                    call('HINCRBYFLOAT', pk, s[2], x)
                end
            end
        end
    end
end


--
-- Segments (ARGV[1]'s last part): "<len>:<name><len>:<program>" each,
-- the programs of ngx_cdp_rule.h (format 1), parsed once per spec into
-- lists of ops.  A segment is evaluated after an event when it reads a
-- profile field (every event changes some) or the event's own facts; on
-- time, from <prefix>:segments:due (cdp_segments_tick); after a merge.
--
local SEG_SPECS = {}

local function prog_parse(code)
    if string.sub(code, 1, 3) ~= 'v1;' then
        return nil
    end

    local ops, i, every, facts, time = {}, 4, false, {}, false
    local fields = {}           -- the profile fields the program reads

    local function str()
        local n, at = string.match(code, '^(%d+):()', i)
        if not n then
            error('malformed')
        end
        i = at + n
        return string.sub(code, at, at + n - 1)
    end

    local function num()
        local v, at = string.match(code, '^(%-?[%d%.]+);()', i)
        if not v then
            error('malformed')
        end
        i = at
        return tonumber(v)
    end

    local ok = pcall(function()
        while i <= #code do
            local op = string.sub(code, i, i)
            i = i + 1
            if op == '#' or op == '$' then
                ops[#ops + 1] = {'k', op == '#' and num() or str()}
            elseif op == 'n' or op == 's' then
                ops[#ops + 1] = {op, str()}
                fields[ops[#ops][2]] = true
                every = true
            elseif op == 'H' then
                ops[#ops + 1] = {'H', str()}
                fields.consent = true
                every = true
            elseif op == 'c' or op == 'f' or op == 'l' then
                local e = str()
                local pre = op == 'c' and 'ev.count:' or op == 'f'
                            and 'ev.first:' or 'ev.last:'
                ops[#ops + 1] = {'n', pre .. e}
                fields[pre .. e] = true
                facts[e] = true
            elseif op == 'u' then
                local e = str()
                ops[#ops + 1] = {'n', 'ev.sum:' .. str() .. ':' .. e}
                fields[ops[#ops][2]] = true
                facts[e] = true
            elseif op == 'N' or op == 'S' then
                ops[#ops + 1] = {op, string.sub(code, i, i + 1)}
                i = i + 2
            elseif op == 'I' then
                ops[#ops + 1] = {'I', num()}
            elseif op == 'B' or op == 'W' then
                ops[#ops + 1] = {op, num()}
                time = true
            elseif op == '&' or op == '|' or op == '!' then
                ops[#ops + 1] = {op}
            else
                error('malformed')
            end
        end
    end)

    if not ok then
        return nil
    end

    return {ops = ops, every = every, facts = facts, time = time,
            fields = fields}
end

local function segments_parse(prefix, spec)
    local key = prefix .. '|' .. spec
    local list = SEG_SPECS[key]
    if list then
        return list
    end

    list = {}
    local i = 1
    while i <= #spec do
        local n, at = string.match(spec, '^(%d+):()', i)
        if not n then
            break
        end
        local name = string.sub(spec, at, at + n - 1)
        i = at + n
        n, at = string.match(spec, '^(%d+):()', i)
        if not n then
            break
        end
        local g = prog_parse(string.sub(spec, at, at + n - 1))
        i = at + n
        if g then
            g.name = name
            g.key = prefix .. 'segment:' .. name
            list[#list + 1] = g
        end
    end

    SEG_SPECS[key] = list
    return list
end


local CMP = {
    eq = function(a, b) return a == b end,
    ne = function(a, b) return a ~= b end,
    lt = function(a, b) return a < b end,
    le = function(a, b) return a <= b end,
    gt = function(a, b) return a > b end,
    ge = function(a, b) return a >= b end
}

-- a program on profile fields F at time NOW: the result, and the next
-- time it may flip without an event (or nil)
local ST = {}                   -- the evaluator's stack, reused

local function prog_eval(ops, F)
    local st, sp, due = ST, 0, nil

    for k = 1, #ops do
        local o = ops[k]
        local t = o[1]

        if t == 'k' then
            sp = sp + 1
            st[sp] = o[2]
        elseif t == 'n' then
            sp = sp + 1
            st[sp] = NUM(F[o[2]]) or 0
        elseif t == 's' then
            sp = sp + 1
            st[sp] = F[o[2]]
        elseif t == 'H' then
            sp = sp + 1
            st[sp] = F.consent ~= nil
                     and string.find(',' .. F.consent .. ',',
                                     ',' .. o[2] .. ',', 1, true) ~= nil
        elseif t == 'N' then
            local a, b = st[sp - 1], st[sp]
            sp = sp - 1
            if type(a) == 'string' then a = NUM(a) end
            if type(b) == 'string' then b = NUM(b) end
            st[sp] = (a ~= nil and b ~= nil) and CMP[o[2]](a, b) or false
        elseif t == 'S' then
            local a, b = st[sp - 1], st[sp]
            sp = sp - 1
            if a == nil or b == nil then
                st[sp] = (o[2] == 'ne')
            else
                st[sp] = (a == b) == (o[2] == 'eq')
            end
        elseif t == 'I' then
            local n = o[2]
            local v = st[sp - n]
            local r = false
            if v ~= nil then
                for j = sp - n + 1, sp do
                    local it = st[j]
                    if type(it) == 'number' then
                        local x = (type(v) == 'string') and NUM(v) or v
                        if x == it then
                            r = true
                        end
                    elseif type(v) == 'string' and v == it then
                        r = true
                    end
                end
            end
            sp = sp - n
            st[sp] = r
        elseif t == 'B' or t == 'W' then
            local at, D = st[sp], o[2]
            if at <= 0 then
                st[sp] = (t == 'B')
            else
                local flip = at + D
                st[sp] = (NOW >= flip) == (t == 'B')
                if flip > NOW and (due == nil or flip < due) then
                    due = flip
                end
            end
        elseif t == '&' then
            sp = sp - 1
            st[sp] = st[sp] and st[sp + 1]
        elseif t == '|' then
            sp = sp - 1
            st[sp] = st[sp] or st[sp + 1]
        else -- '!'
            st[sp] = not st[sp]
        end
    end

    return st[1] == true, due
end


-- "2026-12-04T20:38:36.861Z" of ms since the epoch (H. Hinnant's days)
local function iso(ms)
    local s = math.floor(ms / 1000)
    local d = math.floor(s / 86400)
    local r = s - d * 86400
    local z = d + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460)
                            + math.floor(doe / 36524)
                            - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4)
                       - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local day = doy - math.floor((153 * mp + 2) / 5) + 1
    local month = mp < 10 and mp + 3 or mp - 9
    local year = yoe + era * 400 + (month <= 2 and 1 or 0)
    return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month,
                         day, math.floor(r / 3600),
                         math.floor(r % 3600 / 60), r % 60, ms % 1000)
end


--
-- "Segment Entered" or "Segment Exited": a track event of the profile,
-- in the stream and its timeline, and through the gate to destinations
-- whose types= and events= take it, under the profile's consent.
--
local function segment_event(pid, F, name, what)
    -- written out: segment names are [%w_-], profile ids hex or p<N>;
    -- only a user id needs JSON's escaping
    if not NOW_ISO then
        NOW_ISO = iso(NOW)
    end
    local who = ''
    if #pid == 32 and string.find(pid, '^%x+$') then
        who = ',"anonymousId":"' .. pid .. '"'
    end
    if F.user_id then
        who = who .. ',"userId":' .. cjson.encode(F.user_id)
    end

    local json = '{"type":"track","event":"' .. what
        .. '","properties":{"segment":"' .. name .. '"},"messageId":"seg-'
        .. pid .. '-' .. NOW .. '-' .. stats.segment_events .. '"'
        .. who .. ',"timestamp":"' .. NOW_ISO .. '","receivedAt":"'
        .. NOW_ISO .. '","context":{"library":{"name":"ngx_cdp"}}}'
    local id = call('XADD', STREAM, '*', 'event', json)
    timeline_push(pid, id)
    stats.segment_events = stats.segment_events + 1

    if DEST then
        local bytes, any = {}, false
        for j, d in ipairs(DEST) do
            local take = (what == 'Segment Entered') and d.entered
                         or (what == 'Segment Exited') and d.exited
            bytes[j] = take and '1' or '0'
            any = any or take
        end
        if any then
            forward('?0' .. table.concat(bytes), pid, id, json)
        end
    end
end


--
-- Membership of profile pid after a change: the segments that this
-- change may affect (all: every one) are evaluated on its fields; entries
-- and exits update <prefix>:segment:<name>, the profile's "segments"
-- field, and make their events; the next due time goes to
-- <prefix>:segments:due.
--
local function segments_update(pid, all, fname)
    if not SEGS or #SEGS == 0 or pid == nil or pid == '' then
        return
    end

    local todo = {}
    for _, g in ipairs(SEGS) do
        if all or g.every or (fname and g.facts[fname]) then
            todo[#todo + 1] = g
        end
    end
    if #todo == 0 then
        return
    end

    -- only the fields these programs read (a profile may hold many more)
    local names, seen = {'events', 'segments', 'user_id'}, {}
    for _, g in ipairs(todo) do
        for f in pairs(g.fields) do
            if not seen[f] then
                seen[f] = true
                names[#names + 1] = f
            end
        end
    end

    local pk = pkey(pid)
    local vals = call('HMGET', pk, unpack(names))
    if not vals[1] then
        -- a link, or gone
        return
    end
    local F = {}
    for j = 1, #names do
        if vals[j] then
            F[names[j]] = vals[j]
        end
    end

    local cur, list = {}, {}
    for name in string.gmatch(F.segments or '', '[^,]+') do
        cur[name] = true
    end

    local changed, due, timed = false, nil, false
    for _, g in ipairs(todo) do
        local r, d = prog_eval(g.ops, F)
        if r and not cur[g.name] then
            call('SADD', g.key, pid)
            cur[g.name] = true
            changed = true
            segment_event(pid, F, g.name, 'Segment Entered')
        elseif not r and cur[g.name] then
            call('SREM', g.key, pid)
            cur[g.name] = nil
            changed = true
            segment_event(pid, F, g.name, 'Segment Exited')
        end
        if g.time then
            timed = true
            if d and (due == nil or d < due) then
                due = d
            end
        end
    end

    if changed then
        for _, g in ipairs(SEGS) do
            if cur[g.name] then
                list[#list + 1] = g.name
            end
        end
        if #list > 0 then
            call('HSET', pk, 'segments', table.concat(list, ','))
        else
            call('HDEL', pk, 'segments')
        end
    end

    if due then
        call('ZADD', P .. 'segments:due', due, pid)
    elseif timed and all then
        call('ZREM', P .. 'segments:due', pid)
    end
end


-- the event was dropped: its person is erased
local function forward_erased(route)
    for j = 1, #DEST do
        if string.byte(route, 2 + j) == 49 then
            DEST[j].erased = DEST[j].erased + 1
        end
    end
end


--
-- The state of a call from its stream key and ARGV[1]: "<numbers>", or
-- "<numbers>|<destinations>|<len>:<facts><len>:<segments>" (see
-- dest_parse, facts_parse, segments_parse).  Returns the number of
-- arguments an event has (4, or 5 with any of those) and the aggregates'
-- retention, or nil for a malformed ARGV[1].
--
local function setup(stream, argv1)
    local head, spec, fspec, sspec = argv1 or '', '', '', ''
    local bar = string.find(head, '|', 1, true)
    if bar then
        local rest = string.sub(head, bar + 1)
        head = string.sub(head, 1, bar - 1)
        local bar2 = string.find(rest, '|', 1, true)
        if not bar2 then
            return nil
        end
        spec = string.sub(rest, 1, bar2 - 1)
        local fl, at = string.match(rest, '^(%d+):()', bar2 + 1)
        if not fl then
            return nil
        end
        fspec = string.sub(rest, at, at + fl - 1)
        local sl, at2 = string.match(rest, '^(%d+):()', at + fl)
        if not sl then
            return nil
        end
        sspec = string.sub(rest, at2, at2 + sl - 1)
    end
    local S = bar and 5 or 4

    local maxlen, lu, le, lp, tl, dd, ar =
        string.match(head,
                     '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) ?(%d*)$')
    if not maxlen then
        maxlen, lu, le, lp, tl, dd = string.match(head, '^(%d+)$'), 1, 5,
                                     5, 10000, 86400
        if not maxlen then
            return nil
        end
    end
    if not ar or ar == '' then
        ar = AGG_RETENTION
    end

    STREAM = stream
    P = string.sub(STREAM, 1, -7)       -- "<prefix>:" of "<prefix>:events"
    MAXLEN = maxlen
    LIMIT = {user_id = tonumber(lu), email = tonumber(le),
             phone = tonumber(lp)}
    TL_MAX = math.max(tonumber(tl), 1)
    TL_SLACK = math.max(16, math.floor(TL_MAX / 16))
    DEDUP = math.max(tonumber(dd), 1)
    stats = {stored = 0, suppressed = 0, merges = 0, switches = 0,
             refused = 0, malformed = 0, duplicates = 0,
             segment_events = 0}
    -- erasure is rare: no lookups while nobody is suppressed
    SUPPRESSED = redis.call('EXISTS', P .. 'suppressed') == 1
    DEST = nil
    if spec ~= '' then
        DEST = dest_parse(P, spec)
        for _, d in ipairs(DEST) do
            d.queued, d.consent, d.erased, d.touched = 0, 0, 0, false
        end
    end
    FACTS = (fspec ~= '') and facts_parse(fspec) or nil
    SEGS = (sspec ~= '') and segments_parse(P, sspec) or nil
    SEGS_VERSION = SEGS and redis.sha1hex(sspec) or nil
    MERGED = SEGS and {} or nil
    NOW_ISO = nil
    if SEGS then
        local t = redis.call('TIME')
        NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    call = redis.call

    return S, ar
end


--
-- cdp_ingest: store a batch of events from one nginx worker.
--   KEYS[1]      the event stream, <prefix>:events
--   KEYS[1 + i]  the key event i updates: <prefix>:profile:<aid> for the
--                browser's events, or for "agg" the day's aggregate hash
--                <prefix>:agg:<YYYY-MM-DD>, or for "log" a log stream
--   ARGV[1]      "maxlen limit_user_id limit_email limit_phone
--                timeline_max dedup_seconds [aggregate_retention]": the
--                approximate MAXLEN of the streams, the identifier limits
--                per profile, the timeline cap, the messageId window and
--                the seconds an aggregate hash is kept after its last hit;
--                then, with destinations, facts or segments,
--                "|<destinations>|<len>:<facts><len>:<segments>" (see
--                setup above), and every event has a fifth argument
--   ARGV[2 + S(i-1)] .. : for each event i (S = 4, or 5 with
--                destinations): timestamp in ms, kind, attrs, payload
--                [, "<route>[;<fact>]": see forward() and fact() above;
--                a route "" goes nowhere].
--                kind "page" or "track": the payload is the Segment-spec
--                JSON, appended to the stream and counted on the
--                browser's profile (where its link leads); with ":new"
--                when nginx minted the browser's id for this very hit.
--                kind "identify": see identify() above.
--                kind "api": a message of the server API, its fields in
--                attrs and its JSON the payload: see api() above.
--                kind "agg": the payload is a field of the aggregate hash,
--                incremented.
--                kind "log": the payload is appended as field "entry" to
--                the stream that is its key.
--                attrs (but for "api"): see attr_pairs() above.
--   reply: {events stored, dropped as erased, merges, shared-device
--          switches, identifiers refused by a limit, malformed identifies,
--          duplicates (api messages whose messageId was seen)}, then for
--          each destination {queued, filtered for consent, filtered as
--          erased}
--   errors: "ERR cdp_ingest: ..." on a malformed call; nothing is written
--
local function cdp_ingest(keys, args)
    local n = #keys - 1
    local S, ar = setup(keys[1], args[1])
    if not S then
        return redis.error_reply('ERR cdp_ingest: a malformed ARGV[1]')
    end
    if n >= 1 and #args == 2 + S * (n - 1) then
        -- a batch id: KEYS[2] the bitmap of its writer's batches, ARGV[2]
        -- its bit; a batch seen before was applied, its reply was lost
        local bit = tonumber(args[2])
        if not bit or bit < 0 or bit >= ONCE_BITS
           or string.sub(keys[2], 1, #P + 5) ~= P .. 'once:' then
            return redis.error_reply('ERR cdp_ingest: a malformed batch id')
        end
        if redis.call('SETBIT', keys[2], bit, 1) == 1 then
            return redis.status_reply('APPLIED')
        end
        redis.call('EXPIRE', keys[2], ONCE_SECONDS)
        table.remove(keys, 2)
        table.remove(args, 2)
        n = n - 1
    end
    if n < 0 or #args ~= 1 + S * n then
        return redis.error_reply('ERR cdp_ingest: want 1 + ' .. S
                                 .. 'N args for N keys')
    end

    local cache, aggs = {}, {}
    local plen = #P + #'profile:'
    local seen = dedup_scan(keys, args, n, S)
    local stored = 0
    call = redis.call

    for i = 1, n do
        local a = 2 + S * (i - 1)
        local ts = args[a]
        local kind = args[a + 1]
        local key = keys[1 + i]
        local pv = FRESH[kind]
        -- the extra argument: "route;fact" (either part may be empty)
        local route, nfact = '', nil
        if S == 5 then
            local x = args[a + 4]
            local semi = string.find(x, ';', 1, true)
            if semi then
                route = string.sub(x, 1, semi - 1)
                nfact = tonumber(string.sub(x, semi + 1))
            else
                route = x
            end
            if not DEST then
                route = ''
            end
        end

        if pv and call('EXISTS', key) == 0 then
            -- nginx minted the browser's id for this hit (most browsers
            -- are seen once): one write creates its record, the event's
            -- stream id in it for an erasure to find
            local at = attr_pairs(cache, args[a + 2])
            local id = call('XADD', STREAM, '*', 'event', args[a + 3])

            call('HSET', key, 'events', '1', 'page_views', pv,
                 'first_seen', ts, 'last_seen', ts, 'first_event', id,
                 unpack(at.pairs))
            if at.touch then
                set_touch(key, ts, at.touch, true)
            end
            stored = stored + 1
            if nfact then
                fact(string.sub(key, plen + 1), ts, nfact, args[a + 3])
            end
            if route ~= '' then
                forward(route, string.sub(key, plen + 1), id, args[a + 3])
            end
            if SEGS then
                segments_update(string.sub(key, plen + 1), false,
                                nfact and FACTS[nfact] and FACTS[nfact].name)
            end

        elseif kind == 'page' or kind == 'track' then
            -- a returning browser: when its record is a profile (not new,
            -- not a link), count_event's work is done here, inline (a
            -- Lua call and its checks cost as much as a Redis command)
            local at = attr_pairs(cache, args[a + 2])
            local id = call('XADD', STREAM, '*', 'event', args[a + 3])

            if call('HINCRBY', key, 'events', '1') > 1 then
                call('HSET', key, 'last_seen', ts, unpack(at.pairs))
                if kind == 'page' then
                    call('HINCRBY', key, 'page_views', '1')
                end
                if at.touch then
                    set_touch(key, ts, at.touch, false)
                end
                timeline_push(string.sub(key, plen + 1), id)
                stored = stored + 1
                if nfact then
                    fact(string.sub(key, plen + 1), ts, nfact, args[a + 3])
                end
                if route ~= '' then
                    forward(route, string.sub(key, plen + 1), id,
                            args[a + 3])
                end
                if SEGS then
                    segments_update(string.sub(key, plen + 1), false,
                                    nfact and FACTS[nfact]
                                    and FACTS[nfact].name)
                end

            else
                local pid = count_event(nil, key, ts, kind, at, id, true)
                if pid then
                    stored = stored + 1
                    if nfact then
                        fact(pid, ts, nfact, args[a + 3])
                    end
                    if route ~= '' then
                        forward(route, pid, id, args[a + 3])
                    end
                    if SEGS then
                        segments_update(pid, MERGED[pid] ~= nil,
                                        nfact and FACTS[nfact]
                                        and FACTS[nfact].name)
                    end
                else
                    -- erased: the event goes too
                    call('XDEL', STREAM, id)
                    if route ~= '' then
                        forward_erased(route)
                    end
                end
            end

        elseif kind == 'agg' then
            redis.call('HINCRBY', key, args[a + 3], '1')
            if not aggs[key] then
                -- kept for the retention after its day's last hit
                aggs[key] = true
                redis.call('EXPIRE', key, ar)
            end
            stats.stored = stats.stored + 1

        elseif kind == 'log' then
            redis.call('XADD', key, 'MAXLEN', '~', MAXLEN, '*',
                       'entry', args[a + 3])
            stats.stored = stats.stored + 1

        else
            local pid, id, event

            if kind == 'identify' then
                local aid = string.sub(key, plen + 1)
                local f = {string.match(args[a + 3], IDENTIFY_FIELDS)}

                if f[6] then
                    event = f[6]
                    id = redis.call('XADD', STREAM, '*', 'event', f[6])
                    pid = identify_core(aid, ts, f[1], f[2], f[3], f[4], f[5])
                    if pid then
                        timeline_push(pid, id)
                    end
                else
                    stats.malformed = stats.malformed + 1
                end

            elseif kind == 'api' then
                local t = API_TYPES[string.byte(args[a + 2], 97)]

                if not t then
                    stats.malformed = stats.malformed + 1

                elseif seen[i] then
                    stats.duplicates = stats.duplicates + 1

                else
                    event = args[a + 3]
                    id = redis.call('XADD', STREAM, '*', 'event', args[a + 3])
                    pid = api(string.sub(key, plen + 1), ts, t, args[a + 2],
                              id)
                end

            else
                event = args[a + 3]
                id = call('XADD', STREAM, '*', 'event', args[a + 3])
                -- the key is the browser's record: no aid to cut out of it
                pid = count_event(nil, key, ts, kind,
                                  attr_pairs(cache, args[a + 2]), id)
            end

            if pid then
                stats.stored = stats.stored + 1
                if nfact then
                    fact(pid, ts, nfact, event)
                end
                if route ~= '' then
                    forward(route, pid, id, event)
                end
                if SEGS and pid ~= '' then
                    segments_update(pid, MERGED[pid] ~= nil,
                                    nfact and FACTS[nfact]
                                    and FACTS[nfact].name)
                end
            elseif id then
                -- erased or malformed: the event goes too
                redis.call('XDEL', STREAM, id)
                if route ~= '' then
                    forward_erased(route)
                end
            end
        end
    end

    -- once per batch rather than per XADD: fewer arguments per event, and
    -- the stream overshoots MAXLEN by one batch at most
    redis.call('XTRIM', STREAM, 'MAXLEN', '~', MAXLEN)

    local reply = {stats.stored + stored, stats.suppressed, stats.merges,
                   stats.switches, stats.refused, stats.malformed,
                   stats.duplicates}

    if DEST then
        for _, d in ipairs(DEST) do
            if d.touched then
                redis.call('XTRIM', d.key, 'MAXLEN', '~', d.maxlen)
            end
            reply[#reply + 1] = d.queued
            reply[#reply + 1] = d.consent
            reply[#reply + 1] = d.erased
        end
    end

    return reply
end

--
-- cdp_dest_done: the end of one delivery of a destination's batch.
--   KEYS[1]  the out-stream <prefix>:out:<NAME>
--   KEYS[2]  its dead-letter stream <prefix>:dead:<NAME>
--   ARGV[1]  the consumer group   ARGV[2] "<prefix>:"   ARGV[3] NAME
--   ARGV[4]  now, ms   ARGV[5] the dead-letter stream's MAXLEN
--   ARGV[6]  N, the entries delivered (a 2xx), then N times: id, the
--            profile id the entry names, what the destination was sent
--            of the person: "a:<anonymousId>", "u:<userId>", TAB-separated
--            (empty for a deletion notice)
--   then     M times: id, HTTP status, the response's first bytes: the
--            entries the destination refused (dead letters)
--   Delivered entries are acknowledged, and the person's
--   <prefix>:sent:{<pid>} set records what NAME was sent, for an erasure
--   to send NAME a deletion notice.  Refused ones move to the dead-letter
--   stream (fields id, status, response, at, and the entry's own) and are
--   acknowledged.  The stream is then trimmed (MINID) below the oldest
--   entry still pending in the group, or past its last read one: the
--   delivering group is the stream's only reader.
--   reply: {delivered, dead-lettered}
--
local function cdp_dest_done(keys, args)
    local out, dead = keys[1], keys[2]
    local group, prefix, name = args[1], args[2], args[3]
    local now, deadmax = args[4], args[5]
    local n = tonumber(args[6])
    if not n or #args < 6 + 3 * n or (#args - 6 - 3 * n) % 3 ~= 0 then
        return redis.error_reply('ERR cdp_dest_done: malformed arguments')
    end

    -- what each person was sent: one SADD a person, of distinct members
    local ids, sent, pids = {}, {}, {}
    for i = 0, n - 1 do
        local a = 7 + 3 * i
        ids[#ids + 1] = args[a]
        local pid = args[a + 1]
        if pid ~= '' and args[a + 2] ~= '' then
            local set = sent[pid]
            if not set then
                set = {}
                sent[pid] = set
                pids[#pids + 1] = pid
            end
            for ident in string.gmatch(args[a + 2], '[^\t]+') do
                set[name .. '\t' .. ident] = true
            end
        end
    end
    for _, pid in ipairs(pids) do
        local members = {}
        for m in pairs(sent[pid]) do
            members[#members + 1] = m
        end
        redis.call('SADD', prefix .. 'sent:{' .. pid .. '}', unpack(members))
    end

    local m = 0
    for a = 7 + 3 * n, #args, 3 do
        local id = args[a]
        local e = redis.call('XRANGE', out, id, id)[1]
        if e then
            local f = {'id', id, 'status', args[a + 1],
                       'response', args[a + 2], 'at', now}
            for i = 1, #e[2] do
                f[#f + 1] = e[2][i]
            end
            redis.call('XADD', dead, 'MAXLEN', '~', deadmax, '*', unpack(f))
            m = m + 1
        end
        ids[#ids + 1] = id
    end

    for i = 1, #ids, 1000 do
        redis.call('XACK', out, group, unpack(ids, i, math.min(i + 999, #ids)))
    end

    -- what is acknowledged goes, by one trim (cheaper than an XDEL an
    -- entry: whole stream nodes are dropped): everything older than the
    -- oldest entry still pending, or than the next unread one
    local floor
    local pending = redis.call('XPENDING', out, group)
    if pending[1] > 0 then
        floor = pending[2]
    else
        for _, g in ipairs(redis.call('XINFO', 'GROUPS', out)) do
            local f = {}
            for i = 1, #g, 2 do
                f[g[i]] = g[i + 1]
            end
            if f.name == group then
                local ms, seq = string.match(f['last-delivered-id'],
                                             '^(%d+)-(%d+)$')
                if ms then
                    floor = ms .. '-' .. (tonumber(seq) + 1)
                end
            end
        end
    end
    if floor then
        redis.call('XTRIM', out, 'MINID', floor)
    end

    return {n, m}
end


--
-- cdp_segments_tick: the segments whose result changes with time alone
-- (before(), within()): the profiles due by now are evaluated again, at
-- most limit of them.
--   KEYS[1]  the event stream, <prefix>:events
--   KEYS[2]  <prefix>:segments:due
--   ARGV[1]  as cdp_ingest's   ARGV[2] limit
--   reply: {profiles evaluated, still due (past now), segment events}
--
local function cdp_segments_tick(keys, args)
    if not setup(keys[1], args[1]) or not SEGS then
        return redis.error_reply('ERR cdp_segments_tick: no segments in '
                                 .. 'ARGV[1]')
    end

    local limit = tonumber(args[2]) or 1000
    local due = redis.call('ZRANGEBYSCORE', keys[2], '-inf', NOW,
                           'LIMIT', 0, limit)

    for _, pid in ipairs(due) do
        redis.call('ZREM', keys[2], pid)
        segments_update(pid, true, nil)
    end

    redis.call('XTRIM', STREAM, 'MAXLEN', '~', MAXLEN)

    return {#due, redis.call('ZCOUNT', keys[2], '-inf', NOW),
            stats.segment_events}
end


--
-- cdp_segments_backfill: a new or changed set of segments (after a reload)
-- is evaluated over the profiles that exist, a bounded step at a time:
-- one SCAN of count keys of <prefix>:profile:* a call.  Where it is, by
-- the segments' version (SHA1 of their part of ARGV[1]), is kept in the
-- hash <prefix>:segments:backfill (version, cursor, scanned, done).
--   KEYS[1]  the event stream, <prefix>:events
--   ARGV[1]  as cdp_ingest's   ARGV[2] count (keys a SCAN step)
--   reply: {done (0 or 1), profiles evaluated so far, segment events}
--
local function cdp_segments_backfill(keys, args)
    if not setup(keys[1], args[1]) or not SEGS then
        return redis.error_reply('ERR cdp_segments_backfill: no segments '
                                 .. 'in ARGV[1]')
    end

    local state = P .. 'segments:backfill'
    local version = SEGS_VERSION
    local v = redis.call('HMGET', state, 'version', 'cursor', 'scanned',
                         'done')

    if v[1] ~= version then
        v = {version, '0', '0', '0'}
        redis.call('HSET', state, 'version', version, 'cursor', '0',
                   'scanned', '0', 'done', '0')
    end

    if v[4] == '1' then
        return {1, tonumber(v[3]), 0}
    end

    local page = redis.call('SCAN', v[2], 'MATCH', P .. 'profile:*',
                            'COUNT', tonumber(args[2]) or 1000)
    local plen = #P + #'profile:'
    local scanned = tonumber(v[3])

    for _, key in ipairs(page[2]) do
        -- links (merged profiles) hold no membership
        if redis.call('HEXISTS', key, 'merged_into') == 0 then
            segments_update(string.sub(key, plen + 1), true, nil)
            scanned = scanned + 1
        end
    end

    local done = (page[1] == '0') and 1 or 0
    redis.call('HSET', state, 'cursor', page[1], 'scanned', scanned,
               'done', done)
    redis.call('XTRIM', STREAM, 'MAXLEN', '~', MAXLEN)

    return {done, scanned, stats.segment_events}
end


--
-- cdp_profile_view: what a request of a cdp_profile location learns of
-- its browser's profile (read-only).
--   KEYS[1]  <prefix>:profile:<anonymous id>
--   reply: {profile id, its segments ("a,b" or "")}, or nil when the
--          browser has no profile
--
local function cdp_profile_view(keys, args)
    local key = keys[1]
    local pre = string.match(key, '^(.*:profile:)')
    if not pre then
        return redis.error_reply('ERR cdp_profile_view: want a profile key')
    end
    local pid = string.sub(key, #pre + 1)

    for _ = 1, MAX_HOPS do
        local v = redis.call('HMGET', pre .. pid, 'merged_into', 'segments',
                             'events')
        if v[1] then
            pid = v[1]
        elseif v[3] then
            return {pid, v[2] or ''}
        else
            return nil
        end
    end

    return nil
end


redis.register_function{function_name = 'cdp_profile_view',
                        callback = cdp_profile_view, flags = {'no-writes'}}
redis.register_function{function_name = 'cdp_segments_tick',
                        callback = cdp_segments_tick}
redis.register_function{function_name = 'cdp_segments_backfill',
                        callback = cdp_segments_backfill}
redis.register_function{function_name = 'cdp_dest_done',
                        callback = cdp_dest_done}
redis.register_function{function_name = 'cdp_version',
                        callback = cdp_version, flags = {'no-writes'}}
redis.register_function{function_name = 'cdp_ingest',
                        callback = cdp_ingest}
