-- store/shard.lua: the shard helpers of the store's Redis Functions
-- libraries, as one block of Lua text.  NOT A LIBRARY OF ITS OWN: nothing
-- loads this file.  Libraries cannot share code, so store/wire.sh copies
-- the text below this header (everything after its first blank line)
-- between "-- shard:begin" and "-- shard:end" of store/cdp.lua,
-- store/admin.lua and store/migrate.lua: edit it here, then run
-- store/wire.sh --update.  store/embed.sh, store/load.sh and
-- store/migrate.sh load the libraries with the block made afresh, and
-- tests/integration/test_store.py fails when a checked-in copy differs
-- (tests/bench/redis_cost.py takes it too, with store/wire.sh --shard).
--
-- A library that has the block declares WIRE_SHARDS (the shards of a
-- bare "<prefix>") above it and, on each call, sets NSH to the call's
-- shards and TAG_OF to {} (the tags of ids are cached for one NSH only).

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
