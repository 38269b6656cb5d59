#!/usr/bin/env bash
# Benchmark of `pom check` against 1,000 HTTP and 1,000 HTTPS health checks on a local server.
#
# Usage: RUNS=7 bench/check.sh        (results and how to read them: docs/benchmarks.md)
#
# Builds `pom` and the `bench_target` example in release mode, starts the target (one HTTP and
# one HTTPS server on 127.0.0.1, and the configs pointing at them), then runs
# `pom check --output json` on each case RUNS times. The cases are interleaved (one run of each
# case, then the next round) so that a noisy neighbour on a shared machine hits every case alike,
# and ratios between cases are taken within a round. Each case gets one unmeasured warm-up run
# first. Every run must exit 0 with every check operational, or the script fails (the JSON goes
# to a scratch file, so that a failure can be shown).
#
# Nothing is pinned: the target's servers run on the same cores as pom, as they would on a
# small host checking itself. The target's CPU time is read from /proc around each run and
# reported separately, so the split is visible.
#
# Environment: RUNS (default 7), CONCURRENCY (the sweep of the https case, default "16 64 256").
# Needs bash, GNU time at /usr/bin/time, awk and cargo. Prints a markdown table on stdout;
# progress goes to stderr.
set -euo pipefail

RUNS=${RUNS:-7}
CONCURRENCY=${CONCURRENCY:-"16 64 256"}
PROBES_PER_FILE=1000

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer, got $RUNS" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "GNU time (/usr/bin/time) is required" >&2; exit 2; }

echo "building (release)..." >&2
cargo build --release -p pom --bin pom --example bench_target >&2
target_dir=${CARGO_TARGET_DIR:-$root/target}
pom=$target_dir/release/pom
bench_target=$target_dir/release/examples/bench_target

