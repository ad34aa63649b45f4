# wrk output and medians, and the browser User-Agent, shared by bench.sh,
# dest.sh, spool.sh, capture.sh and compare.sh (sourced, not run).

# A browser's User-Agent, sent with every request that is meant to be
# tracked: the module answers a request without a User-Agent (wrk sends
# none) or with a client library's or a bot's (curl's "curl/...") but does
# not store it, it only counts it in cdp_filtered_total{reason="bot"}
# (cdp_bot). The ceilings it is compared with (userid + empty_gif, the same
# location without cdp_capture) get the same header, so both sides parse
# the same request. wrk: -H "User-Agent: $BENCH_UA" (cookies.lua keeps
# it); curl: -A "$BENCH_UA".
BENCH_UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

# fields of one wrk output: requests req_per_sec p99_ms non2xx socket_errors
wrk_parse() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return v / 1000
        if (v ~ /ms$/) return v + 0
        if (v ~ /s$/)  return v * 1000
        return v + 0
    }
    / requests in /        { req = $1 }
    /^Requests\/sec:/      { rps = $2 }
    $1 == "99%"            { p99 = ms($2) }
    /Non-2xx or 3xx/       { bad = $NF }
    /Socket errors:/       { gsub(",", ""); err = $4 + $6 + $8 + $10 }
    END { printf "%d %.2f %.3f %d %d\n", req, rps, p99, bad, err }
    ' "$1"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR/2] + v[NR/2 + 1]) / 2 }'
}
