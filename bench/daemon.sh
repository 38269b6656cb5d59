#!/usr/bin/env bash
# Benchmark of the daemon (`pom run`): 1,000 health checks at a 10 s interval on a local server.
#
# Usage: bench/daemon.sh        (results and how to read them: docs/benchmarks.md)
#
# Builds `pom` and the `bench_target` example in release mode, starts the target (the same local
# HTTP and HTTPS servers as bench/check.sh), writes a config of CHECKS targets with one health
# check each, all on the target, and starts `pom run` on it with a fresh data directory. Once its
# API answers, the daemon warms up for WARMUP seconds (first runs are spread over the first
# interval). Then two measured windows follow:
#
# 1. steady: DURATION seconds of plain running;
# 2. vacuum: VACUUM_DURATION seconds while another process (bench/daemon_vacuum.py) runs `VACUUM`
#    on the daemon's pom.db again and again, VACUUM_PAUSE seconds apart.
#
# Every SAMPLE_EVERY (10) seconds of a window the script reads pom's resident set (VmRSS of
# /proc/PID/status) and CPU time (utime + stime of /proc/PID/stat, in clock ticks; this includes
# threads that have exited), and the target's CPU time the same way. It scrapes GET /metrics at
# the start and at the end of each window: the difference of the
# pom_scheduler_start_delay_seconds histogram is the start-time drift of the runs of that window,
# and the differences of pom_probe_runs_total, pom_probe_skipped_total and
# pom_store_dropped_observations_total are what the window ran, skipped and lost.
#
# Nothing is pinned: the target and the vacuum run on the same cores as pom. The script prints a
# markdown table on stdout, the verdict against the issue's targets, and what the daemon logged
# at WARN or ERROR; progress goes to stderr. It fails if the daemon dies, if a check is not
# operational at the end, or if pom does not stop cleanly on SIGTERM.
#
# Environment: CHECKS (default 1000), INTERVAL (default 10s), WARMUP (60), DURATION (300),
# VACUUM_DURATION (120, 0 skips the phase), VACUUM_PAUSE (0), PREFILL_ROWS (0: once the daemon is
# ready, and before the warm-up, insert that many old observations into pom.db, so that a VACUUM
# takes as long as on a database with history; about 108 bytes each), SCHEME (http, or https for
# a full TLS handshake per probe), KEEP_WORK=1 (keep the scratch directory: config, pom.db,
# pom.log, scrapes). A full run takes WARMUP + DURATION + VACUUM_DURATION seconds plus a few,
# after the build. Needs bash, curl, python3 (with its sqlite3 module), awk and cargo.
set -euo pipefail

CHECKS=${CHECKS:-1000}
INTERVAL=${INTERVAL:-10s}
WARMUP=${WARMUP:-60}
DURATION=${DURATION:-300}
VACUUM_DURATION=${VACUUM_DURATION:-120}
VACUUM_PAUSE=${VACUUM_PAUSE:-0}
PREFILL_ROWS=${PREFILL_ROWS:-0}
SCHEME=${SCHEME:-http}
KEEP_WORK=${KEEP_WORK:-0}
SAMPLE_EVERY=10

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

for v in CHECKS WARMUP DURATION VACUUM_DURATION PREFILL_ROWS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, got ${!v}" >&2; exit 2; }
done
((CHECKS >= 1)) || { echo "CHECKS must be at least 1" >&2; exit 2; }
((DURATION >= SAMPLE_EVERY)) || { echo "DURATION must be at least $SAMPLE_EVERY s" >&2; exit 2; }
((VACUUM_DURATION == 0 || VACUUM_DURATION >= SAMPLE_EVERY)) ||
    { echo "VACUUM_DURATION must be 0 or at least $SAMPLE_EVERY s" >&2; exit 2; }
