# wrk output and medians, shared by bench.sh and dest.sh (sourced, not
# run).

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
