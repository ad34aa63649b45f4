# CPU accounting shared by bench.sh and compare.sh (sourced, not run).
# Everything is read from /proc: clock ticks of user + system time.

HZ=$(getconf CLK_TCK)

# ticks PID: CPU time of a process so far
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# child_ticks: CPU time of this shell's children that have been waited for
# (wrk, once it has exited)
child_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }

# idle_ticks: "IDLE TOTAL" of every CPU so far (idle + iowait, and all)
idle_ticks() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i;
                       print $5 + $6, t; exit }' /proc/stat
}

# us_per TICKS REQUESTS: microseconds of CPU per request
us_per() {
    awk -v t="$1" -v n="$2" -v hz="$HZ" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'
}

# pct PART WHOLE: PART as a percentage of WHOLE
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f", a * 100 / b; else print "n/a" }'; }