[[ $VACUUM_PAUSE =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    { echo "VACUUM_PAUSE must be a number of seconds, got $VACUUM_PAUSE" >&2; exit 2; }
[[ $SCHEME == http || $SCHEME == https ]] || { echo "SCHEME must be http or https" >&2; exit 2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done

echo "building (release)..." >&2
cargo build --release -p pom --bin pom --example bench_target >&2
# What was built: the commit, and whether tracked files differed from it.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit="$commit with uncommitted changes"
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
pom=$target_dir/release/pom
bench_target=$target_dir/release/examples/bench_target

work=$(mktemp -d "${TMPDIR:-/tmp}/pom-daemon-bench.XXXXXX")
target_pid=
target_in=
pom_pid=
vacuum_pid=
cleanup() {
    if [[ -n $vacuum_pid ]]; then
        kill "$vacuum_pid" 2>/dev/null || true
        wait "$vacuum_pid" 2>/dev/null || true
    fi
    if [[ -n $pom_pid ]]; then
        kill "$pom_pid" 2>/dev/null || true
        # pom drains within 10 s on SIGTERM; after 15 s it is killed.
        for _ in $(seq 150); do
            kill -0 "$pom_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pom_pid" 2>/dev/null || true
        wait "$pom_pid" 2>/dev/null || true
    fi
    if [[ -n $target_in ]]; then
        exec {target_in}>&- || true
    fi
    if [[ -n $target_pid ]]; then
        kill "$target_pid" 2>/dev/null || true
        wait "$target_pid" 2>/dev/null || true
    fi
    if [[ $KEEP_WORK == 1 ]]; then
        echo "scratch directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The target serves until its stdin closes; a coprocess gives it a stdin we hold open (a plain
# background job would get /dev/null, end of file at once) and lets us read its `ready`.
coproc TARGET { exec "$bench_target" "$work"; }
target_pid=$TARGET_PID
target_out=${TARGET[0]}
target_in=${TARGET[1]}
line=
if ! read -r -t 60 -u "$target_out" line || [[ $line != ready ]]; then
    echo "bench_target did not print 'ready' within 60 s (got: ${line:-nothing})" >&2
    exit 1
fi
base_url=$(grep -m1 -o "$SCHEME://127\.0\.0\.1:[0-9]*" "$work/$SCHEME.toml")

# The config: CHECKS targets with one health check each, all on the same local server, so every
# probe opens its own connection to it. The API listens on a port the kernel picks (found in the
# log below); data_dir is relative to the config, so pom.db lands in the scratch directory.
config=$work/daemon.toml
{
    echo "# Written by bench/daemon.sh."
    echo "[agent]"
    echo 'name = "bench"'
    echo 'data_dir = "data"'
    echo 'api_listen = "127.0.0.1:0"'
    echo 'api_token_env = "POM_API_TOKEN"'
    echo
    for i in $(seq 1 "$CHECKS"); do
        printf '[[targets]]\nname = "d%04d"\nurl = "%s"\n' "$i" "$base_url"
        if [[ $SCHEME == https ]]; then
            echo 'ca_file = "bench-ca.crt"'
        fi
        printf '  [targets.health]\n  path = "/health"\n  interval = "%s"\n  timeout = "5s"\n\n' \
            "$INTERVAL"
    done
} >"$config"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "starting pom run with $CHECKS checks at $INTERVAL on $base_url" >&2
POM_API_TOKEN=x "$pom" run --config "$config" >"$work/pom.log" 2>&1 &
pom_pid=$!

# Ready when the log names the API address and /api/health answers there.
api=
deadline=$((SECONDS + 60))
while :; do
    if ! kill -0 "$pom_pid" 2>/dev/null; then
        echo "pom run exited during start-up; its log:" >&2
        tail -n 30 "$work/pom.log" >&2
        exit 1
    fi
    if [[ -z $api ]]; then
        api=$(grep -m1 -o 'api=127\.0\.0\.1:[0-9]*' "$work/pom.log" | cut -d= -f2 || true)
    fi
    if [[ -n $api ]] && curl -fsS -o /dev/null --max-time 2 "http://$api/api/health"; then
        break
    fi
    if ((SECONDS >= deadline)); then
        echo "pom run was not ready within 60 s; its log:" >&2
        tail -n 30 "$work/pom.log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "pom is ready on $api (pid $pom_pid)" >&2
prefilled=
if ((PREFILL_ROWS > 0)); then
    echo "prefilling pom.db with $PREFILL_ROWS observations..." >&2
    prefilled=$(python3 "$root/bench/daemon_vacuum.py" prefill "$work/data/pom.db" "$PREFILL_ROWS" "$CHECKS")
fi
echo "warming up for $WARMUP s" >&2
sleep "$WARMUP"

clk_tck=$(getconf CLK_TCK)
cores=$(nproc)

# CPU time of PID so far, in clock ticks: "utime stime" of /proc/PID/stat. After "pid (comm) ",
# field 0 is the state; utime and stime are fields 11 and 12.
cpu_ticks() {
    local stat fields
    read -r stat <"/proc/$1/stat"
    read -r -a fields <<<"${stat##*) }"
    echo "${fields[11]} ${fields[12]}"
}

# The whole machine's CPU time so far, in clock ticks: "busy total" (busy is all but idle and
# iowait), from the cpu line of /proc/stat. Shows how much else ran beside the benchmark.
machine_ticks() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

rss_kib() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}

alive() {
    if ! kill -0 "$pom_pid" 2>/dev/null; then
        echo "pom run died; its log:" >&2
        tail -n 30 "$work/pom.log" >&2
        exit 1
    fi
}

scrape() {
    alive
    curl -fsS --max-time 10 "http://$api/metrics" >"$work/metrics.$1"
}

# sample SECONDS: one line of a window's samples:
#   seconds_since_start rss_kib pom_utime pom_stime target_utime target_stime machine_busy machine_total
sample() {
    echo "$1 $(rss_kib "$pom_pid") $(cpu_ticks "$pom_pid") $(cpu_ticks "$target_pid") $(machine_ticks)"
}

# window NAME SECONDS: samples every SAMPLE_EVERY seconds, on a fixed grid from the start (so the
# time a sample takes does not shift the next), into $work/NAME.samples. The first line (time 0)
# is the start of the window.
window() {
    local name=$1 n=$(($2 / SAMPLE_EVERY)) t0 k now
    t0=$EPOCHREALTIME
    sample 0 >"$work/$name.samples"
    for k in $(seq 1 "$n"); do
        sleep "$(awk -v t="$t0" -v k="$k" -v step="$SAMPLE_EVERY" -v now="$EPOCHREALTIME" \
            'BEGIN { d = t + k * step - now; printf "%.3f", (d > 0 ? d : 0) }')"
        alive
        now=$EPOCHREALTIME
        sample "$(awk -v a="$now" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')" >>"$work/$name.samples"
        echo "  $name: $((k * SAMPLE_EVERY))/$2 s" >&2
    done
}

# metric FILE SERIES: the value of one series of a scrape (the whole name with its labels).
metric() {
    awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) exit 1 }' "$1" ||
        { echo "no series $2 in $1" >&2; exit 1; }
}

# delta SERIES A B: how much a counter grew between scrapes A and B.
delta() {
    local a b
    a=$(metric "$work/metrics.$2" "$1")
    b=$(metric "$work/metrics.$3" "$1")
    echo $((b - a))
}

# Reads the start-delay histogram of scrapes A and B and prints, for the runs between them:
#   runs fraction_le_20ms p50_ms p99_ms max_bucket_ms mean_ms
# The quantiles are estimated as Prometheus' histogram_quantile does: linearly inside the bucket
# where the rank falls (0 is the lower bound of the first). A quantile in the +Inf bucket prints
# as >5000. max_bucket_ms is the upper bound of the smallest bucket that holds every run.
delays() {
    awk '
        FNR == 1 { file++ }
        /^pom_scheduler_start_delay_seconds_bucket\{le="/ {
            le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
            v[file, le] = $2; les[le] = 1
        }
        /^pom_scheduler_start_delay_seconds_sum / { sum[file] = $2 }
        END {
            n = 0
            for (le in les) if (le != "+Inf") bound[++n] = le + 0
            # sort the bounds (a handful), then +Inf last
            for (i = 2; i <= n; i++) for (j = i; j > 1 && bound[j - 1] > bound[j]; j--) {
                t = bound[j]; bound[j] = bound[j - 1]; bound[j - 1] = t
            }
            for (i = 1; i <= n; i++) {
                for (le in les) if (le != "+Inf" && le + 0 == bound[i]) key[i] = le
                cum[i] = v[2, key[i]] - v[1, key[i]]
            }
            total = v[2, "+Inf"] - v[1, "+Inf"]
            if (total <= 0) { print "0 nan nan nan nan nan"; exit }
            le20 = 0
            for (i = 1; i <= n; i++) if (bound[i] == 0.02) le20 = cum[i]
            max = ">5000"
            for (i = n; i >= 1; i--) if (cum[i] == total) max = bound[i] * 1000
            printf "%d %.5f %s %s %s %.2f\n", total, le20 / total, q(0.5), q(0.99), max,
                (sum[2] - sum[1]) / total * 1000
        }
        function q(p,   rank, i, lo, prev) {
            rank = p * total; lo = 0; prev = 0
            for (i = 1; i <= n; i++) {
                if (cum[i] >= rank)
                    return sprintf("%.2f", (lo + (bound[i] - lo) * (rank - prev) / (cum[i] - prev)) * 1000)
                lo = bound[i]; prev = cum[i]
            }
            return ">5000"
        }' "$work/metrics.$1" "$work/metrics.$2"
}

# Prints the resource figures of a window's samples:
#   seconds rss_median_mib rss_max_mib cpu_avg_pct cpu_median_10s_pct cpu_max_10s_pct
#   user_pct sys_pct target_avg_pct machine_busy_pct
# CPU percentages are of one core; machine_busy_pct is of all cores.
resources() {
    awk -v hz="$clk_tck" '
        NR == 1 { t0 = $1; u0 = $3; s0 = $4; g0 = $5 + $6; b0 = $7; a0 = $8; pt = $1; pp = $3 + $4; next }
        {
            rss[++n] = $2 / 1024
            cpu[n] = ($3 + $4 - pp) / hz / ($1 - pt) * 100
            pt = $1; pp = $3 + $4; t = $1; u = $3; s = $4; g = $5 + $6; b = $7; a = $8
        }
        END {
            w = (t - t0) * hz / 100
            printf "%.0f %.1f %.1f %.2f %.2f %.2f %.2f %.2f %.2f %.0f\n", t - t0, median(rss, n),
                maximum(rss, n), (u + s - u0 - s0) / w, median(cpu, n), maximum(cpu, n),
                (u - u0) / w, (s - s0) / w, (g - g0) / w, (b - b0) / (a - a0) * 100
        }
        function median(a, n,   i, j, x) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
                x = a[j]; a[j] = a[j - 1]; a[j - 1] = x
            }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function maximum(a, n,   i, m) {
            m = a[1]
            for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]
            return m
        }' "$work/$1.samples"
}

