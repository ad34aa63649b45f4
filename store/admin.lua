#!lua name=cdp_admin_v1
--
-- ngx_cdp: the privacy officer's operations (admin API) in Redis.  A second
-- library of Redis Functions beside cdp_v1 (store/cdp.lua), revision @REV@.
-- Key layout: store/README.md (the identity contract); this library:
-- store/ADMIN.md.
--
-- Every function here but cdp_admin_x takes the key prefix as ARGV[1]
-- and computes its key names from it (a person's keys are only known once
-- their links are followed), with numkeys 0: a standalone Redis only
-- (Redis Cluster refuses undeclared keys of other slots).  On Redis
-- Cluster, cdp_admin_x does what cdp_erase, cdp_export, cdp_read,
-- cdp_segments, cdp_segment_members, cdp_unsuppress and cdp_replay do as
-- a saga of one-slot calls that nginx drives (near the end of this file).
--
-- Keys are sharded as store/cdp.lua shards them (store/README.md,
-- "Shards"): ARGV[1] is "<prefix>" (16 shards) or "<prefix>|<N>" (N 1 to
-- 1024; nginx always sends this form).  A profile id's shard is
-- CRC16(id) % N, shard i's hash tag "{<i>.<k>}" (shard_tag below):
--   <prefix>:profile:{<tag(x)>}:<x>        also ids:, timeline:,
--                                          timeline_old: (x a pid or aid)
--   <prefix>:idx:{<tag(h)>}:<type>:<h>
--   <prefix>:events:{<tag_i>}              one stream a shard: profile x's
--                                          timeline, timeline_old and
--                                          first_event are ids of
--                                          events:{<tag(x)>}
--   <prefix>:merges:{<tag_i>}              a shard each (the survivor's)
--   <prefix>:consent_log:{<tag_i>}         a shard each (nginx's turn)
--   <prefix>:suppressed:{<tag_i>}          a copy a shard, all equal:
--                                          written to all, read in shard 0
-- per shard too: :out:{<tag>}:<NAME>, :dead:{<tag>}:<NAME>,
-- :sent:{<tag>}:<pid>, :segment:{<tag>}:<NAME> (segment NAME's members
-- of the shard), :segments:due:{<tag>}; and, not sharded: <prefix>:audit,
-- :destinations and the legacy :browser:<aid>.  A merge leaves the
-- absorbed profile's events in its shard (its link keeps timeline and
-- first_event): a person's events are those of all their nodes, each read
-- in its own shard.
--
-- Identifiers are "type:value" strings, hashed by nginx before the call:
--   user_id:<h>  email:<h>  phone:<h>   h = 64 lowercase hex (HMAC-SHA256)
--   anonymous_id:<aid>                  aid = 32 lowercase hex (raw)
--   profile_id:<pid>                    pid = p<N>, or an aid (the pid of
--                                       an anonymous profile)
-- Outside its own keys (suppression set, consent log, audit) an anonymous
-- id only appears as aidh(aid) = SHA1("anonymous_id:" .. aid), 40 hex.
--
-- Writing functions read and check everything first (arguments, key types,
-- link chains, stream ids) and write only then, so an error leaves the
-- database as it was.  Error messages never echo identifier values.
--

local REV = '@REV@'

local MAX_IDS = 100         -- identifiers per call
local MAX_HOPS = 64         -- links followed from one identifier
local MAX_RECENT = 1000     -- cdp_profile's recent events
local MAX_AUDIT = 1000      -- cdp_audit's entries
local CHUNK = 1000          -- ids per XDEL/DEL, entries per XRANGE

local HASHED = {user_id = true, email = true, phone = true}

local WIRE_SHARDS = 16      -- the shards of a bare "<prefix>"
local MAX_SHARDS = 1024

-- Redis Cluster (cdp_admin_x below): the one shard a step may touch, or
-- nil (a standalone function: every shard).  shard_keys() and the loops
-- over a person's nodes (timeline_ids, recent_found, dest_plan,
-- dest_apply) honour it.  Reset at every call (guarded).
local ONLY = nil

-- ---------------------------------------------------------------------
-- small helpers

local function fail(fn, msg)
    return redis.error_reply('ERR ' .. fn .. ': ' .. msg)
end

-- an error found deep in the reads (a cycle, a malformed link): unwinds
-- to guarded(), which replies it as it is
local function raise(fn, msg)
    error({cdp_error = 'ERR ' .. fn .. ': ' .. msg})
end

local function guarded(body)
    return function(keys, args)
        ONLY = nil
        local ok, res = pcall(body, keys, args)
        ONLY = nil
        if ok then
            return res
        end
        if type(res) == 'table' and res.cdp_error then
            return redis.error_reply(res.cdp_error)
        end
        error(res, 0)
    end
end

local function is_aid(s)
    return #s == 32 and s:find('^[0-9a-f]+$') ~= nil
end

local function is_h(s)
    return #s == 64 and s:find('^[0-9a-f]+$') ~= nil
end