work=$(mktemp -d "${TMPDIR:-/tmp}/pom-bench.XXXXXX")
target_pid=
target_in=
cleanup() {
    if [[ -n $target_in ]]; then
        exec {target_in}>&- || true
    fi
    if [[ -n $target_pid ]]; then
        kill "$target_pid" 2>/dev/null || true
        wait "$target_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
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

clk_tck=$(getconf CLK_TCK)
cores=$(nproc)
TIMEFORMAT='%3R %3U %3S'

# CPU seconds the target has used so far: the sum of its threads' run time in
# /proc/PID/task/*/schedstat (nanoseconds). Its threads (the runtime's workers, the stdin watcher)
# live as long as it does, so no time is lost with an exited thread. Without schedstat, fall
# back to utime+stime of /proc/PID/stat (clock ticks, 10 ms).
target_cpu() {
    local ns=0 t stat fields
    if [[ -r /proc/$target_pid/schedstat ]]; then
        for t in /proc/"$target_pid"/task/*/schedstat; do
            read -r -a fields <"$t"
            ns=$((ns + fields[0]))
        done
        awk -v ns="$ns" 'BEGIN { printf "%.6f", ns / 1e9 }'
    else
        read -r stat <"/proc/$target_pid/stat"
        # After "pid (comm) ", field 0 is the state; utime and stime are fields 11 and 12.
        read -r -a fields <<<"${stat##*) }"
        awk -v t=$((fields[11] + fields[12])) -v hz="$clk_tck" 'BEGIN { printf "%.6f", t / hz }'
    fi
}

# TCP listen queue overflows so far, machine-wide (TcpExt ListenOverflows): a listener whose
# accept queue was full dropped a handshake, and the client retried its SYN a second later.
listen_overflows() {
    awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "ListenOverflows") c = i; n = 1 }
        else { print $c; exit } }' /proc/net/netstat
}

# The columns of a sample line, and how many there are.
# wall_s user_s sys_s maxrss_kib target_cpu_s latency_p50_ms latency_p99_ms listen_overflows
NCOL=8

# measure CASE CONFIG PROBES [pom check args...]: one run, appended to $work/CASE.samples as one
# line of the NCOL columns above. The latencies are those pom reports for each probe.
#
# Wall, user and system time come from bash's `time` (getrusage, millisecond precision; GNU
# time only prints hundredths), peak RSS from GNU time, which wraps pom and costs about a
# millisecond of its own.
measure() {
    local case=$1 config=$2 probes=$3
    shift 3
    local before after drops_before drops_after rc=0 ok
    drops_before=$(listen_overflows)
    before=$(target_cpu)
    {
        time /usr/bin/time -f '%M' -o "$work/rss" \
            "$pom" check --config "$work/$config" --output json "$@" >"$work/out.json" 2>"$work/err"
    } 2>"$work/time" || rc=$?
    after=$(target_cpu)
    drops_after=$(listen_overflows)
    ok=$(grep -c '"status": *"operational"' "$work/out.json" || true)
    if [[ $rc -ne 0 || $ok -ne $probes ]]; then
        echo "case $case: pom check exited $rc with $ok of $probes checks operational" >&2
        head -20 "$work/err" >&2
        grep -B3 -A3 '"status": *"\(degraded\|error\|unreachable\)"' "$work/out.json" | head -40 >&2 || true
        exit 1
    fi
    local wall user sys rss latencies
    read -r wall user sys <"$work/time"
    # GNU time prints "Command exited with non-zero status" first when it does; the figure is last.
    rss=$(tail -n 1 "$work/rss")
    latencies=$(grep -o '"latency_ms": *[0-9.]*' "$work/out.json" | awk '{ print $NF }' | sort -g |
        awk '{ v[NR] = $1 } END { printf "%s %s", v[int((NR + 1) * 0.5)], v[int(NR * 0.99 + 0.5)] }')
    echo "$wall $user $sys $rss $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.6f", a - b }')" \
        "$latencies $((drops_after - drops_before))" >>"$work/$case.samples"
}

# The cases: name, config, probes, extra arguments.
cases=("http|http.toml|$PROBES_PER_FILE|" "https|https.toml|$PROBES_PER_FILE|" "mixed|mixed.toml|$((2 * PROBES_PER_FILE))|")
for c in $CONCURRENCY; do
    cases+=("https-c$c|https.toml|$PROBES_PER_FILE|--concurrency $c")
done

run_case() {
    local name config probes extra
    IFS='|' read -r name config probes extra <<<"$1"
    # shellcheck disable=SC2086 # extra is a word list on purpose
    measure "$name" "$config" "$probes" $extra
}

echo "warm-up: one unmeasured run of each case" >&2
for spec in "${cases[@]}"; do
    run_case "$spec"
done
rm -f "$work"/*.samples

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$RUNS"); do
    echo "round $round/$RUNS" >&2
    for spec in "${cases[@]}"; do
        run_case "$spec"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# median FILE COLUMN-EXPRESSION: the median of an awk expression over the sample lines.
median() {
    awk "{ print $2 }" "$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.6g", v[(NR + 1) / 2]; else printf "%.6g", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio EXPR CASE...: the median over rounds of an awk expression of the cases' wall times within
# one round: w[1] is the first case's wall time, w[2] the second's...
ratio() {
    local expr=$1 c files=()
    shift
    for c in "$@"; do
        files+=("$work/$c.samples")
    done
    paste -d' ' "${files[@]}" |
        awk -v n=$# -v ncol=$NCOL '{ for (i = 1; i <= n; i++) w[i] = $(ncol * (i - 1) + 1); print '"$expr"' }' |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "pom check benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $cores cores ($cpu_model), $(rustc -V)"
echo "RUNS=$RUNS rounds, medians; load average before $load_before, after $load_after"
echo
echo "| case | probes | concurrency | wall s, median (min-max) | probes/s/core (wall, $cores cores) | pom CPU ms/probe | pom user / sys s | target CPU ms/probe | probes per pom CPU-s | probe latency ms p50 / p99 | peak RSS MiB | listen overflows |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
for spec in "${cases[@]}"; do
    IFS='|' read -r name config probes extra <<<"$spec"
    f=$work/$name.samples
    conc=${extra#--concurrency }
    conc=${conc:-64 (default)}
    wall=$(median "$f" '$1')
    lo=$(sort -g -k1,1 "$f" | head -n1 | cut -d' ' -f1)
    hi=$(sort -g -k1,1 "$f" | tail -n1 | cut -d' ' -f1)
    per_core=$(median "$f" "$probes / \$1 / $cores")
    cpu_ms=$(median "$f" "(\$2 + \$3) * 1000 / $probes")
    user=$(median "$f" '$2')
    sys=$(median "$f" '$3')
    target_ms=$(median "$f" "\$5 * 1000 / $probes")
    per_cpu_s=$(median "$f" "$probes / ((\$2 + \$3) > 0 ? (\$2 + \$3) : 0.001)")
    p50=$(median "$f" '$6')
    p99=$(median "$f" '$7')
    rss=$(median "$f" '$4 / 1024')
    drops=$(awk '{ s += $8 } END { print s + 0 }' "$f")
    printf '| %s | %d | %s | %.3f (%.3f-%.3f) | %.0f | %.3f | %.3f / %.3f | %.3f | %.0f | %.0f / %.0f | %.1f | %d |\n' \
        "$name" "$probes" "$conc" "$wall" "$lo" "$hi" "$per_core" "$cpu_ms" "$user" "$sys" "$target_ms" \
        "$per_cpu_s" "$p50" "$p99" "$rss" "$drops"
done
echo
echo "Medians over $RUNS runs, except min-max and listen overflows (the sum over all runs of the case,"
echo "counted machine-wide). CPU per probe is user+system time divided by the probes of the run."
echo
echo "Side-by-side ratios (median over rounds of wall-time ratios within a round):"
echo "- https / http: $(ratio 'w[1] / w[2]' https http)"
echo "- mixed / (http + https): $(ratio 'w[1] / (w[2] + w[3])' mixed http https)"
read -r -a sweep <<<"$CONCURRENCY"
for c in "${sweep[@]:1}"; do
    echo "- https at concurrency $c / at ${sweep[0]}: $(ratio 'w[1] / w[2]' "https-c$c" "https-c${sweep[0]}")"
done
