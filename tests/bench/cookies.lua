-- wrk -s cookies.lua [-H "User-Agent: ..."] URL -- POOL_FILE
--
-- "Returning visitors" for make bench: every request carries one cookie
-- ("name=value", one a line in POOL_FILE) picked at random from a pool of
-- valid ones minted beforehand. bench.sh runs the pixel and userid +
-- empty_gif with this same script, so wrk's per-request cost is the same
-- in both.
--
-- wrk.format() with a headers table of its own sends only those (and
-- Host), not wrk's -H ones: they are copied here, so that the User-Agent
-- the benches send with -H (a browser's: without one the module files
-- the hit as a bot's and does not store it) goes out with every cookie.

local pool = {}
local n = 0
local headers = {}

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
    for k, v in pairs(wrk.headers) do
        headers[k] = v
    end
    math.randomseed(os.time())
end

function request()
    headers["Cookie"] = pool[math.random(n)]
    return wrk.format(nil, nil, headers)
end