pressure() {
    if [[ -r /proc/pressure/cpu ]]; then
        awk '$1 == "some" { sub("avg60=", "", $3); print $3 "%" }' /proc/pressure/cpu
    else
        echo "n/a"
    fi
}

phases=(steady)
scrape start
echo "steady window: $DURATION s" >&2
window steady "$DURATION"
scrape steady
load_steady=$(cut -d' ' -f1-3 /proc/loadavg)
pressure_steady=$(pressure)

if ((VACUUM_DURATION > 0)); then
    phases+=(vacuum)
    echo "vacuum window: $VACUUM_DURATION s, VACUUM every ${VACUUM_PAUSE} s after the last" >&2
    python3 "$root/bench/daemon_vacuum.py" vacuum "$work/data/pom.db" "$VACUUM_DURATION" "$VACUUM_PAUSE" \
        >"$work/vacuum.out" 2>"$work/vacuum.err" &
    vacuum_pid=$!
    window vacuum "$VACUUM_DURATION"
    scrape vacuum
    load_vacuum=$(cut -d' ' -f1-3 /proc/loadavg)
    pressure_vacuum=$(pressure)
    wait "$vacuum_pid" || { echo "the vacuum process failed:" >&2; cat "$work/vacuum.err" >&2; exit 1; }
    vacuum_pid=