local function is_pid(s)
    return is_aid(s) or (#s <= 21 and s:find('^p[0-9]+$') ~= nil)
end

local function aidh(aid)
    return redis.sha1hex('anonymous_id:' .. aid)
end

-- a stream id XDEL/XRANGE accept (each part < 2^64): anything else in a
-- timeline is skipped, never passed to a write that would fail half-way
local function is_stream_id(s)
    local ms, seq = s:match('^([0-9]+)%-([0-9]+)$')
    return ms ~= nil and #ms <= 19 and #seq <= 19
end

-- a stream id as 40 digits that sort like the id (both parts padded)
local function id_sort_key(id)
    local ms, seq = id:match('^([0-9]+)%-([0-9]+)$')
    return string.rep('0', 20 - #ms) .. ms .. string.rep('0', 20 - #seq)
        .. seq
end

local function now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(n)
    return string.format('%d', n)
end

-- JSON by hand: Redis's cjson encodes an empty table as {} (never []) and
-- numbers with 14 digits, so arrays are assembled here and the JSON stored
-- by nginx (events, consent entries) is embedded as it is.

-- (cjson is not reachable while the library loads: looked up per call)
local function jstr(s)
    return cjson.encode(s)
end

local function jarr(items)
    return '[' .. table.concat(items, ',') .. ']'
end

-- a flat field/value array (HGETALL, stream entry) as a JSON object
local function jobj_flat(flat)
    local t = {}
    for i = 1, #flat, 2 do
        t[#t + 1] = jstr(flat[i]) .. ':' .. jstr(flat[i + 1])
    end
    return '{' .. table.concat(t, ',') .. '}'
end

-- stored JSON embedded unchanged when it parses, else as a JSON string
local function jraw(s)
    if s and pcall(cjson.decode, s) then
        return s
    end
    return jstr(s or '')
end

local function field(flat, name)
    for i = 1, #flat, 2 do
        if flat[i] == name then
            return flat[i + 1]
        end
    end
    return nil
end

local function sorted_keys(set)
    local t = {}
    for k in pairs(set) do
        t[#t + 1] = k
    end
    table.sort(t)
    return t
end

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

-- <prefix>:<kind>:{<tag>}:<x>: profile, ids, timeline, timeline_old
local function kkey(prefix, kind, x)
    return prefix .. ':' .. kind .. ':' .. tag(x) .. ':' .. x
end

local function pkey(prefix, x)
    return kkey(prefix, 'profile', x)
end

-- <prefix>:idx:{<tag of h>}:<type>:<h>
local function xkey(prefix, t, h)
    return prefix .. ':idx:' .. tag(h) .. ':' .. t .. ':' .. h
end

-- the event stream of x's shard: where x's timeline ids are
local function skey(prefix, x)
    return prefix .. ':events:' .. tag(x)
end

-- a node (pid, aid) or identifier hash of the shard a step may touch
local function in_only(x)
    return ONLY == nil or shard_of(x) == ONLY
end

-- a set of nodes: those of ONLY's shard
local function only_nodes(set)
    if ONLY == nil then
        return set
    end
    local t = {}
    for x in pairs(set) do
        if shard_of(x) == ONLY then
            t[x] = true
        end
    end
    return t
end

-- <prefix>:<kind>:{<tag_i>} of every shard i, shard 0 first (with ONLY:
-- that shard's only)
local function shard_keys(prefix, kind)
    if ONLY then
        return {prefix .. ':' .. kind .. ':' .. shard_tag(ONLY)}
    end
    local t = {}
    for i = 0, NSH - 1 do
        t[i + 1] = prefix .. ':' .. kind .. ':' .. shard_tag(i)
    end
    return t
end

-- the copy of the suppression set that is read: shard 0's
local function sup_key(prefix)
    return prefix .. ':suppressed:' .. shard_tag(0)
end

-- segment name's members of shard i: <prefix>:segment:{<tag_i>}:<name>
local function seg_key(prefix, i, name)
    return prefix .. ':segment:' .. shard_tag(i) .. ':' .. name
end

-- the segments' clock of x's shard: <prefix>:segments:due:{<tag(x)>}
local function due_key(prefix, x)
    return prefix .. ':segments:due:' .. tag(x)
end

-- a segment's name as nginx allows it (cdp_segment)
local function is_segment_name(s)
    return #s <= 64 and s:find('^[%w_%-]+$') ~= nil
end

-- the segments a live profile is in, its field "segments" ("a,b"); a
-- name nginx would not allow is skipped: its key could be in another slot
local function segments_of(fields)
    local t = {}
    for name in string.gmatch(field(fields, 'segments') or '', '[^,]+') do
        if is_segment_name(name) then
            t[#t + 1] = name
        end
    end
    return t
end

--
-- An erasure's segment keys, those of shard ONLY (without: every shard's):
-- each person's live pid leaves the sets its "segments" (p.segs, as
-- segments_of) names, in the pid's shard, and every node of theirs leaves
-- the segments' clock of its own shard.  {key, type, member}..., the
-- types for check_types.
--
local function segment_plan(prefix, people)
    local t = {}
    for _, p in ipairs(people) do
        if in_only(p.pid) then
            -- (none in a journal entry of an older revision)
            for _, name in ipairs(p.segs or {}) do
                t[#t + 1] = {prefix .. ':segment:' .. tag(p.pid) .. ':'
                             .. name, 'set', p.pid}
            end
        end
        for x in pairs(only_nodes(p.nodes)) do
            t[#t + 1] = {due_key(prefix, x), 'zset', x}
        end
    end
    return t
end

local function segments_leave(plan)
    for _, e in ipairs(plan) do
        redis.call(e[2] == 'set' and 'SREM' or 'ZREM', e[1], e[3])
    end
end

-- ---------------------------------------------------------------------
-- arguments

--
-- Parses "type:value"; returns type, value or nil, message.  allow names
-- the accepted types.
--
local function parse_id(s, n, allow)
    local t, v = s:match('^([a-z_]+):(.*)$')
    if not t or not allow[t] then
        return nil, 'identifier ' .. n .. ': unknown type (want '
                    .. allow.names .. ')'
    end
    if HASHED[t] then
        if not is_h(v) then
            return nil, 'identifier ' .. n .. ': ' .. t
                        .. ' value is not 64 lowercase hex'
        end
    elseif t == 'anonymous_id' then
        if not is_aid(v) then
            return nil, 'identifier ' .. n
                        .. ': anonymous_id value is not 32 lowercase hex'
        end
    elseif not is_pid(v) then
        return nil, 'identifier ' .. n
                    .. ': profile_id value is not p<N> or 32 lowercase hex'
    end
    return t, v
end

local ALL_TYPES = {user_id = true, email = true, phone = true,
                   anonymous_id = true, profile_id = true,
                   names = 'user_id, email, phone, anonymous_id, profile_id'}
local SUPPRESSIBLE = {user_id = true, email = true, phone = true,
                      anonymous_id = true,
                      names = 'user_id, email, phone, anonymous_id'}

local function check_prefix(p)
    return p and #p > 0 and #p <= 128 and not p:find('%s')
end

--
-- ARGV[1]: "<prefix>" (WIRE_SHARDS shards) or "<prefix>|<N>" (the last
-- "|" followed by digits; N 1 to MAX_SHARDS).  Sets the shards of this
-- call (before any key is named) and returns the prefix, or nil.
--
local PREFIX_ERR = 'bad prefix (1 to 128 bytes, no spaces, then '
                   .. 'optionally |<shards>, 1 to ' .. MAX_SHARDS .. ')'

local function use_prefix(arg)
    if type(arg) ~= 'string' then
        return nil
    end
    local p, n = arg:match('^(.*)|([0-9]+)$')
    if p then
        n = #n <= 4 and tonumber(n)
        if not n or n < 1 or n > MAX_SHARDS then
            return nil
        end
    else
        p, n = arg, WIRE_SHARDS
    end
    if not check_prefix(p) then
        return nil
    end
    NSH = n
    TAG_OF = {}
    return p
end

--
-- Identifiers args[first..]: a list of {t, v} (duplicates dropped) or nil,
-- message.
--
local function parse_ids(args, first, allow)
    local n = #args - first + 1
    if n < 1 then
        return nil, 'want at least one identifier'
    end
    if n > MAX_IDS then
        return nil, 'at most ' .. MAX_IDS .. ' identifiers per call'
    end
    local list, seen = {}, {}
    for i = first, #args do
        local t, v = parse_id(args[i], i - first + 1, allow)
        if not t then
            return nil, v
        end
        if not seen[args[i]] then
            seen[args[i]] = true
            list[#list + 1] = {t, v}
        end
    end
    return list
end

--
-- The common head of the audited functions: prefix, receipt, role, now_ms,
-- identifier...  Returns a table or nil, message.
--
local function parse_request(keys, args, allow)
    if #keys ~= 0 then
        return nil, 'want 0 keys (the prefix is ARGV[1])'
    end
    if #args < 5 then
        return nil, 'want ARGV prefix, receipt, role, now_ms, identifier...'
    end
    local prefix = use_prefix(args[1])
    if not prefix then
        return nil, PREFIX_ERR
    end
    if #args[2] > 128 or not args[2]:find('^[%w_.:%-]+$') then
        return nil, 'bad receipt (1 to 128 of A-Z a-z 0-9 _ . : -)'
    end
    if #args[3] > 64 or not args[3]:find('^[%w_.%-]+$') then
        return nil, 'bad role (1 to 64 of A-Z a-z 0-9 _ . -)'
    end
    if #args[4] > 16 or not args[4]:find('^[0-9]+$') then
        return nil, 'bad now_ms (want milliseconds since the epoch)'
    end
    local ids, err = parse_ids(args, 5, allow)
    if not ids then
        return nil, err
    end
    return {prefix = prefix, receipt = args[2], role = args[3],
            now = args[4], ids = ids}
end

-- an identifier as the audit shows it: no raw anonymous id, ever
local function audit_form(t, v)
    if is_aid(v) then
        return t .. ':' .. aidh(v)
    end
    return t .. ':' .. v
end

local function audit_ids(ids)
    local t = {}
    for _, id in ipairs(ids) do
        t[#t + 1] = audit_form(id[1], id[2])
    end
    return table.concat(t, ',')
end

--
-- Fails unless each key is missing or of the given type, so that the
-- writes that follow cannot fail on WRONGTYPE half-way.
--
local function check_types(fn, want)
    for _, kt in ipairs(want) do
        local got = redis.call('TYPE', kt[1])['ok']
        if got ~= 'none' and got ~= kt[2] then
            return nil, kt[1] .. ' is a ' .. got .. ', not a ' .. kt[2]
        end
    end
    return true
end

-- ---------------------------------------------------------------------
-- resolution

--
-- Follows the links from profile:<x>.  Returns the live pid (or nil when
-- the chain ends at no key) and the list of the link nodes passed, or
-- raises an error after MAX_HOPS links (a cycle) or a malformed link.
--
local function walk(fn, prefix, x)
    local chain = {}
    local hops = 0
    while true do
        local key = pkey(prefix, x)
        local m = redis.call('HGET', key, 'merged_into')
        if not m then
            if redis.call('EXISTS', key) == 1 then
                return x, chain
            end
            return nil, chain
        end
        if not is_pid(m) then
            raise(fn, 'a link has a malformed merged_into')
        end
        chain[#chain + 1] = x
        hops = hops + 1
        if hops > MAX_HOPS then
            raise(fn, 'more than ' .. MAX_HOPS
                      .. ' links to follow (a cycle?)')
        end
        x = m
    end
end

--
-- The live pid an identifier {t, v} reaches (or nil), the links passed,
-- and the idx key it went through (user_id/email/phone).
--
local function resolve(fn, prefix, id)
    local t, v = id[1], id[2]
    if HASHED[t] then
        local idx = xkey(prefix, t, v)
        local pid = redis.call('GET', idx)
        if not pid then
            return nil, {}, nil
        end
        if not is_pid(pid) then
            raise(fn, 'an idx key holds a malformed pid')
        end
        local live, chain = walk(fn, prefix, pid)
        return live, chain, idx
    end
    local live, chain = walk(fn, prefix, v)
    return live, chain, nil
end

--
-- Everything that names one person, from their live pid: the profile's
-- hash and identifiers, and the sets of
--   nodes   every x whose profile:/ids:/timeline: keys are theirs: the pid,
--           former pids (profile_id members), aids, links passed (each
--           in x's shard, its timeline ids in x's shard's stream)
--   aids    their anonymous ids
--   hashed  "type:h" of their user_id/email/phone
--   values  every bare value merges entries may hold (pids, aids, h)
--
local function gather(prefix, pid)
    local p = {pid = pid, nodes = {}, aids = {}, hashed = {}, values = {},
               members = {}}
    p.fields = redis.call('HGETALL', pkey(prefix, pid))

    local members = redis.call('SMEMBERS', kkey(prefix, 'ids', pid))
    local mset = {}
    for _, m in ipairs(members) do
        mset[m] = true
    end
    if is_aid(pid) then
        mset['anonymous_id:' .. pid] = true
    end

    p.nodes[pid] = true
    p.values[pid] = true
    for m in pairs(mset) do
        local t, v = m:match('^([a-z_]+):(.*)$')
        if t and HASHED[t] and is_h(v) then
            p.hashed[m] = true
            p.values[v] = true
        elseif t == 'anonymous_id' and is_aid(v) then
            p.aids[v] = true
            p.nodes[v] = true
            p.values[v] = true
        elseif t == 'profile_id' and is_pid(v) then
            p.nodes[v] = true
            p.values[v] = true
        end
        -- anything else in the set is still listed, and goes with ids:<pid>
    end
    p.members = sorted_keys(mset)
    return p
end

-- adds the links passed on the way to a person to their nodes
local function add_chain(p, chain)
    for _, x in ipairs(chain) do
        p.nodes[x] = true
        p.values[x] = true
        if is_aid(x) then
            p.aids[x] = true
        end
    end
end

--
-- Resolves a request's identifiers to people.  Returns the people (in the
-- order first reached) and a pseudo-person for the identifiers that reach
-- nobody: their values and aids (the merges and consent_log entries that
-- may still name them), the links they passed (nodes) and their dangling
-- idx keys (keys).
--
local function people_of(fn, prefix, ids)
    local people, by_pid = {}, {}
    local orphans = {nodes = {}, aids = {}, values = {}, keys = {},
                     empty = true}
    for _, id in ipairs(ids) do
        local live, chain, idx = resolve(fn, prefix, id)
        if live then
            local p = by_pid[live]
            if not p then
                p = gather(prefix, live)
                by_pid[live] = p
                people[#people + 1] = p
            end
            add_chain(p, chain)
        else
            orphans.empty = false
            add_chain(orphans, chain)
            orphans.values[id[2]] = true
            if id[1] == 'anonymous_id' then
                orphans.aids[id[2]] = true
            end
            if not HASHED[id[1]] then
                -- leftovers: a timeline or a legacy browser record
                orphans.nodes[id[2]] = true
            end
            if idx and redis.call('EXISTS', idx) == 1 then
                orphans.keys[#orphans.keys + 1] = idx
            end
        end
    end
    return people, orphans
end

--
-- Sorts a list of {stream key, id} by id, oldest first (the same id in
-- two shards' streams: by stream key).  Sorted on padded keys in Lua's own
-- string order: a Lua comparison function would be called some 130,000
-- times for 10,000 ids.
--
local function sort_by_id(list)
    local sk, back = {}, {}
    for i, e in ipairs(list) do
        sk[i] = id_sort_key(e[2]) .. ' ' .. e[1]
        back[sk[i]] = e
    end
    table.sort(sk)
    for i, key in ipairs(sk) do
        list[i] = back[key]
    end
    return list
end

--
-- The events of a person: every timeline of their nodes, what their
-- timelines dropped past the cap (timeline_old) and their first_event,
-- each node's ids in its own shard's stream (a merge leaves the absorbed
-- profile's events where they are), deduplicated, malformed ids dropped.
-- Returns {by = {[stream key] = {id...}}, n = the ids, list = {{stream
-- key, id}...} oldest first when ordered (erasure needs no order: sorting
-- 10,000 ids would double its time)}.
--
local function timeline_ids(prefix, p, ordered)
    local ev = {by = {}, n = 0}
    local seen = {}
    for x in pairs(only_nodes(p.nodes)) do
        local sk = skey(prefix, x)
        local ids = redis.call('LRANGE', kkey(prefix, 'timeline', x), 0, -1)
        for _, id in ipairs(redis.call('LRANGE',
                                       kkey(prefix, 'timeline_old', x),
                                       0, -1))
        do
            ids[#ids + 1] = id
        end
        -- a profile's oldest event is its field first_event, not in the
        -- list (a link keeps the first_event of the profile it was)
        local first = redis.call('HGET', pkey(prefix, x), 'first_event')
        if first then
            ids[#ids + 1] = first
        end
        local s, out = seen[sk], ev.by[sk]
        if not s then
            s, out = {}, {}
            seen[sk], ev.by[sk] = s, out
        end
        for _, id in ipairs(ids) do
            if not s[id] and is_stream_id(id) then
                s[id] = true
                out[#out + 1] = id
                ev.n = ev.n + 1
            end
        end
    end
    if ordered then
        local list = {}
        for sk, ids in pairs(ev.by) do
            for _, id in ipairs(ids) do
                list[#list + 1] = {sk, id}
            end
        end
        ev.list = sort_by_id(list)
    end
    return ev
end

-- adds the events of person p (timeline_ids) to ev ({by = {[stream
-- key] = {id...}}, n = the ids}), for an erasure
local function add_timeline_ids(ev, prefix, p)
    for sk, ids in pairs(timeline_ids(prefix, p, false).by) do
        local to = ev.by[sk]
        if not to then
            to = {}
            ev.by[sk] = to
        end
        for _, id in ipairs(ids) do
            to[#to + 1] = id
        end
        ev.n = ev.n + #ids
    end
end

--
-- Calls fn(id, fields) for every entry of a stream, CHUNK entries per
-- XRANGE.
--
local function scan_stream(key, fn)
    local start = '-'
    while true do
        local entries = redis.call('XRANGE', key, start, '+', 'COUNT', CHUNK)
        for _, e in ipairs(entries) do
            fn(e[1], e[2])
        end
        if #entries < CHUNK then
            return
        end
        start = '(' .. entries[#entries][1]
    end
end

--
-- Calls fn(key, id, fields) for every entry of every shard's stream of
-- kind (merges, consent_log), then returns what fn returned that is not
-- nil, oldest first across the shards (by id, then stream key, as
-- sort_by_id).
--
local function scan_shards(prefix, kind, fn)
    local found, order = {}, {}
    for _, key in ipairs(shard_keys(prefix, kind)) do
        scan_stream(key, function(id, f)
            local hit = fn(key, id, f)
            if hit then
                local sk = id_sort_key(id) .. ' ' .. key
                order[#order + 1] = sk
                found[sk] = hit
            end
        end)
    end
    table.sort(order)
    local out = {}
    for j, sk in ipairs(order) do
        out[j] = found[sk]
    end
    return out
end

--
-- The merges entries (every shard's) whose from, to or id is a value of
-- one of the people, oldest first: {key = its stream, id = entry id,
-- fields = its fields, who = the set of the indexes of the people it
-- names}.
--
local function find_merges(prefix, people)
    local owner = {}
    for i, p in ipairs(people) do
        for v in pairs(p.values) do
            owner[v] = owner[v] or {}
            owner[v][i] = true
        end
    end
    return scan_shards(prefix, 'merges', function(key, id, f)
        local who
        for j = 1, #f, 2 do
            local name = f[j]
            if (name == 'from' or name == 'to' or name == 'id')
                    and owner[f[j + 1]] then
                who = who or {}
                for i in pairs(owner[f[j + 1]]) do
                    who[i] = true
                end
            end
        end
        if who then
            return {key = key, id = id, fields = f, who = who}
        end
    end)
end

--
-- The consent_log entries (every shard's) whose entry holds the aidh of
-- one of the people's aids (its "aid" member), oldest first, as
-- find_merges's.
--
local function find_consents(prefix, people)
    local hashes = {}
    for i, p in ipairs(people) do
        for aid in pairs(p.aids) do
            hashes[#hashes + 1] = {aidh(aid), i}
        end
    end
    if #hashes == 0 then
        return {}
    end
    return scan_shards(prefix, 'consent_log', function(key, id, f)
        local entry = field(f, 'entry') or ''
        local who
        for _, h in ipairs(hashes) do
            if entry:find(h[1], 1, true) then
                who = who or {}
                who[h[2]] = true
            end
        end
        if who then
            return {key = key, id = id, entry = entry, who = who}
        end
    end)
end

-- XDEL of a list of ids in chunks; returns the number deleted
local function xdel_all(key, ids)
    local n = 0
    for i = 1, #ids, CHUNK do
        n = n + redis.call('XDEL', key,
                           unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    end
    return n
end

-- XDEL of the ids of each stream of by ({[key] = {id...}}); the number
-- deleted
local function xdel_by(by)
    local n = 0
    for key, ids in pairs(by) do
        n = n + xdel_all(key, ids)
    end
    return n
end

-- the entries found ({key = .., id = ..}...) by stream key
local function group_by_key(found)
    local by = {}
    for _, e in ipairs(found) do
        local ids = by[e.key]
        if not ids then
            ids = {}
            by[e.key] = ids
        end
        ids[#ids + 1] = e.id
    end
    return by
end

-- The merges and consent_log entries of an erasure, by stream key: those
-- naming the people, and maybe those asked for that we hold no profile of
-- (orphans: a consent choice without analytics consent)
local function named_entries(prefix, people, orphans)
    local named = {}
    for _, p in ipairs(people) do
        named[#named + 1] = p
    end
    if not orphans.empty then
        named[#named + 1] = orphans
    end
    if #named == 0 then
        return {}, {}
    end
    return group_by_key(find_merges(prefix, named)),
           group_by_key(find_consents(prefix, named))
end

local function del_all(keys)
    for i = 1, #keys, CHUNK do
        redis.call('DEL', unpack(keys, i, math.min(i + CHUNK - 1, #keys)))
    end
end

--
-- Destinations (<prefix>:destinations lists them): the people's entries
-- leave every out-stream and dead-letter stream, pending or not, and each
-- destination that was sent something about one of them
-- (<prefix>:sent:{<tag>}:<pid>) is queued one deletion notice per person
-- (in the out-stream of the person's shard),
-- naming only what it was sent.  Read first (plan), written after
-- (apply).
--
-- An out-stream entry takes the id of its event when it can, but the
-- shards' streams each have their ids: the same id may be another
-- person's event in another shard.  So an entry is theirs when its "p"
-- (the profile it was counted on) is one of their nodes, or, naming no
-- profile, when it holds the very event stored under that id in one of
-- their streams (a dead letter: under its field "id").  Looked up by the
-- ids of their events, and, in streams short enough to scan, by scanning
-- (a replayed dead letter got a new id).
--
local SCAN_MAX = 100000

-- what a sent set records, into per ({[name] = {u = set, a = set}})
local function sent_read(key, per)
    for _, m in ipairs(redis.call('SMEMBERS', key)) do
        local name, t, v = m:match('^([^\t]+)\t([au]):(.+)$')
        if name then
            per[name] = per[name] or {u = {}, a = {}}
            per[name][t][v] = true
        end
    end
end

-- names: the destinations (nil: <prefix>:destinations is read)
local function dest_plan(prefix, people, ev, names)
    local plan = {names = names or redis.call('HKEYS',
                                              prefix .. ':destinations'),
                  sent = {}, keys = {}, out = {}}
    local nodes = {}
    for i, p in ipairs(people) do
        local per = {}
        for x in pairs(p.nodes) do
            nodes[x] = true
            if in_only(x) then
                local k = kkey(prefix, 'sent', x)
                sent_read(k, per)
                plan.keys[#plan.keys + 1] = k
            end
        end
        plan.sent[i] = per
    end
    if #plan.names == 0 then
        return plan
    end

    -- the streams each event id of theirs is in
    local where, ids = {}, {}
    for sk, list in pairs(ev.by) do
        for _, id in ipairs(list) do
            local w = where[id]
            if not w then
                w = {}
                where[id] = w
                ids[#ids + 1] = id
            end
            w[#w + 1] = sk
        end
    end

    local function theirs(f, eid)
        local pid = field(f, 'p')
        if pid and pid ~= '' then
            return nodes[pid] == true
        end
        local w, e = where[eid], field(f, 'event')
        if not w or not e then
            return false
        end
        for _, sk in ipairs(w) do
            local x = redis.call('XRANGE', sk, eid, eid)[1]
            if x and field(x[2], 'event') == e then
                return true
            end
        end
        return false
    end

    for _, name in ipairs(plan.names) do
        local found, keys = {}, {}
        local streams = {}
        for _, key in ipairs(shard_keys(prefix, 'out')) do
            streams[#streams + 1] = key .. ':' .. name
        end
        for _, key in ipairs(shard_keys(prefix, 'dead')) do
            streams[#streams + 1] = key .. ':' .. name
        end
        for _, key in ipairs(streams) do
            local list, seen = {}, {}
            local function take(id, f)
                if not seen[id] and theirs(f, field(f, 'id') or id) then
                    seen[id] = true
                    list[#list + 1] = id
                end
            end
            if redis.call('TYPE', key).ok == 'stream' then
                for _, id in ipairs(ids) do
                    local e = redis.call('XRANGE', key, id, id)[1]
                    if e then
                        take(id, e[2])
                    end
                end
                if redis.call('XLEN', key) <= SCAN_MAX then
                    scan_stream(key, take)
                end
            end
            found[key] = list
            keys[#keys + 1] = key
        end
        plan.out[name] = {keys = keys, ids = found}
    end
    return plan
end

local function dest_apply(prefix, req, people, plan)
    local removed, notices = 0, 0
    for _, name in ipairs(plan.names) do
        local o = plan.out[name]
        for _, key in ipairs(o.keys) do
            local ids = o.ids[key]
            if #ids > 0 then
                local groups = redis.call('XINFO', 'GROUPS', key)
                for _, g in ipairs(groups) do
                    local gname = field(g, 'name')
                    for i = 1, #ids, CHUNK do
                        redis.call('XACK', key, gname, unpack(ids, i,
                                   math.min(i + CHUNK - 1, #ids)))
                    end
                end
                removed = removed + xdel_all(key, ids)
            end
        end
    end
    for i in ipairs(people) do
        -- (with ONLY: the people of that shard only)
        local sent = in_only(people[i].pid) and plan.sent[i] or {}
        for name, got in pairs(sent) do
            local u, a = sorted_keys(got.u), sorted_keys(got.a)
            local uj, aj = {}, {}
            for _, v in ipairs(u) do uj[#uj + 1] = jstr(v) end
            for _, v in ipairs(a) do aj[#aj + 1] = jstr(v) end
            local notice = '{"type":"delete","receipt":' .. jstr(req.receipt)
                .. (#u == 1 and (',"userId":' .. uj[1]) or '')
                .. ',"userIds":[' .. table.concat(uj, ',')
                .. '],"anonymousIds":[' .. table.concat(aj, ',')
                .. '],"requestedAt":' .. req.now .. '}'
            redis.call('XADD', prefix .. ':out:' .. tag(people[i].pid)
                       .. ':' .. name, '*', 'delete', notice, 'p', '')
            notices = notices + 1
        end
    end
    del_all(plan.keys)
    return removed, notices
end

-- an audit entry; ids: what it names, already as the audit shows it
local function audit_as(prefix, req, op, ids, profiles, identifiers, events,
                        took)
    redis.call('XADD', prefix .. ':audit', '*',
               'receipt', req.receipt, 'op', op, 'role', req.role,
               'ids', ids, 'profiles', int(profiles),
               'identifiers', int(identifiers), 'events', int(events),
               'at', req.now, 'took_us', int(took))
end

local function audit(prefix, req, op, profiles, identifiers, events, took)
    audit_as(prefix, req, op, audit_ids(req.ids), profiles, identifiers,
             events, took)
end

-- {key, type} of every shard's key of kind
local function shard_types(t, prefix, kind, want)
    for _, key in ipairs(shard_keys(prefix, kind)) do
        t[#t + 1] = {key, want}
    end
    return t
end

-- the streams the writing functions read or write: every shard's events,
-- merges and consent_log, and the audit
local function stream_types(prefix, extra)
    local t = {}
    shard_types(t, prefix, 'events', 'stream')
    shard_types(t, prefix, 'merges', 'stream')
    shard_types(t, prefix, 'consent_log', 'stream')
    t[#t + 1] = {prefix .. ':audit', 'stream'}
    for _, kt in ipairs(extra or {}) do
        t[#t + 1] = kt
    end
    return t
end

-- ---------------------------------------------------------------------
-- the functions

--
-- cdp_admin_version
--   KEYS: none   ARGV: none
--   reply: the revision string of the loaded library
--
local function cdp_admin_version(keys, args)
    return REV
end

-- the head of cdp_resolve and cdp_profile: no keys, nargs ARGV, the
-- prefix and one identifier (ARGV[2]); {t, v} and the prefix, or nil and
-- what is wrong (nil for a bad count or prefix)
local function prefix_and_id(keys, args, nargs)
    if #keys ~= 0 or #args ~= nargs then
        return nil
    end
    local prefix = use_prefix(args[1])
    if not prefix then
        return nil
    end
    local t, v = parse_id(args[2], 1, ALL_TYPES)
    if not t then
        return nil, v
    end
    return {t, v}, prefix
end

--
-- cdp_resolve: the live profile an identifier reaches.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] identifier (type:value)
--   reply: the live pid, or nil when the identifier is unknown
--   errors: "ERR cdp_resolve: ..." on bad arguments, a malformed link, or
--           more than 64 links (a cycle)
--
local function cdp_resolve(keys, args)
    local fn = 'cdp_resolve'
    local id, prefix = prefix_and_id(keys, args, 2)
    if not id then
        return fail(fn, prefix or 'want 0 keys, ARGV prefix, identifier')
    end
    local live = resolve(fn, prefix, id)
    return live
end

-- cdp_profile's count of recent events
local function parse_recent(s)
    local recent = s:find('^[0-9]+$') and tonumber(s)
    if not recent or recent > MAX_RECENT then
        return nil, 'bad recent (want 0 to ' .. MAX_RECENT .. ')'
    end
    return recent
end

--
-- The newest (at most recent) events of a person still in their streams,
-- newest first: each node's timeline is newest first, its first_event
-- older still (timeline_old, older than the timeline, is not read); the
-- nodes' newest are merged by id.  A list of JSON {"id":..,"event":..}.
--
local function recent_found(prefix, p, recent, found)
    local seen = {}
    for x in pairs(only_nodes(p.nodes)) do
        local sk = skey(prefix, x)
        local tl = kkey(prefix, 'timeline', x)
        local s = seen[sk]
        if not s then
            s = {}
            seen[sk] = s
        end
        local got, at = 0, 0
        local function take(id)
            if not s[id] and is_stream_id(id) then
                s[id] = true
                local e = redis.call('XRANGE', sk, id, id)[1]
                if e then
                    found[#found + 1] = {sk, id, field(e[2], 'event')}
                    got = got + 1
                end
            end
        end
        while got < recent do
            local ids = redis.call('LRANGE', tl, at, at + CHUNK - 1)
            for _, id in ipairs(ids) do
                take(id)
                if got == recent then
                    break
                end
            end
            if #ids < CHUNK then
                -- the oldest event is the field first_event
                local first = redis.call('HGET', pkey(prefix, x),
                                         'first_event')
                if first and got < recent then
                    take(first)
                end
                break
            end
            at = at + CHUNK
        end
    end
end

-- the newest recent of found ({{stream key, id, event}...}), newest
-- first, as JSON
local function recent_json(found, recent)
    sort_by_id(found)
    local events = {}
    for i = #found, math.max(1, #found - recent + 1), -1 do
        local e = found[i]
        events[#events + 1] = '{"id":' .. jstr(e[2]) .. ',"event":'
            .. jraw(e[3]) .. '}'
    end
    return events
end

local function recent_events(prefix, p, recent)
    local found = {}
    if recent == 0 then
        return found
    end
    recent_found(prefix, p, recent, found)
    return recent_json(found, recent)
end

-- the JSON of cdp_profile for {t, v} (without its braces), its numbers
-- of recent events and identifiers; nil for an unknown identifier
local function profile_doc(fn, prefix, id, recent)
    local live = resolve(fn, prefix, id)
    if not live then
        return nil, 0, 0
    end
    local p = gather(prefix, live)
    local events = recent_events(prefix, p, recent)

    local idents = {}
    for _, m in ipairs(p.members) do
        idents[#idents + 1] = jstr(m)
    end
    return '"profile_id":' .. jstr(live) .. ',"fields":'
        .. jobj_flat(p.fields) .. ',"identifiers":' .. jarr(idents)
        .. ',"recent_events":' .. jarr(events), #events, #p.members
end

--
-- cdp_profile: one person's profile as JSON.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] identifier   ARGV[3] recent (0..1000)
--   reply: {"profile_id":..,"fields":{..},"identifiers":[..],
--           "recent_events":[{"id":..,"event":{..}}..]} (newest first,
--           of the timelines of all the person's nodes, each in its
--           shard's stream; ids no longer in the stream skipped), or nil
--           when the identifier is unknown
--   errors: "ERR cdp_profile: ..." as cdp_resolve, or a bad recent
--
local function cdp_profile(keys, args)
    local fn = 'cdp_profile'
    local id, prefix = prefix_and_id(keys, args, 3)
    if not id then
        return fail(fn, prefix or 'want 0 keys, ARGV prefix, identifier, '
                            .. 'recent')
    end
    local recent, rerr = parse_recent(args[3])
    if not recent then
        return fail(fn, rerr)
    end
    local doc = profile_doc(fn, prefix, id, recent)
    return doc and '{' .. doc .. '}'
end

--
-- cdp_read: cdp_profile for the admin endpoint, audited: who read whose
-- profile (op read; marketers read personal data too).
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt id   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5] one identifier   ARGV[6] recent (0..1000)
--   reply: as cdp_profile, with "receipt" first; nil (and still an audit
--          entry, profiles 0) when the identifier is unknown
--   errors: "ERR cdp_read: ..." as cdp_profile; nothing is written then
--
local function cdp_read(keys, args)
    local fn = 'cdp_read'
    local t0 = now_us()
    if #args ~= 6 then
        return fail(fn, 'want 0 keys, ARGV prefix, receipt, role, now_ms, '
                        .. 'identifier, recent')
    end
    local recent, rerr = parse_recent(args[6])
    if not recent then
        return fail(fn, rerr)
    end
    local req, err = parse_request(keys, {unpack(args, 1, 5)}, ALL_TYPES)
    if not req then
        return fail(fn, err)
    end
    local ok, terr = check_types(fn, stream_types(req.prefix))
    if not ok then
        return fail(fn, terr)
    end

    local doc, n_events, n_ids = profile_doc(fn, req.prefix, req.ids[1],
                                             recent)

    audit(req.prefix, req, 'read', doc and 1 or 0, n_ids, n_events,
          now_us() - t0)

    return doc and '{"receipt":' .. jstr(req.receipt) .. ',' .. doc .. '}'
end

--
-- cdp_erase: the right to be forgotten.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt id   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5..] identifiers (1 to 100)
--   Every profile the identifiers reach is erased: its profile, ids and
--   timeline keys and those of its former pids, anonymous ids and the
--   links passed (each in its shard); the idx keys of its identifiers; its
--   events (each node's timeline ids, in the node's shard's
--   <prefix>:events:{<tag>}); the entries of every shard's
--   <prefix>:merges:{<tag>} whose from, to or id is one of its pids, aids
--   or hashes; those of every shard's <prefix>:consent_log:{<tag>} holding
--   aidh of one of its aids; the legacy <prefix>:browser:<aid> records.
--   Then every user_id/email/phone identifier and anonymous_id:<aidh> of
--   each aid (of the profiles and of the identifiers asked for, known or
--   not) goes to every shard's copy of <prefix>:suppressed:{<tag>}, and
--   one entry to <prefix>:audit (op erase).
--   Destinations: see dest_plan() above.
--   reply: JSON {"receipt":..,"profiles":N,"identifiers":N,"events":N,
--          "merges":N,"consent_log":N,"suppressed":N,
--          "anonymous_ids":[aidh of every browser suppressed],
--          "destination_entries":N,"deletion_notices":N,"took_us":N}
--   errors: "ERR cdp_erase: ..." on bad arguments, a key of the wrong
--           type, a malformed link or a cycle; nothing is written then
--
local function cdp_erase(keys, args)
    local fn = 'cdp_erase'
    local t0 = now_us()
    local req, err = parse_request(keys, args, ALL_TYPES)
    if not req then
        return fail(fn, err)
    end
    local prefix = req.prefix
    local ok, terr = check_types(fn, shard_types(stream_types(prefix),
                                                 prefix, 'suppressed', 'set'))
    if not ok then
        return fail(fn, terr)
    end

    -- read everything first

    local people, orphans = people_of(fn, prefix, req.ids)

    local ev, dels, suppress = {by = {}, n = 0}, {}, {}
    local identifiers = 0
    local function node_keys(x)
        dels[#dels + 1] = pkey(prefix, x)
        dels[#dels + 1] = kkey(prefix, 'ids', x)
        dels[#dels + 1] = kkey(prefix, 'timeline', x)
        dels[#dels + 1] = kkey(prefix, 'timeline_old', x)
        if is_aid(x) then
            dels[#dels + 1] = prefix .. ':browser:' .. x
        end
    end

    -- the events of each, by stream
    local function add_events(p)
        add_timeline_ids(ev, prefix, p)
    end

    local done = {}
    for _, p in ipairs(people) do
        identifiers = identifiers + #p.members
        add_events(p)
        for x in pairs(p.nodes) do
            if not done[x] then
                done[x] = true
                node_keys(x)
            end
        end
        for m in pairs(p.hashed) do
            local t, h = m:match('^([a-z_]+):(.*)$')
            dels[#dels + 1] = xkey(prefix, t, h)
            suppress[m] = true
        end
        for aid in pairs(p.aids) do
            suppress['anonymous_id:' .. aidh(aid)] = true
        end
    end
    add_events(orphans)
    for x in pairs(orphans.nodes) do
        if not done[x] then
            done[x] = true
            node_keys(x)
        end
    end
    for aid in pairs(orphans.aids) do
        suppress['anonymous_id:' .. aidh(aid)] = true
    end
    for _, k in ipairs(orphans.keys) do
        dels[#dels + 1] = k
    end
    for _, id in ipairs(req.ids) do
        if HASHED[id[1]] then
            suppress[id[1] .. ':' .. id[2]] = true
        elseif id[1] == 'anonymous_id' then
            suppress['anonymous_id:' .. aidh(id[2])] = true
        end
    end

    local merge_ids, consent_ids = named_entries(prefix, people, orphans)

    local plan = dest_plan(prefix, people, ev)

    -- out of every segment (the live profile's "segments" field), and
    -- off the segments' clock, each in its shard
    for _, p in ipairs(people) do
        p.segs = segments_of(p.fields)
    end
    local segs = segment_plan(prefix, people)
    ok, terr = check_types(fn, segs)
    if not ok then
        return fail(fn, terr)
    end

    -- then write

    segments_leave(segs)

    local removed, notices = dest_apply(prefix, req, people, plan)
    local events = xdel_by(ev.by)
    local merges = xdel_by(merge_ids)
    local consents = xdel_by(consent_ids)
    del_all(dels)

    -- every shard's copy of the suppression set (cdp_ingest reads its
    -- shard's)
    local sup = sorted_keys(suppress)
    for _, key in ipairs(shard_keys(prefix, 'suppressed')) do
        for i = 1, #sup, CHUNK do
            redis.call('SADD', key,
                       unpack(sup, i, math.min(i + CHUNK - 1, #sup)))
        end
    end

    local took = now_us() - t0
    audit(prefix, req, 'erase', #people, identifiers, events, took)

    -- the browsers' names, for nginx to refuse their cookies at once
    local aids = {}
    for _, m in ipairs(sup) do
        local h = string.match(m, '^anonymous_id:(%x+)$')
        if h then
            aids[#aids + 1] = jstr(h)
        end
    end

    return '{"receipt":' .. jstr(req.receipt) .. ',"profiles":'
        .. int(#people) .. ',"identifiers":' .. int(identifiers)
        .. ',"events":' .. int(events) .. ',"merges":' .. int(merges)
        .. ',"consent_log":' .. int(consents) .. ',"suppressed":'
        .. int(#sup) .. ',"anonymous_ids":[' .. table.concat(aids, ',')
        .. '],"destination_entries":' .. int(removed)
        .. ',"deletion_notices":' .. int(notices)
        .. ',"took_us":' .. int(took) .. '}'
end

--
-- cdp_export: the right of access; writes only its audit entry.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt id   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5..] identifiers (1 to 100)
--   reply: JSON {"receipt":..,"profiles":[{"profile_id":..,"fields":{..},
--          "identifiers":[..],"events":[{"id":..,"event":{..}}..],
--          "merges":[{..fields..}..],"consent_log":[{"id":..,
--          "entry":{..}}..]}..]}: one per profile reached (none for
--          unknown identifiers); events are those of the timelines of
--          all the person's nodes (each in its shard's stream) still in
--          their stream, oldest first (by id); merges and consent_log
--          entries of every shard, oldest first
--   errors: "ERR cdp_export: ..." as cdp_erase; nothing is written then
--
local function cdp_export(keys, args)
    local fn = 'cdp_export'
    local t0 = now_us()
    local req, err = parse_request(keys, args, ALL_TYPES)
    if not req then
        return fail(fn, err)
    end
    local prefix = req.prefix
    local ok, terr = check_types(fn, stream_types(prefix))
    if not ok then
        return fail(fn, terr)
    end

    local people = people_of(fn, prefix, req.ids)
    local merges = find_merges(prefix, people)
    local consents = find_consents(prefix, people)

    local out, n_ids, n_events = {}, 0, 0
    for i, p in ipairs(people) do
        local events = {}
        for _, se in ipairs(timeline_ids(prefix, p, true).list) do
            local id = se[2]
            local e = redis.call('XRANGE', se[1], id, id)[1]
            if e then
                events[#events + 1] = '{"id":' .. jstr(id) .. ',"event":'
                    .. jraw(field(e[2], 'event')) .. '}'
            end
        end
        local ms = {}
        for _, m in ipairs(merges) do
            if m.who[i] then
                ms[#ms + 1] = jobj_flat(m.fields)
            end
        end
        local cs = {}
        for _, c in ipairs(consents) do
            if c.who[i] then
                cs[#cs + 1] = '{"id":' .. jstr(c.id) .. ',"entry":'
                    .. jraw(c.entry) .. '}'
            end
        end
        local idents = {}
        for _, m in ipairs(p.members) do
            idents[#idents + 1] = jstr(m)
        end
        n_ids = n_ids + #p.members
        n_events = n_events + #events
        out[#out + 1] = '{"profile_id":' .. jstr(p.pid) .. ',"fields":'
            .. jobj_flat(p.fields) .. ',"identifiers":' .. jarr(idents)
            .. ',"events":' .. jarr(events) .. ',"merges":' .. jarr(ms)
            .. ',"consent_log":' .. jarr(cs) .. '}'
    end

    audit(prefix, req, 'export', #people, n_ids, n_events, now_us() - t0)

    return '{"receipt":' .. jstr(req.receipt) .. ',"profiles":' .. jarr(out)
        .. '}'
end

--
-- cdp_unsuppress: lets identifiers be tracked again (after an erasure
-- made by mistake, or on the person's request).
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt id   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5..] identifiers (1 to 100): user_id/email/phone hashed,
--             anonymous_id raw (hashed here with aidh)
--   Removed from every shard's copy of <prefix>:suppressed:{<tag>}.
--   reply: JSON {"receipt":..,"removed":N} (N: those that were in a
--          copy); audited (op unsuppress, identifiers = N)
--   errors: "ERR cdp_unsuppress: ..." on bad arguments (profile_id is not
--           suppressible) or a key of the wrong type; nothing is written
--
local function cdp_unsuppress(keys, args)
    local fn = 'cdp_unsuppress'
    local t0 = now_us()
    local req, err = parse_request(keys, args, SUPPRESSIBLE)
    if not req then
        return fail(fn, err)
    end
    local prefix = req.prefix
    local copies = shard_keys(prefix, 'suppressed')
    local ok, terr = check_types(fn, shard_types(
        {{prefix .. ':audit', 'stream'}}, prefix, 'suppressed', 'set'))
    if not ok then
        return fail(fn, terr)
    end
    local members = {}
    for _, id in ipairs(req.ids) do
        members[#members + 1] = audit_form(id[1], id[2])
    end
    -- removed: the members that were in any copy (all equal, normally)
    local was = {}
    for _, key in ipairs(copies) do
        for j, hit in ipairs(redis.call('SMISMEMBER', key,
                                        unpack(members))) do
            if hit == 1 then
                was[j] = true
            end
        end
    end
    local removed = 0
    for _ in pairs(was) do
        removed = removed + 1
    end
    for _, key in ipairs(copies) do
        redis.call('SREM', key, unpack(members))
    end
    audit(prefix, req, 'unsuppress', 0, removed, 0, now_us() - t0)
    return '{"receipt":' .. jstr(req.receipt) .. ',"removed":'
        .. int(removed) .. '}'
end

--
-- cdp_suppressed: which identifiers are suppressed (for ingest).
--   KEYS: none
--   ARGV[1] prefix   ARGV[2..] identifiers (1 to 100): user_id/email/phone
--             hashed, anonymous_id raw (hashed here with aidh)
--   reply: an array of 1 (suppressed) or 0, one per identifier, in order
--          (in shard 0's copy <prefix>:suppressed:{<tag_0>})
--   errors: "ERR cdp_suppressed: ..." on bad arguments
--
local function cdp_suppressed(keys, args)
    local fn = 'cdp_suppressed'
    local prefix = #keys == 0 and #args >= 2 and use_prefix(args[1])
    if not prefix then
        return fail(fn, 'want 0 keys, ARGV prefix, identifier...')
    end
    if #args - 1 > MAX_IDS then
        return fail(fn, 'at most ' .. MAX_IDS .. ' identifiers per call')
    end
    local members = {}
    for i = 2, #args do
        local t, v = parse_id(args[i], i - 1, SUPPRESSIBLE)
        if not t then
            return fail(fn, v)
        end
        members[#members + 1] = audit_form(t, v)
    end
    return redis.call('SMISMEMBER', sup_key(prefix), unpack(members))
end

--
-- cdp_audit: the audit trail.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] since_ms   ARGV[3] count (1..1000)
--   reply: JSON array, oldest first, of the entries appended at or after
--          since_ms (by Redis's clock: the entry id; "at" is the caller's
--          time): [{"id":..,"receipt":..,"op":..,"role":..,"ids":[..],
--          "profiles":N,"identifiers":N,"events":N,"at":N,"took_us":N}..]
--   errors: "ERR cdp_audit: ..." on bad arguments
--
local function cdp_audit(keys, args)
    local fn = 'cdp_audit'
    local prefix = #keys == 0 and #args == 3 and use_prefix(args[1])
    if not prefix then
        return fail(fn, 'want 0 keys, ARGV prefix, since_ms, count')
    end
    if #args[2] > 16 or not args[2]:find('^[0-9]+$') then
        return fail(fn, 'bad since_ms (want milliseconds since the epoch)')
    end
    local count = args[3]:find('^[0-9]+$') and tonumber(args[3])
    if not count or count < 1 or count > MAX_AUDIT then
        return fail(fn, 'bad count (want 1 to ' .. MAX_AUDIT .. ')')
    end
    local key = prefix .. ':audit'
    local ok, terr = check_types(fn, {{key, 'stream'}})
    if not ok then
        return fail(fn, terr)
    end
    local NUMERIC = {profiles = true, identifiers = true, events = true,
                     at = true, took_us = true}
    local out = {}
    for _, e in ipairs(redis.call('XRANGE', key, args[2], '+', 'COUNT',
                                  count)) do
        local t = {'"id":' .. jstr(e[1])}
        local f = e[2]
        for i = 1, #f, 2 do
            local name, v = f[i], f[i + 1]
            local j
            if name == 'ids' then
                local items = {}
                for s in v:gmatch('[^,]+') do
                    items[#items + 1] = jstr(s)
                end
                j = jarr(items)
            elseif NUMERIC[name] and v:find('^[0-9]+$') then
                j = v
            else
                j = jstr(v)
            end
            t[#t + 1] = jstr(name) .. ':' .. j
        end
        out[#out + 1] = '{' .. table.concat(t, ',') .. '}'
    end
    return jarr(out)
end

--
-- cdp_replay's request: prefix, receipt, role, now_ms, destination (the
-- receipt and role as the audited functions take them: they go into the
-- audit); nil and the error reply, or the request
--
local function replay_request(fn, keys, args)
    local prefix = #keys == 0 and #args == 5 and use_prefix(args[1])
    if not prefix
            or #args[2] > 128 or not args[2]:find('^[%w_.:%-]+$')
            or #args[3] > 64 or not args[3]:find('^[%w_.%-]+$')
            or #args[4] > 16 or not args[4]:find('^[0-9]+$')
            or #args[5] > 64 or not args[5]:find('^[%w_%-]+$') then
        return nil, fail(fn, 'want 0 keys, ARGV prefix, receipt, role, '
                         .. 'now_ms, destination')
    end
    return {prefix = prefix, receipt = args[2], role = args[3],
            now = args[4], name = args[5]}
end

--
-- The oldest (at most left) entries of the dead-letter stream dead back
-- into the out-stream out (their event or delete, and p; new ids), each
-- XDEL beside its XADD: an entry is moved once.  Returns the entries
-- moved and the entries taken (one without those fields is only
-- deleted).
--
local function replay_shard(dead, out, left)
    local moved, list = 0, {}
    if left > 0 then
        list = redis.call('XRANGE', dead, '-', '+', 'COUNT', left)
    end
    for _, e in ipairs(list) do
        local f = {}
        for _, k in ipairs({'event', 'delete', 'p'}) do
            local v = field(e[2], k)
            if v then
                f[#f + 1] = k
                f[#f + 1] = v
            end
        end
        if #f > 0 then
            redis.call('XADD', out, '*', unpack(f))
            moved = moved + 1
        end
        redis.call('XDEL', dead, e[1])
    end
    return moved, #list
end

local REPLAY_MAX = 10000    -- dead letters moved by one request

local function replay_json(req, name, moved)
    return '{"receipt":' .. jstr(req.receipt) .. ',"destination":'
        .. jstr(name) .. ',"replayed":' .. int(moved) .. '}'
end

--
-- cdp_replay: a destination's dead letters back into its out-stream (the
-- admin role), oldest first, at most 10000 a call; each gets a new id.
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt id   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5] the destination's name
--   reply: JSON {"receipt":..,"destination":..,"replayed":N}; audited
--          (op replay, events = N)
--   errors: "ERR cdp_replay: ..." on bad arguments or a key of the wrong
--           type; nothing is written then
--
local function cdp_replay(keys, args)
    local fn = 'cdp_replay'
    local t0 = now_us()
    local req, err = replay_request(fn, keys, args)
    if not req then
        return err
    end
    local prefix, name = req.prefix, req.name
    -- each shard's dead letters back to its own out-stream
    local pairs_, want = {}, {{prefix .. ':audit', 'stream'}}
    local outs, deads = shard_keys(prefix, 'out'), shard_keys(prefix, 'dead')
    for i = 1, #outs do
        local out, dead = outs[i] .. ':' .. name, deads[i] .. ':' .. name
        pairs_[i] = {dead, out}
        want[#want + 1] = {dead, 'stream'}
        want[#want + 1] = {out, 'stream'}
    end
    local ok, terr = check_types(fn, want)
    if not ok then
        return fail(fn, terr)
    end
    local moved, left = 0, REPLAY_MAX
    for _, pr in ipairs(pairs_) do
        local m, taken = replay_shard(pr[1], pr[2], left)
        moved, left = moved + m, left - taken
    end
    audit_as(prefix, req, 'replay', 'destination:' .. name, 0, 0, moved,
             now_us() - t0)
    return replay_json(req, name, moved)
end

--
-- Segments (store/README.md, "Segments"): segment NAME's members are
-- sharded, <prefix>:segment:{<tag_i>}:<NAME> holding those of shard i, and
-- a profile's fields are in its own shard: a count sums the shards' sets,
-- a page of members walks the shards in order.  cdp_admin_x does the
-- same on Redis Cluster, a shard a call.
--

-- the audit entry of a segment operation (no person named: a segment)
local function audit_segment(prefix, rq, op, name, n, took)
    redis.call('XADD', prefix .. ':audit', '*', 'receipt', rq.receipt,
               'op', op, 'role', rq.role, 'ids', 'segment:' .. name,
               'profiles', int(n), 'identifiers', '0', 'events', '0',
               'at', rq.now, 'took_us', int(took))
end

-- the prefix, or nil and the error
local function segment_args(fn, keys, args, min)
    local prefix = #keys == 0 and #args >= min and use_prefix(args[1])
    if not prefix
            or #args[2] > 128 or not args[2]:find('^[%w_.:%-]+$')
            or #args[3] > 64 or not args[3]:find('^[%w_.%-]+$')
            or #args[4] > 16 or not args[4]:find('^[0-9]+$') then
        return nil, fail(fn, 'want 0 keys, ARGV prefix, receipt, role, '
                         .. 'now_ms, ...')
    end
    return prefix
end

-- cdp_segments' request from its ARGV (after segment_args): receipt,
-- role, now, the segments' names and rules; or nil and the error
local function segments_request(fn, args)
    local q = {rq = {receipt = args[2], role = args[3], now = args[4]},
               names = {}, rules = {}}
    for i = 5, #args - 1, 2 do
        if not is_segment_name(args[i]) then
            return nil, fail(fn, 'bad segment name at ' .. i)
        end
        q.names[#q.names + 1] = args[i]
        q.rules[#q.rules + 1] = args[i + 1]
    end
    return q
end

-- segment names' members in shard i, added to counts
local function count_shard(prefix, i, names, counts)
    for j, name in ipairs(names) do
        counts[j] = (counts[j] or 0) + redis.call('SCARD',
                                                  seg_key(prefix, i, name))
    end
end

local function segments_json(q, counts)
    local out = {}
    for j, name in ipairs(q.names) do
        out[j] = '{"name":' .. jstr(name) .. ',"rule":' .. jstr(q.rules[j])
            .. ',"members":' .. int(counts[j] or 0) .. '}'
    end
    return jarr(out)
end

--
-- cdp_segments: the segments with their rule and member count (the
-- marketer's list; audited, op segments).
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5..] name, rule, name, rule... (the rules as nginx.conf has them)
--   reply: JSON [{"name":..,"rule":..,"members":N}..], N the SCARD of
--          the name's sets summed over the shards
--
local function cdp_segments(keys, args)
    local fn = 'cdp_segments'
    local t0 = now_us()
    local prefix, err = segment_args(fn, keys, args, 4)
    if not prefix then
        return err
    end
    local q, qerr = segments_request(fn, args)
    if not q then
        return qerr
    end
    local counts = {}
    for i = 0, NSH - 1 do
        count_shard(prefix, i, q.names, counts)
    end
    audit_segment(prefix, q.rq, 'segments', '*', 0, now_us() - t0)
    return segments_json(q, counts)
end

--
-- A page's cursor: "0" (the first page, and after the last) or
-- "<shard>.<cursor>", the shard to go on with and SSCAN's cursor in its
-- set (both in decimal, without leading zeros; shard < N, cursor <
-- 2^64).  Returns shard, cursor or nil.
--
local function parse_cursor(cur)
    if cur == '0' then
        return 0, '0'
    end
    local s, c = cur:match('^(%d+)%.(%d+)$')
    if not s or #s > 4 or #c > 20 or s:find('^0.') or c:find('^0.')
       or (#c == 20 and c > '18446744073709551615')
    then
        return nil
    end
    s = tonumber(s)
    if s >= NSH then
        return nil
    end
    return s, c
end

-- cdp_segment_members' request from its ARGV (after segment_args), or
-- nil and the error
local function members_request(fn, args)
    local name, format = args[5], args[8]
    local shard, cursor = parse_cursor(args[6])
    local count = args[7]:find('^[0-9]+$') and #args[7] <= 4
                  and tonumber(args[7])
    if not is_segment_name(name) or not shard
       or not count or count < 1 or count > 1000
       or (format ~= 'json' and format ~= 'ndjson' and format ~= 'csv')
    then
        return nil, fail(fn, 'bad name, cursor, count or format')
    end
    local q = {rq = {receipt = args[2], role = args[3], now = args[4]},
               name = name, shard = shard, cursor = cursor, count = count,
               format = format, fields = {}}
    for i = 9, #args do
        q.fields[#q.fields + 1] = args[i]
    end
    return q
end

local PAGE_SCANS = 1000     -- SSCAN calls in one shard's set, a call

--
-- Members of segment q.name in shard s, from SSCAN cursor c on, into rows
-- ({pid, {the values of q.fields, false for none}}...), until q.count
-- rows or the end of the shard's set (or PAGE_SCANS calls of SSCAN: a
-- short page).  Returns SSCAN's cursor to go on with in the shard ("0":
-- its set is done).  A member of another shard (none, by the layout)
-- comes without fields: its profile is in another slot.
--
local function page_shard(prefix, q, s, c, rows)
    local key = seg_key(prefix, s, q.name)
    local fields = q.fields
    for _ = 1, PAGE_SCANS do
        local page = redis.call('SSCAN', key, c, 'COUNT', q.count - #rows)
        c = page[1]
        for _, pid in ipairs(page[2]) do
            local vals = {}
            if #fields > 0 and shard_of(pid) == s then
                vals = redis.call('HMGET', pkey(prefix, pid),
                                  unpack(fields))
            end
            rows[#rows + 1] = {pid, vals}
        end
        if c == '0' or #rows >= q.count then
            break
        end
    end
    return c
end

-- after page_shard left cursor c in shard s: the page's cursor when the
-- page ends there, or nil and the shard to go on with
local function page_next(q, s, c, rows)
    if c ~= '0' then
        return s .. '.' .. c        -- full (or short: SSCAN's calls)
    end
    s = s + 1
    if s >= NSH then
        return '0'
    end
    if #rows >= q.count then
        return s .. '.0'
    end
    return nil, s
end

local function csv(v)
    v = v or ''
    if v:find('[",\r\n]') then
        return '"' .. v:gsub('"', '""') .. '"'
    end
    return v
end

-- a page's text: json, the "members" array; ndjson and csv, the lines
local function page_text(q, rows)
    local fields = q.fields
    if q.format == 'csv' then
        local lines = {}
        local head = {'profile_id'}
        for _, f in ipairs(fields) do
            head[#head + 1] = csv(f)
        end
        lines[1] = table.concat(head, ',')
        for _, row in ipairs(rows) do
            local l = {csv(row[1])}
            for j = 1, #fields do
                l[#l + 1] = csv(row[2][j] or '')
            end
            lines[#lines + 1] = table.concat(l, ',')
        end
        return table.concat(lines, '\r\n') .. '\r\n'
    end

    local items = {}
    for _, row in ipairs(rows) do
        local flat = {}
        for j = 1, #fields do
            if row[2][j] then
                flat[#flat + 1] = fields[j]
                flat[#flat + 1] = row[2][j]
            end
        end
        items[#items + 1] = '{"profile_id":' .. jstr(row[1])
            .. ',"fields":' .. jobj_flat(flat) .. '}'
    end
    if q.format == 'ndjson' then
        return #items > 0 and table.concat(items, '\n') .. '\n' or ''
    end
    return jarr(items)
end

local function page_json(q, cursor, text)
    return '{"segment":' .. jstr(q.name) .. ',"cursor":' .. jstr(cursor)
        .. ',"members":' .. text .. '}'
end

--
-- cdp_segment_members: one page of a segment's members, with the profile
-- fields asked for (audited, op segment_read).
--   KEYS: none
--   ARGV[1] prefix   ARGV[2] receipt   ARGV[3] role   ARGV[4] now_ms
--   ARGV[5] name   ARGV[6] cursor ("0" to start, then the one the
--   previous page gave: "<shard>.<SSCAN cursor>")
--   ARGV[7] count (1..1000)   ARGV[8] format: json, ndjson or csv
--   ARGV[9..] profile field names
--   The shards' sets in turn, from the cursor's on, until count members
--   (or a few more: SSCAN's COUNT is a hint) or the last shard's end; a
--   page may be short, even empty, before the last.  A member comes at
--   least once over the pages while it stays in the segment (SSCAN's
--   guarantee: twice if its set is rehashed between two pages).
--   reply: json: {"segment":..,"cursor":"..","members":[{"profile_id":..,
--          "fields":{..}}..]} ("0": the last page); ndjson and csv:
--          {cursor, text} (a profile a line; csv: a header line first,
--          RFC 4180 quoting)
--
local function cdp_segment_members(keys, args)
    local fn = 'cdp_segment_members'
    local t0 = now_us()
    local prefix, err = segment_args(fn, keys, args, 8)
    if not prefix then
        return err
    end
    local q, qerr = members_request(fn, args)
    if not q then
        return qerr
    end

    local rows = {}
    local s, c = q.shard, q.cursor
    local cursor
    while true do
        c = page_shard(prefix, q, s, c, rows)
        cursor, s = page_next(q, s, c, rows)
        if cursor then
            break
        end
        c = '0'
    end
    audit_segment(prefix, q.rq, 'segment_read', q.name, #rows,
                  now_us() - t0)

    local text = page_text(q, rows)
    if q.format == 'json' then
        return page_json(q, cursor, text)
    end
    return {cursor, text}
end

-- ---------------------------------------------------------------------
-- Redis Cluster: erase, export, read, the segments' views, unsuppress and
-- replay as sagas of one-slot calls
--
-- On a cluster an FCALL touches the keys of one slot only, and a person's
-- keys are in many (store/README.md, "Shards").  So there nginx drives
-- cdp_admin_x (below): each call does the steps of one slot and names the
-- next call's key and the saga's state (JSON, the X below), as cdp_xid
-- does for an identify (store/cdp.lua).  The steps:
--
--   resolution  idx (an identifier's slot), walk (each link's slot; the
--               live profile's fields and ids read in its slot, as
--               people_of does)
--   erase       dests (<prefix>:destinations), chk (each shard: the
--               key types cdp_erase checks, what each destination was
--               sent about the people's nodes of that shard), jnl (the
--               audit's slot: the journal; nothing is written before),
--               sup (each shard: its copy of the suppression set, all
--               before any deletion), del (each shard: what of the
--               people is in it), fin (the audit's slot: the audit
--               entry, and the journal entry ends)
--   export      col (each shard: events of the people's nodes there,
--               merges and consent_log entries naming them), fin
--   read        rcol (each shard holding nodes: the newest events), fin
--   segments    scnt (each shard: its members of each segment), fin
--   members     mem (a shard at a time from the cursor's: a page's
--               members there with their fields, until the page is
--               full or the last shard is done), fin
--   unsuppress  uns (each shard, shard 0's copy last: the identifiers
--               leave its copy of the suppression set), fin
--   replay      rpl (each shard from 0, until 10000 are moved: its dead
--               letters back into its out-stream), fin
--
-- X: op, p (prefix), n (shards), id (the saga's: receipt.<us>), rq (the
-- request: receipt, role, now, ids, recent), st (next step), k (its
-- key), s (a shard, or for read an index of sh), us (time spent in
-- Redis), i, x, ch, hops, ix (the resolution: identifier, node, links
-- passed, idx key), P (the people, as gather makes them), O (the
-- orphans, as people_of), dn (destinations), sent (per person: what
-- each destination was sent), sup (the suppression entries), nid
-- (identifiers), c (erase's counts: events, merges, consent_log,
-- destination entries, deletion notices), E, M, C (export: each
-- person's events, the merges and consent entries), sh, F (read: the
-- shards, the events found), sg (segments and members: the request, as
-- segments_request and members_request make it), cnt (segments: the
-- counts), cu, R (members: SSCAN's cursor in shard s, the rows found),
-- m, hit (unsuppress: the set's members to remove, as the audit shows
-- them; '1' for each found in a copy so far, else '0'), dst, left, moved
-- (replay: the destination, the entries a shard may still take, those
-- moved).
--
-- The segments' sagas begin in the audit's slot too (the arguments
-- checked), visit the shards in their slots and end there: the audit
-- entry and the reply.  They read only, but for the audit entry.  So do
-- unsuppress and replay, which write a shard in each of its steps: they
-- have no journal, because what a stopped one leaves is no privacy risk
-- (some copies of the suppression set still suppress the person: it
-- fails closed; some dead letters still wait), and asking again (the
-- request was answered 503) completes it.
--
-- Each step is idempotent: a del, uns or rpl step's work and counts are
-- recorded in its slot (<prefix>:adone:{<tag>}:<id>, a day for del, an
-- hour for the others) and a step sent again does nothing and returns
-- the counts recorded; fin writes the audit entry once (the
-- journal entry it deletes in the same call, or for the others its own
-- record).  An erase's journal (<prefix>:erasing:{<prefix>:audit},
-- id -> the state as the sup steps start; <prefix>:erasing_at:{...} by
-- time) lets a sweep resume an erasure whose driver stopped.
--

local AX = {}           -- the steps
local X                 -- the saga's state
local AP                -- this call's prefix
local AT0               -- this call's start (us)
local ARESULT           -- the saga's reply, once done (false: nil)

local AX_STALE = 10000  -- ms: a journal entry a sweep resumes
local AX_KEEP = 86400   -- s: an erasure's records of steps done kept
local AX_KEEP_READ = 3600   -- s: another op's record of its audit

local AX_FN = {erase = 'cdp_erase', export = 'cdp_export', read = 'cdp_read',
               segments = 'cdp_segments', members = 'cdp_segment_members',
               unsuppress = 'cdp_unsuppress', replay = 'cdp_replay'}

-- the steps a state may name
local AX_STEPS = {idx = true, walk = true, dests = true, chk = true,
                  jnl = true, sup = true, del = true, col = true,
                  rcol = true, scnt = true, mem = true, uns = true,
                  rpl = true, fin = true}

-- the slot of a key, as Redis Cluster computes it
local function key_slot(key)
    local a = string.find(key, '{', 1, true)
    if a then
        local b = string.find(key, '}', a + 1, true)
        if b and b > a + 1 then
            key = string.sub(key, a + 1, b - 1)
        end
    end
    return crc16(key) % 16384
end

local function ax_fn()
    return AX_FN[X.op]
end

local function audit_key()
    return AP .. ':audit'
end

-- the hash tag of the audit's slot (<prefix>:audit has no braces: its
-- whole name is hashed)
local function audit_tag()
    return '{' .. AP .. ':audit}'
end

local function journal_key()
    return AP .. ':erasing:' .. audit_tag()
end

local function journal_at_key()
    return AP .. ':erasing_at:' .. audit_tag()
end

-- the record of this saga's step in the slot of the tag t
local function done_key(t)
    return AP .. ':adone:' .. t .. ':' .. X.id
end

local function sh_key(kind, i)
    return AP .. ':' .. kind .. ':' .. shard_tag(i)
end

local function ax_raise(msg)
    raise(ax_fn(), msg)
end

local function ax_check(want)
    local ok, terr = check_types(ax_fn(), want)
    if not ok then
        ax_raise(terr)
    end
end

-- the three streams of shard i, as the standalone functions check them
local function shard_streams(i)
    return {{sh_key('events', i), 'stream'}, {sh_key('merges', i), 'stream'},
            {sh_key('consent_log', i), 'stream'}}
end

-- the sorted numbers of a set of numbers
local function sorted_numbers(set)
    local t = {}
    for k in pairs(set) do
        t[#t + 1] = k
    end
    table.sort(t)
    return t
end

-- resolution: people_of (and for read profile_doc's resolve and gather),
-- an identifier at a time

function AX.next_id()
    X.i = X.i + 1
    local id = X.rq.ids[X.i]
    if not id then
        return AX.resolved()
    end
    X.ch, X.hops, X.ix = {}, 0, ''
    if HASHED[id[1]] then
        X.x = ''
        return xkey(AP, id[1], id[2]), 'idx'
    end
    X.x = id[2]
    return pkey(AP, id[2]), 'walk'
end

-- an identifier's idx key (its slot)
function AX.idx()
    local id = X.rq.ids[X.i]
    local idx = xkey(AP, id[1], id[2])
    local pid = redis.call('GET', idx)
    if not pid then
        return AX.reached(nil)
    end
    if not is_pid(pid) then
        ax_raise('an idx key holds a malformed pid')
    end
    X.ix, X.x = idx, pid
    return pkey(AP, pid), 'walk'
end

-- a profile or link (its slot): walk()'s loop, a hop a step
function AX.walk()
    local x = X.x
    local key = pkey(AP, x)
    local m = redis.call('HGET', key, 'merged_into')
    if not m then
        if redis.call('EXISTS', key) == 1 then
            return AX.reached(x)
        end
        return AX.reached(nil)
    end
    if not is_pid(m) then
        ax_raise('a link has a malformed merged_into')
    end
    X.ch[#X.ch + 1] = x
    X.hops = X.hops + 1
    if X.hops > MAX_HOPS then
        ax_raise('more than ' .. MAX_HOPS .. ' links to follow (a cycle?)')
    end
    X.x = m
    return pkey(AP, m), 'walk'
end

-- identifier X.i reaches the live pid live (gathered here, in its slot)
-- or nobody: people_of's loop body
function AX.reached(live)
    local id = X.rq.ids[X.i]
    if live then
        local p
        for _, q in ipairs(X.P) do
            if q.pid == live then
                p = q
                break
            end
        end
        if not p then
            p = gather(AP, live)
            X.P[#X.P + 1] = p
        end
        if X.op ~= 'read' then
            add_chain(p, X.ch)
        end
    elseif X.op ~= 'read' then
        local o = X.O
        o.empty = false
        add_chain(o, X.ch)
        o.values[id[2]] = true
        if id[1] == 'anonymous_id' then
            o.aids[id[2]] = true
        end
        if not HASHED[id[1]] then
            o.nodes[id[2]] = true
        end
        if X.ix ~= '' then
            -- it held a pid when read: a dangling idx key
            o.keys[#o.keys + 1] = X.ix
        end
    end
    return AX.next_id()
end

-- every identifier resolved: the op's next phase
function AX.resolved()
    X.x, X.ch, X.hops, X.ix = nil, nil, nil, nil
    X.s = 0
    if X.op == 'erase' then
        -- the fields serve segments only: their names carried along (and
        -- into the journal), not the rest
        for _, p in ipairs(X.P) do
            p.segs = segments_of(p.fields)
            p.fields = nil
        end
        return AP .. ':destinations', 'dests'
    end
    if X.op == 'export' then
        X.E, X.M, X.C = {}, {}, {}
        if #X.P == 0 then
            return audit_key(), 'fin'
        end
        for i = 1, #X.P do
            X.E[i] = {}
        end
        return sh_key('events', 0), 'col'
    end
    -- read: the shards of the person's nodes
    local p = X.P[1]
    if not p or X.rq.recent == 0 then
        return audit_key(), 'fin'
    end
    local set = {}
    for x in pairs(p.nodes) do
        set[shard_of(x)] = true
    end
    X.sh, X.s, X.F = sorted_numbers(set), 1, {}
    return sh_key('events', X.sh[1]), 'rcol'
end

-- the next shard of a pass over every shard, or what follows it
local function next_shard(kind, st, after)
    X.s = X.s + 1
    if X.s < NSH then
        return sh_key(kind, X.s), st
    end
    X.s = 0
    return after()
end

-- erase

-- <prefix>:destinations (its slot)
function AX.dests()
    X.dn = redis.call('HKEYS', AP .. ':destinations')
    X.sent = {}
    for i = 1, #X.P do
        X.sent[i] = {}
    end
    return sh_key('events', 0), 'chk'
end

-- shard s: the types cdp_erase checks there, and what each destination
-- was sent about the people's nodes of the shard (for the deletion
-- notices, queued in the person's shard)
function AX.chk()
    local s = X.s
    ONLY = s
    local want = shard_streams(s)
    want[#want + 1] = {sh_key('suppressed', s), 'set'}
    for _, e in ipairs(segment_plan(AP, X.P)) do
        want[#want + 1] = e
    end
    ax_check(want)
    for i, p in ipairs(X.P) do
        for x in pairs(only_nodes(p.nodes)) do
            sent_read(kkey(AP, 'sent', x), X.sent[i])
        end
    end
    return next_shard('events', 'chk', function()
        return audit_key(), 'jnl'
    end)
end

-- the audit's slot: the suppression entries, and the journal entry
-- (unless this saga is done already: a step sent again)
function AX.jnl()
    ax_check({{audit_key(), 'stream'}, {journal_key(), 'hash'},
              {journal_at_key(), 'zset'}})
    local suppress, nid = {}, 0
    for _, p in ipairs(X.P) do
        nid = nid + #p.members
        for m in pairs(p.hashed) do
            suppress[m] = true
        end
        for aid in pairs(p.aids) do
            suppress['anonymous_id:' .. aidh(aid)] = true
        end
    end
    for aid in pairs(X.O.aids) do
        suppress['anonymous_id:' .. aidh(aid)] = true
    end
    for _, id in ipairs(X.rq.ids) do
        if HASHED[id[1]] then
            suppress[id[1] .. ':' .. id[2]] = true
        elseif id[1] == 'anonymous_id' then
            suppress['anonymous_id:' .. aidh(id[2])] = true
        end
    end
    X.sup, X.nid = sorted_keys(suppress), nid
    for _, p in ipairs(X.P) do
        p.members = nil         -- counted: no longer needed
    end
    X.c = {0, 0, 0, 0, 0}
    X.s, X.st, X.k = 0, 'sup', sh_key('suppressed', 0)
    if redis.call('EXISTS', done_key(audit_tag())) == 0 then
        local t = redis.call('TIME')
        redis.call('HSET', journal_key(), X.id, cjson.encode(X))
        redis.call('ZADD', journal_at_key(), tonumber(t[1]) * 1000
                   + math.floor(tonumber(t[2]) / 1000), X.id)
    end
    return X.k, 'sup'
end

-- shard s: its copy of the suppression set, before anything is deleted
function AX.sup()
    local key = sh_key('suppressed', X.s)
    local sup = X.sup
    for i = 1, #sup, CHUNK do
        redis.call('SADD', key, unpack(sup, i, math.min(i + CHUNK - 1, #sup)))
    end
    return next_shard('suppressed', 'sup', function()
        return sh_key('events', 0), 'del'
    end)
end

-- cdp_erase's writes, those in shard ONLY; its counts
local function erase_shard()
    local prefix = AP
    local people, orphans = X.P, X.O
    local ev, dels = {by = {}, n = 0}, {}

    local function add_events(p)
        add_timeline_ids(ev, prefix, p)
    end

    -- (the legacy <prefix>:browser:<aid>, in no shard, is not on a
    -- cluster)
    local done = {}
    local function node_keys(x)
        if not done[x] then
            done[x] = true
            dels[#dels + 1] = pkey(prefix, x)
            dels[#dels + 1] = kkey(prefix, 'ids', x)
            dels[#dels + 1] = kkey(prefix, 'timeline', x)
            dels[#dels + 1] = kkey(prefix, 'timeline_old', x)
        end
    end

    for _, p in ipairs(people) do
        add_events(p)
        for x in pairs(only_nodes(p.nodes)) do
            node_keys(x)
        end
        for m in pairs(p.hashed) do
            local t, h = m:match('^([a-z_]+):(.*)$')
            if in_only(h) then
                dels[#dels + 1] = xkey(prefix, t, h)
            end
        end
    end
    add_events(orphans)
    for x in pairs(only_nodes(orphans.nodes)) do
        node_keys(x)
    end
    for _, k in ipairs(orphans.keys) do
        if in_only(k:match(':([^:]*)$')) then
            dels[#dels + 1] = k
        end
    end

    local merge_ids, consent_ids = named_entries(prefix, people, orphans)

    local plan = dest_plan(prefix, people, ev, X.dn)
    -- the notices name what was sent about every node, each read in its
    -- shard (chk)
    plan.sent = X.sent

    -- the people's segment sets and due times of this shard: with the
    -- names a live pid of this shard gained since the saga read its
    -- field (an event before the suppression, the segments' clock), their
    -- keys checked here (a key of another type is left, not an error
    -- half-way through the step)
    for _, p in ipairs(people) do
        if in_only(p.pid) then
            local had = {}
            for _, name in ipairs(p.segs or {}) do
                had[name] = true
            end
            local now = redis.call('HGET', pkey(prefix, p.pid), 'segments')
            for name in string.gmatch(now or '', '[^,]+') do
                if not had[name] and is_segment_name(name) then
                    local k = prefix .. ':segment:' .. tag(p.pid) .. ':'
                              .. name
                    local t = redis.call('TYPE', k).ok
                    if t == 'set' or t == 'none' then
                        p.segs = p.segs or {}
                        p.segs[#p.segs + 1] = name
                        had[name] = true
                    end
                end
            end
        end
    end
    segments_leave(segment_plan(prefix, people))
    local removed, notices = dest_apply(prefix, X.rq, people, plan)
    local events = xdel_by(ev.by)
    local merges = xdel_by(merge_ids)
    local consents = xdel_by(consent_ids)
    del_all(dels)
    return {events, merges, consents, removed, notices}
end

-- shard s: what of the people is in it; once (its record)
function AX.del()
    local s = X.s
    ONLY = s
    local rk = done_key(shard_tag(s))
    local rec = redis.call('GET', rk)
    local c = rec and cjson.decode(rec)
    if not c then
        c = erase_shard()
        redis.call('SET', rk, cjson.encode(c), 'EX', AX_KEEP)
    end
    for j = 1, 5 do
        X.c[j] = X.c[j] + c[j]
    end
    return next_shard('events', 'del', function()
        return audit_key(), 'fin'
    end)
end

-- export

-- shard s: the events of the people's nodes there, and the merges and
-- consent_log entries naming them
function AX.col()
    local s = X.s
    ONLY = s
    ax_check(shard_streams(s))
    for i, p in ipairs(X.P) do
        local E = X.E[i]
        for sk, ids in pairs(timeline_ids(AP, p, false).by) do
            for _, id in ipairs(ids) do
                local e = redis.call('XRANGE', sk, id, id)[1]
                if e then
                    E[#E + 1] = {sk, id, '{"id":' .. jstr(id) .. ',"event":'
                                 .. jraw(field(e[2], 'event')) .. '}'}
                end
            end
        end
    end
    local function who(set)
        return sorted_numbers(set)
    end
    for _, m in ipairs(find_merges(AP, X.P)) do
        X.M[#X.M + 1] = {id_sort_key(m.id) .. ' ' .. m.key,
                         jobj_flat(m.fields), who(m.who)}
    end
    for _, c in ipairs(find_consents(AP, X.P)) do
        X.C[#X.C + 1] = {id_sort_key(c.id) .. ' ' .. c.key,
                         '{"id":' .. jstr(c.id) .. ',"entry":'
                         .. jraw(c.entry) .. '}', who(c.who)}
    end
    return next_shard('events', 'col', function()
        return audit_key(), 'fin'
    end)
end

-- read

-- a shard of the person's nodes: their newest events there
function AX.rcol()
    local s = X.sh[X.s]
    ONLY = s
    ax_check(shard_streams(s))
    recent_found(AP, X.P[1], X.rq.recent, X.F)
    X.s = X.s + 1
    if X.sh[X.s] then
        return sh_key('events', X.sh[X.s]), 'rcol'
    end
    return audit_key(), 'fin'
end

-- segments

-- shard s: its members of each segment
function AX.scnt()
    ONLY = X.s
    count_shard(AP, X.s, X.sg.names, X.cnt)
    return next_shard('segments:due', 'scnt', function()
        return audit_key(), 'fin'
    end)
end

-- shard s: the page's members there from cursor cu, with their fields
-- (in the same shard); then the next shard, or the page's end
function AX.mem()
    local s = X.s
    ONLY = s
    X.cu = page_shard(AP, X.sg, s, X.cu, X.R)
    local cursor, next_s = page_next(X.sg, s, X.cu, X.R)
    if cursor then
        X.cu = cursor
        return audit_key(), 'fin'
    end
    X.s, X.cu = next_s, '0'
    return sh_key('segments:due', next_s), 'mem'
end

-- unsuppress

-- the hits of a and b ('1' or '0' each), either's
local function hits_or(a, b)
    local t = {}
    for j = 1, #a do
        t[j] = (a:sub(j, j) == '1' or b:sub(j, j) == '1') and '1' or '0'
    end
    return table.concat(t)
end

-- shard s: the identifiers leave its copy of the suppression set; which
-- were there is recorded, so that the step sent again (the copy no longer
-- has them) counts them all the same.  From the last shard down: shard
-- 0's copy, the one the edges read (cdp_suppressed, nginx's sync), goes
-- last, so that a browser is let in at the edges once every shard's
-- store would take its events.
function AX.uns()
    local s = X.s
    local key = sh_key('suppressed', s)
    local rk = done_key(shard_tag(s))
    local hit = redis.call('GET', rk)
    if not hit then
        ax_check({{key, 'set'}})
        local t = {}
        for j, found in ipairs(redis.call('SMISMEMBER', key,
                                          unpack(X.m))) do
            t[j] = found == 1 and '1' or '0'
        end
        hit = table.concat(t)
        redis.call('SREM', key, unpack(X.m))
        redis.call('SET', rk, hit, 'EX', AX_KEEP_READ)
    end
    X.hit = hits_or(X.hit, hit)
    if s == 0 then
        return audit_key(), 'fin'
    end
    X.s = s - 1
    return sh_key('suppressed', X.s), 'uns'
end

-- replay

local function dead_key(i)
    return sh_key('dead', i) .. ':' .. X.dst
end

-- shard s: the oldest of its dead letters (as many as the request may
-- still move) back into its out-stream, each XADD beside its XDEL; its
-- counts recorded, so that the step sent again moves nothing more and
-- counts the same.  Shard 0 first, as cdp_replay; no call after the
-- 10000th entry.
function AX.rpl()
    local s = X.s
    local rk = done_key(shard_tag(s))
    local rec = redis.call('GET', rk)
    local c = rec and cjson.decode(rec)
    if not c then
        local dead, out = dead_key(s), sh_key('out', s) .. ':' .. X.dst
        ax_check({{dead, 'stream'}, {out, 'stream'}})
        c = {replay_shard(dead, out, X.left)}
        redis.call('SET', rk, cjson.encode(c), 'EX', AX_KEEP_READ)
    end
    X.moved, X.left = X.moved + c[1], X.left - c[2]
    X.s = s + 1
    if X.left > 0 and X.s < NSH then
        return dead_key(X.s), 'rpl'
    end
    return audit_key(), 'fin'
end

-- the last step (the audit's slot): the audit entry, once, and the reply

local function by_first(a, b)
    return a[1] < b[1]
end

local function fin_erase(took)
    local rq = X.rq
    if redis.call('HDEL', journal_key(), X.id) == 1 then
        audit(AP, rq, 'erase', #X.P, X.nid, X.c[1], took)
    end
    redis.call('ZREM', journal_at_key(), X.id)
    local aids = {}
    for _, m in ipairs(X.sup) do
        local h = string.match(m, '^anonymous_id:(%x+)$')
        if h then
            aids[#aids + 1] = jstr(h)
        end
    end
    local c = X.c
    return '{"receipt":' .. jstr(rq.receipt) .. ',"profiles":'
        .. int(#X.P) .. ',"identifiers":' .. int(X.nid)
        .. ',"events":' .. int(c[1]) .. ',"merges":' .. int(c[2])
        .. ',"consent_log":' .. int(c[3]) .. ',"suppressed":'
        .. int(#X.sup) .. ',"anonymous_ids":[' .. table.concat(aids, ',')
        .. '],"destination_entries":' .. int(c[4])
        .. ',"deletion_notices":' .. int(c[5])
        .. ',"took_us":' .. int(took) .. '}'
end

local function fin_export(first, took)
    table.sort(X.M, by_first)
    table.sort(X.C, by_first)
    local out, n_ids, n_events = {}, 0, 0
    for i, p in ipairs(X.P) do
        local events = {}
        for _, e in ipairs(sort_by_id(X.E[i])) do
            events[#events + 1] = e[3]
        end
        local function mine(list)
            local t = {}
            for _, m in ipairs(list) do
                for _, j in ipairs(m[3]) do
                    if j == i then
                        t[#t + 1] = m[2]
                        break
                    end
                end
            end
            return t
        end
        local idents = {}
        for _, m in ipairs(p.members) do
            idents[#idents + 1] = jstr(m)
        end
        n_ids = n_ids + #p.members
        n_events = n_events + #events
        out[#out + 1] = '{"profile_id":' .. jstr(p.pid) .. ',"fields":'
            .. jobj_flat(p.fields) .. ',"identifiers":' .. jarr(idents)
            .. ',"events":' .. jarr(events) .. ',"merges":'
            .. jarr(mine(X.M)) .. ',"consent_log":' .. jarr(mine(X.C))
            .. '}'
    end
    if first then
        audit(AP, X.rq, 'export', #X.P, n_ids, n_events, took)
    end
    return '{"receipt":' .. jstr(X.rq.receipt) .. ',"profiles":' .. jarr(out)
        .. '}'
end

local function fin_read(first, took)
    local p = X.P[1]
    local events = p and recent_json(X.F or {}, X.rq.recent) or {}
    if first then
        audit(AP, X.rq, 'read', p and 1 or 0, p and #p.members or 0,
              #events, took)
    end
    if not p then
        return false
    end
    local idents = {}
    for _, m in ipairs(p.members) do
        idents[#idents + 1] = jstr(m)
    end
    return '{"receipt":' .. jstr(X.rq.receipt) .. ',"profile_id":'
        .. jstr(p.pid) .. ',"fields":' .. jobj_flat(p.fields)
        .. ',"identifiers":' .. jarr(idents) .. ',"recent_events":'
        .. jarr(events) .. '}'
end

local function fin_segments(first, took)
    if first then
        audit_segment(AP, X.rq, 'segments', '*', 0, took)
    end
    return segments_json(X.sg, X.cnt)
end

-- json: cdp_segment_members' reply; ndjson and csv: the cursor, a
-- newline, the text (a saga's result is one string)
local function fin_members(first, took)
    local q = X.sg
    if first then
        audit_segment(AP, X.rq, 'segment_read', q.name, #X.R, took)
    end
    local text = page_text(q, X.R)
    if q.format == 'json' then
        return page_json(q, X.cu, text)
    end
    return X.cu .. '\n' .. text
end

local function fin_unsuppress(first, took)
    local removed = select(2, string.gsub(X.hit, '1', ''))
    if first then
        audit_as(AP, X.rq, 'unsuppress', table.concat(X.m, ','), 0, removed,
                 0, took)
    end
    return '{"receipt":' .. jstr(X.rq.receipt) .. ',"removed":'
        .. int(removed) .. '}'
end

local function fin_replay(first, took)
    if first then
        audit_as(AP, X.rq, 'replay', 'destination:' .. X.dst, 0, 0,
                 X.moved, took)
    end
    return replay_json(X.rq, X.dst, X.moved)
end

local AX_FIN = {export = fin_export, read = fin_read,
                segments = fin_segments, members = fin_members,
                unsuppress = fin_unsuppress, replay = fin_replay}

function AX.fin()
    ax_check({{audit_key(), 'stream'}})
    local took = X.us + now_us() - AT0
    local rk = done_key(audit_tag())
    if X.op == 'erase' then
        ARESULT = fin_erase(took)
        redis.call('SET', rk, '1', 'EX', AX_KEEP)
    else
        local first = redis.call('SET', rk, '1', 'NX', 'EX', AX_KEEP_READ)
        ARESULT = AX_FIN[X.op](first ~= false and first ~= nil, took)
    end
    return '', nil
end

-- a saga's id: the receipt and Redis's clock, receipt.<us>
local function ax_id(receipt)
    local t = redis.call('TIME')
    return receipt .. '.' .. t[1] .. string.format('%06d', tonumber(t[2]))
end

-- the first call of the segments' sagas, rargs the standalone function's
-- ARGV: nil and the error reply, or the first step's key
local function ax_begin_segments(keys, op, fn, rargs)
    local prefix, err = segment_args(fn, {}, rargs,
                                     op == 'members' and 8 or 4)
    if not prefix then
        return nil, err
    end
    AP = prefix
    if keys[1] ~= audit_key() then
        return nil, fail('cdp_admin_x', 'begin wants the key <prefix>:audit')
    end
    local q
    q, err = (op == 'members' and members_request
              or segments_request)(fn, rargs)
    if not q then
        return nil, err
    end
    local ok, terr = check_types(fn, {{audit_key(), 'stream'}})
    if not ok then
        return nil, fail(fn, terr)
    end
    X = {op = op, p = AP, n = NSH, id = ax_id(q.rq.receipt), rq = q.rq,
         sg = q, us = 0, s = 0}
    q.rq = nil
    if op == 'members' then
        X.s, X.cu, X.R = q.shard, q.cursor, {}
        return sh_key('segments:due', X.s), 'mem'
    end
    X.cnt = {}
    for j = 1, #q.names do
        X.cnt[j] = 0
    end
    if #q.names == 0 then
        return audit_key(), 'fin'
    end
    return sh_key('segments:due', 0), 'scnt'
end

-- the first call of unsuppress and replay, rargs the standalone
-- function's ARGV: nil and the error reply, or the first step's key
local function ax_begin_shards(keys, op, fn, rargs)
    local req, err
    if op == 'replay' then
        req, err = replay_request(fn, {}, rargs)
        if not req then
            return nil, err
        end
    else
        req, err = parse_request({}, rargs, SUPPRESSIBLE)
        if not req then
            return nil, fail(fn, err)
        end
    end
    AP = req.prefix
    if keys[1] ~= audit_key() then
        return nil, fail('cdp_admin_x', 'begin wants the key <prefix>:audit')
    end
    local ok, terr = check_types(fn, {{audit_key(), 'stream'}})
    if not ok then
        return nil, fail(fn, terr)
    end
    X = {op = op, p = AP, n = NSH, id = ax_id(req.receipt),
         rq = {receipt = req.receipt, role = req.role, now = req.now},
         us = 0}
    if op == 'replay' then
        X.dst, X.left, X.moved, X.s = req.name, REPLAY_MAX, 0, 0
        return dead_key(0), 'rpl'
    end
    -- the members as the set holds them (an aid as its aidh): no raw
    -- browser id in the state
    X.m = {}
    for _, id in ipairs(req.ids) do
        X.m[#X.m + 1] = audit_form(id[1], id[2])
    end
    X.hit, X.s = string.rep('0', #X.m), NSH - 1
    return sh_key('suppressed', X.s), 'uns'
end

-- the first call: the request checked as the standalone function checks
-- it (the same errors); nil and the error reply, or the first step's key
local function ax_begin(keys, args)
    local op = args[3]
    local fn = AX_FN[op or '']
    if not fn then
        return nil, fail('cdp_admin_x', 'unknown op (want erase, export, '
                         .. 'read, segments, members, unsuppress or '
                         .. 'replay)')
    end
    if #args < 7 then
        return nil, fail('cdp_admin_x', 'want ARGV prefix, begin, op, '
                         .. 'receipt, role, now_ms, recent, identifier...')
    end
    local recent = 0
    if op == 'read' then
        if #args ~= 8 then
            return nil, fail(fn, 'want 0 keys, ARGV prefix, receipt, role, '
                             .. 'now_ms, identifier, recent')
        end
        local rerr
        recent, rerr = parse_recent(args[7])
        if not recent then
            return nil, fail(fn, rerr)
        end
    end
    local rargs = {args[1], args[4], args[5], args[6]}
    for i = 8, #args do
        rargs[#rargs + 1] = args[i]
    end
    if op == 'segments' or op == 'members' then
        return ax_begin_segments(keys, op, fn, rargs)
    end
    if op == 'unsuppress' or op == 'replay' then
        return ax_begin_shards(keys, op, fn, rargs)
    end
    local req, err = parse_request({}, rargs, ALL_TYPES)
    if not req then
        return nil, fail(fn, err)
    end
    AP = req.prefix
    if keys[1] ~= audit_key() then
        return nil, fail('cdp_admin_x', 'begin wants the key <prefix>:audit')
    end
    local want = {{audit_key(), 'stream'}}
    if op == 'erase' then
        want[2] = {journal_key(), 'hash'}
        want[3] = {journal_at_key(), 'zset'}
    end
    local ok, terr = check_types(fn, want)
    if not ok then
        return nil, fail(fn, terr)
    end
    X = {op = op, p = AP, n = NSH, id = ax_id(req.receipt),
         rq = {receipt = req.receipt, role = req.role, now = req.now,
               ids = req.ids, recent = recent},
         P = {}, O = {nodes = {}, aids = {}, values = {}, keys = {},
                      empty = true},
         i = 0, us = 0}
    return AX.next_id()
end

-- a sweep (the audit's slot): an erasure whose journal entry is older
-- than age ms (at most AX_STALE) resumes from its plan: the entry's time
-- renewed, suppression and deletion again (each del step's record gives
-- the counts of a shard done before), then fin
local function ax_sweep(age)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stale = math.min(age or AX_STALE, AX_STALE)
    local jk, zk = journal_key(), journal_at_key()
    for _ = 1, 100 do
        local id = redis.call('ZRANGEBYSCORE', zk, '-inf', now - stale,
                              'LIMIT', 0, 1)[1]
        if not id then
            break
        end
        local plan = redis.call('HGET', jk, id)
        if not plan then
            redis.call('ZREM', zk, id)
        else
            redis.call('ZADD', zk, now, id)
            local ok, s = pcall(cjson.decode, plan)
            if ok and type(s) == 'table' and s.op == 'erase' and s.p == AP
               and s.n == NSH and s.id == id
            then
                X = s
                X.st, X.s, X.us, X.c = 'sup', 0, 0, {0, 0, 0, 0, 0}
                X.sw = 1
                return sh_key('suppressed', 0), 'sup'
            end
            -- (a plan of other shards: left to its own sweeper)
        end
    end
    return '', nil
end

--
-- cdp_admin_x: cdp_erase, cdp_export, cdp_read, cdp_segments,
-- cdp_segment_members, cdp_unsuppress and cdp_replay on Redis Cluster, a
-- saga of one-slot calls (above) that nginx drives.
--   KEYS[1]  the first call and a sweep: <prefix>:audit; then the key
--            the previous call named
--   ARGV[1]  prefix ("<prefix>" or "<prefix>|<N>", as the others)
--   ARGV[2]  "begin", then ARGV[3] op (erase, export, read, segments,
--            members, unsuppress or replay), ARGV[4] receipt, ARGV[5]
--            role, ARGV[6] now_ms, ARGV[7] recent (read; "0" otherwise),
--            ARGV[8..] identifiers (1 to 100; read: 1), or for segments,
--            members and replay the standalone function's ARGV[5..]
--            (segments: name, rule...; members: name, cursor, count,
--            format, field...; replay: the destination);
--            or the state the previous call returned; or "sweep"
--            ("sweep:<ms>": a journal entry older than that, at most
--            10000)
--   reply: {next key, next state, ms to wait before the next call,
--          result}: next key "" ends the saga and result is the
--          standalone function's reply (nil: a read of nobody; members
--          as ndjson or csv: the cursor, "\n", the text); else result is
--          nil.  A sweep: the next call of the erasure it resumes, or ""
--          when none is left.
--   The steps of the slot at hand run in this call; a step sent again
--   does nothing twice.
--   errors: as the standalone functions ("ERR cdp_erase: ..."),
--           the first call's before anything is written; "ERR
--           cdp_admin_x: ..." for a malformed call or state; "TRYAGAIN
--           cdp_admin_x: ..." when the slot is moving (send it again)
--
local function cdp_admin_x(keys, args)
    AT0 = now_us()
    ARESULT = false
    if #keys ~= 1 or #args < 2 then
        return fail('cdp_admin_x', 'want 1 key, ARGV prefix, then begin '
                    .. '..., a state or sweep')
    end
    local key, st
    if args[2] == 'begin' then
        key, st = ax_begin(keys, args)
        if not key then
            return st
        end
    else
        if #args ~= 2 then
            return fail('cdp_admin_x', 'want 1 key, ARGV prefix and a state '
                        .. '(or sweep)')
        end
        AP = use_prefix(args[1])
        if not AP then
            return fail('cdp_admin_x', PREFIX_ERR)
        end
        local age = string.match(args[2], '^sweep:?(%d*)$')
        if age then
            if keys[1] ~= audit_key() then
                return fail('cdp_admin_x', 'sweep wants the key '
                            .. '<prefix>:audit')
            end
            key, st = ax_sweep(tonumber(age))
        else
            local ok, s = pcall(cjson.decode, args[2])
            if not ok or type(s) ~= 'table' or not AX_FN[s.op]
               or s.p ~= AP or s.n ~= NSH or not AX_STEPS[s.st]
               or type(s.k) ~= 'string'
               or key_slot(s.k) ~= key_slot(keys[1])
            then
                return fail('cdp_admin_x', 'a malformed state (or not '
                            .. 'the key it names)')
            end
            X = s
            key, st = AX[X.st]()
        end
    end

    -- the next steps of this slot, here
    local slot = key_slot(keys[1])
    while key ~= '' and key_slot(key) == slot do
        ONLY = nil
        X.st, X.k = st, key
        key, st = AX[st]()
    end
    ONLY = nil
    if key == '' then
        return {'', '', 0, ARESULT}
    end
    X.st, X.k = st, key
    X.us = X.us + now_us() - AT0
    return {key, cjson.encode(X), 0, false}
end

-- errors of Redis Cluster while a slot moves (a key already on its new
-- node): the call is sent again
local function ax_guarded(keys, args)
    local ok, res = pcall(cdp_admin_x, keys, args)
    if ok then
        return res
    end
    local msg = type(res) == 'table' and (res.err or res.cdp_error)
                or tostring(res)
    if type(msg) == 'string' and msg:find('non local key', 1, true) then
        return redis.error_reply('TRYAGAIN cdp_admin_x: the slot is moving')
    end
    error(res, 0)
end

local function register(name, fn, flags)
    redis.register_function{function_name = name, callback = guarded(fn),
                            flags = flags}
end

register('cdp_admin_version', cdp_admin_version, {'no-writes'})
register('cdp_resolve', cdp_resolve, {'no-writes'})
register('cdp_profile', cdp_profile, {'no-writes'})
register('cdp_suppressed', cdp_suppressed, {'no-writes'})
register('cdp_audit', cdp_audit, {'no-writes'})
register('cdp_read', cdp_read, {})
register('cdp_erase', cdp_erase, {})
register('cdp_export', cdp_export, {})
register('cdp_unsuppress', cdp_unsuppress, {})
register('cdp_replay', cdp_replay, {})
register('cdp_segments', cdp_segments, {})
register('cdp_segment_members', cdp_segment_members, {})
register('cdp_admin_x', ax_guarded, {})
