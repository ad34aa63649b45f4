-- wrk -s api.lua URL -- WRITE_KEY BATCH
--
-- API ingest for make bench: every request is a POST of BATCH (default
-- 100) track messages to /v1/batch, as Segment's libraries send them, each
-- with a messageId of its own (the store deduplicates messageIds, so a
-- repeated body would store nothing), over 1000 user ids.

local key = "bench"
local batch = 100
local seq = 0
local tag = ""

local function b64(s)
    local abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return ((s:gsub(".", function(x)
        local r, b = "", x:byte()
        for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
        return r
    end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
        if #x < 6 then return "" end
        local c = 0
        for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
        return abc:sub(c + 1, c + 1)
    end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

local headers = {}

function init(args)
    key = args[1] or key
    batch = tonumber(args[2]) or batch
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    tag = string.format("%08x%08x", math.random(0, 0x7fffffff),
                        math.random(0, 0x7fffffff))
    headers["Content-Type"] = "application/json"
    headers["Authorization"] = "Basic " .. b64(key .. ":")
end

function request()
    local parts = {}
    for i = 1, batch do
        seq = seq + 1
        parts[i] = string.format(
            '{"type":"track","userId":"user-%d","event":"Order Completed",'
            .. '"properties":{"order_id":"o-%d","revenue":%d,"currency":"EUR"},'
            .. '"context":{"library":{"name":"bench","version":"1"}},'
            .. '"timestamp":"2026-11-23T07:30:00.000Z",'
            .. '"messageId":"%s-%d"}',
            seq % 1000, seq, seq % 97, tag, seq)
    end
    return wrk.format("POST", "/v1/batch", headers,
                      '{"batch":[' .. table.concat(parts, ",") .. ']}')
end
