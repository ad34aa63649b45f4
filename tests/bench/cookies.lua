-- wrk -s cookies.lua URL -- POOL_FILE
--
-- "Returning visitors" for make bench: every request carries one cookie
-- ("name=value", one a line in POOL_FILE) picked at random from a pool of
-- valid ones minted beforehand. bench.sh runs the pixel and userid +
-- empty_gif with this same script, so wrk's per-request cost is the same
-- in both.

local pool = {}
local n = 0

function init(args)
    local path = args[1]
    if not path then
        error("cookies.lua: usage: wrk -s cookies.lua URL -- POOL_FILE")
    end
    local f = assert(io.open(path, "r"))
    for line in f:lines() do
        line = line:gsub("%s+$", "")
        if line ~= "" then
            n = n + 1
            pool[n] = line
        end
    end
    f:close()
    if n == 0 then
        error("cookies.lua: no cookie in " .. path)
    end
    math.randomseed(os.time())
end

function request()
    return wrk.format(nil, nil, { ["Cookie"] = pool[math.random(n)] })
end