fi

# The end state: every check answered, and how pom stops.
last=${phases[-1]}
operational=$(grep -c 'status="operational"} 1$' "$work/metrics.$last" || true)
hwm_kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pom_pid/status")
stop_start=$EPOCHREALTIME
kill -TERM "$pom_pid"
# pom drains within 10 s; give it 20 before SIGKILL (which fails the run below).
for _ in $(seq 200); do
    kill -0 "$pom_pid" 2>/dev/null || break
    sleep 0.1
done
kill -KILL "$pom_pid" 2>/dev/null || true
pom_rc=0
wait "$pom_pid" || pom_rc=$?
stop_s=$(awk -v a="$EPOCHREALTIME" -v b="$stop_start" 'BEGIN { printf "%.2f", a - b }')
pom_pid=
read -r rows db_bytes < <(python3 -c '
import os, sqlite3, sys
db = sys.argv[1]
n = sqlite3.connect(db).execute("SELECT count(*) FROM observations").fetchone()[0]
print(n, os.path.getsize(db) + os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else os.path.getsize(db))
' "$work/data/pom.db")

interval_s=$(awk -v d="$INTERVAL" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    print n * (u == "ms" ? 0.001 : u == "m" ? 60 : u == "h" ? 3600 : 1) }')
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "pom run benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $cores cores ($cpu_model), $(rustc -V), $commit"
echo "$CHECKS $SCHEME health checks every $INTERVAL on one local server; warm-up $WARMUP s"
if [[ -n $prefilled ]]; then
    echo "pom.db prefilled before the warm-up: $prefilled"
fi
echo "load average at start $load_start, after steady $load_steady${load_vacuum:+, after vacuum $load_vacuum};" \
    "CPU pressure (some, avg60) after steady $pressure_steady${pressure_vacuum:+, after vacuum $pressure_vacuum}"
echo
echo "| window | s | runs (expected) | starts ≤ 20 ms | start delay p50 / p99 ms (est.) | all starts ≤ ms | mean delay ms | RSS MiB median / max | pom CPU % of one core: avg (10 s median / max) | pom user / sys % | target CPU % | machine busy % | skipped overlap / missed / result_dropped | dropped observations |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
prev=start
for p in "${phases[@]}"; do
    read -r secs rss_med rss_max cpu_avg cpu_med cpu_max user sys target_avg busy < <(resources "$p")
    read -r recorded le20 p50 p99 maxb mean < <(delays "$prev" "$p")
    runs=$(delta pom_probe_runs_total "$prev" "$p")
    expected=$(awk -v c="$CHECKS" -v s="$secs" -v i="$interval_s" 'BEGIN { printf "%.0f", c * s / i }')
    overlap=$(delta 'pom_probe_skipped_total{reason="overlap"}' "$prev" "$p")
    missed=$(delta 'pom_probe_skipped_total{reason="missed"}' "$prev" "$p")
    rdropped=$(delta 'pom_probe_skipped_total{reason="result_dropped"}' "$prev" "$p")
    odropped=$(delta pom_store_dropped_observations_total "$prev" "$p")
    printf '| %s | %s | %s (%s) | %.2f%% | %s / %s | %s | %s | %s / %s | %s (%s / %s) | %s / %s | %s | %s | %s / %s / %s | %s |\n' \
        "$p" "$secs" "$runs" "$expected" "$(awk -v f="$le20" 'BEGIN { print f * 100 }')" "$p50" "$p99" \
        "$maxb" "$mean" "$rss_med" "$rss_max" "$cpu_avg" "$cpu_med" "$cpu_max" "$user" "$sys" \
        "$target_avg" "$busy" "$overlap" "$missed" "$rdropped" "$odropped"
    [[ $recorded == "$runs" ]] ||
        echo "($p: $runs runs started, $recorded start delays recorded by the monitor in the window)"
    prev=$p
done
echo
echo "runs: pom_probe_runs_total in the window; expected = checks × window / interval. Start delays"
echo "come from the difference of the pom_scheduler_start_delay_seconds histogram (buckets 1, 2, 5,"
echo "10, 20, 50 ms...); p50 and p99 are interpolated inside a bucket. RSS: VmRSS every $SAMPLE_EVERY s."
echo "CPU: utime + stime over the window (and over each $SAMPLE_EVERY s step), 100% = one core."
echo "Machine busy: all processes, of all $cores cores (/proc/stat, not idle or iowait)."
echo
if [[ -s $work/vacuum.out ]]; then
    echo "vacuum process: $(cat "$work/vacuum.out")"
    if [[ -s $work/vacuum.err ]]; then
        echo "vacuum process stderr: $(head -c 300 "$work/vacuum.err")"
    fi
fi
echo "at the end: $operational of $CHECKS checks operational; peak RSS (VmHWM) $(awk -v k="$hwm_kib" \
    'BEGIN { printf "%.1f", k / 1024 }') MiB; $rows observations in pom.db ($(awk -v b="$db_bytes" \
    'BEGIN { printf "%.1f", b / 1048576 }') MiB with its WAL); SIGTERM → exit $pom_rc in $stop_s s"
warns=$(grep -cE '^[^ ]+ +(WARN|ERROR) ' "$work/pom.log" || true)
echo "pom.log: $(wc -l <"$work/pom.log") lines, $warns at WARN or ERROR"
if ((warns > 0)); then
    grep -E '^[^ ]+ +(WARN|ERROR) ' "$work/pom.log" | head -n 10 | sed 's/^/    /'
fi

# The issue's targets, on the steady window (and drift on the vacuum window too).
read -r _ rss_med _ cpu_avg _ < <(resources steady)
echo
echo "targets (issue): steady RSS ≤ 30 MiB: $(awk -v x="$rss_med" 'BEGIN { print (x <= 30 ? "met" : "MISSED") }') ($rss_med MiB median);" \
    "average CPU ≤ 5% of one core: $(awk -v x="$cpu_avg" 'BEGIN { print (x <= 5 ? "met" : "MISSED") }') ($cpu_avg%)"
prev=start
for p in "${phases[@]}"; do
    read -r _ le20 _ p99 _ _ < <(delays "$prev" "$p")
    echo "  p99 start drift ≤ 20 ms, $p: $(awk -v f="$le20" 'BEGIN { print (f >= 0.99 ? "met" : "MISSED") }')" \
        "($(awk -v f="$le20" 'BEGIN { printf "%.2f", f * 100 }')% of starts ≤ 20 ms, p99 ≈ $p99 ms)"
    prev=$p
done

if ((operational != CHECKS)); then
    echo "only $operational of $CHECKS checks were operational at the end" >&2
    exit 1
fi
if ((pom_rc != 0)); then
    echo "pom run exited $pom_rc on SIGTERM" >&2
    exit 1
fi
