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
-- cdp_ingest: store a batch of events from one nginx worker.
--   KEYS[1]      the event stream, <prefix>:events
--   KEYS[1 + i]  the per-browser record of event i, <prefix>:browser:<aid>
--   ARGV[1]      approximate MAXLEN of the stream
--   ARGV[2 + 3(i-1)] .. : for each event i: timestamp in ms, kind
--                ("page" or "track"), the Segment-spec JSON
--   reply: the number of events stored
--   errors: "ERR cdp_ingest: ..." on a malformed call; nothing is written
--
local function cdp_ingest(keys, args)
    local n = #keys - 1
    if n < 0 or #args ~= 1 + 3 * n then
        return redis.error_reply('ERR cdp_ingest: want 1 + 3N args for N keys')
    end

    local stream = keys[1]
    local maxlen = args[1]

    for i = 1, n do
        local a = 2 + 3 * (i - 1)
        local ts = args[a]
        local key = keys[1 + i]

        redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                   'event', args[a + 2])

        if redis.call('HINCRBY', key, 'events', 1) == 1 then
            redis.call('HSET', key, 'first_seen', ts, 'last_seen', ts)
        else
            redis.call('HSET', key, 'last_seen', ts)
        end

        if args[a + 1] == 'page' then
            redis.call('HINCRBY', key, 'page_views', 1)
        end
    end

    return n
end

redis.register_function{function_name = 'cdp_version',
                        callback = cdp_version, flags = {'no-writes'}}
redis.register_function{function_name = 'cdp_ingest',
                        callback = cdp_ingest}
