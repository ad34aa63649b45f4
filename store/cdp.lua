#!lua name=cdp_v1
--
-- ngx_cdp: the Redis side. One library of Redis Functions, loaded by the
-- module on connect when missing or older (revision @REV@), or by hand
-- with store/load.sh. Key layout: store/README.md.
--

local REV = '@REV@'

--
-- cdp_version
--   KEYS: none   ARGV: none
--   reply: the revision string of the loaded library
--
local function cdp_version(keys, args)
    return REV
end

--
-- The record fields that attrs adds, as a flat list of field/value pairs
-- for unpack(): attrs is "country TAB region TAB city TAB consent" (any
-- part may be empty) or "".  Batches repeat the same few attrs, so each
-- is parsed once per call (cache).
--
local function attr_pairs(cache, attrs)
    local t = cache[attrs]
    if t then
        return t
    end

    t = {}

    if attrs ~= '' then
        local country, region, city, consent =
            string.match(attrs, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t?(.*)$')

        if country and country ~= '' then
            t[#t + 1] = 'country'
            t[#t + 1] = country
        end
        if region and region ~= '' then
            t[#t + 1] = 'region'
            t[#t + 1] = region
        end
        if city and city ~= '' then
            t[#t + 1] = 'city'
            t[#t + 1] = city
        end
        if consent and consent ~= '' then
            t[#t + 1] = 'consent'
            t[#t + 1] = consent
        end
    end

    cache[attrs] = t
    return t
end

--
-- cdp_ingest: store a batch of events from one nginx worker.
--   KEYS[1]      the event stream, <prefix>:events
--   KEYS[1 + i]  the key event i updates: the per-browser record
--                <prefix>:browser:<aid>, or for "agg" the day's aggregate
--                hash <prefix>:agg:<YYYY-MM-DD>
--   ARGV[1]      approximate MAXLEN of the stream
--   ARGV[2 + 4(i-1)] .. : for each event i: timestamp in ms, kind, attrs,
--                payload.
--                kind "page" or "track": the payload is the Segment-spec
--                JSON, appended to the stream and counted on the record;
--                with ":new" when nginx minted the browser's id for this
--                very hit: a fresh 128-bit random id has no record, which
--                is then created in one write instead of read-modify-write
--                (unless a later hit of that browser got here first from
--                another worker: then it is counted, keeping the earliest
--                first_seen).
--                kind "agg" (a hit without analytics consent): nothing
--                about a person; the payload is a field "<event>|<country>"
--                of the aggregate hash, incremented.
--                kind "log": the payload is appended as field "entry" to
--                the stream that is its key (<prefix>:consent_log).
--                attrs is "country TAB region TAB city TAB consent" or "":
--                the record keeps the latest known values.
--   reply: the number of events stored
--   errors: "ERR cdp_ingest: ..." on a malformed call; nothing is written
--
local function cdp_ingest(keys, args)
    local n = #keys - 1
    if n < 0 or #args ~= 1 + 4 * n then
        return redis.error_reply('ERR cdp_ingest: want 1 + 4N args for N keys')
    end

    local stream = keys[1]
    local maxlen = args[1]
    local cache = {}

    for i = 1, n do
        local a = 2 + 4 * (i - 1)
        local ts = args[a]
        local kind = args[a + 1]
        local attrs = attr_pairs(cache, args[a + 2])
        local key = keys[1 + i]

        if kind == 'agg' then
            redis.call('HINCRBY', key, args[a + 3], '1')

        elseif kind == 'log' then
            redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*',
                       'entry', args[a + 3])

        else
            redis.call('XADD', stream, '*', 'event', args[a + 3])

            -- counts are passed as strings: a Lua number would be
            -- formatted with "%.14g" on every call

            local page = (kind == 'page' or kind == 'page:new')
            local fresh = (kind == 'page:new' or kind == 'track:new')

            if fresh and redis.call('EXISTS', key) == 0 then
                -- nginx minted the id for this hit: one write creates the
                -- record
                redis.call('HSET', key, 'events', '1',
                           'page_views', page and '1' or '0',
                           'first_seen', ts, 'last_seen', ts, unpack(attrs))

            else
                if fresh then
                    -- a later hit of this browser reached Redis first, in
                    -- another worker's batch: this one is the earliest
                    local first = redis.call('HGET', key, 'first_seen') or ts
                    if tonumber(ts) < tonumber(first) then
                        redis.call('HSET', key, 'first_seen', ts)
                    end
                    redis.call('HINCRBY', key, 'events', '1')

                elseif redis.call('HINCRBY', key, 'events', '1') == 1 then
                    redis.call('HSET', key, 'first_seen', ts, 'last_seen', ts,
                               'page_views', '0', unpack(attrs))

                else
                    redis.call('HSET', key, 'last_seen', ts, unpack(attrs))
                end

                if page then
                    redis.call('HINCRBY', key, 'page_views', '1')
                end
            end
        end
    end

    -- once per batch rather than per XADD: fewer arguments per event, and
    -- the stream overshoots MAXLEN by one batch at most
    redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)

    return n
end

redis.register_function{function_name = 'cdp_version',
                        callback = cdp_version, flags = {'no-writes'}}
redis.register_function{function_name = 'cdp_ingest',
                        callback = cdp_ingest}
