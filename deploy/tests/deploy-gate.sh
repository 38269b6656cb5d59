#!/usr/bin/env bash
# Tests deploy/deploy.sh's gate and rollback against real agents (issue 6, part 3). Run by
# .ci/run as root, on a fresh Debian machine, after `cargo test` built target/debug/pom.
#
# Two test hosts, alpha (10.78.0.1) and beta (10.78.0.2), each a network namespace (its own
# loopback, a veth between the two) plus a mount namespace in which /etc (a copy of this
# machine's), /usr/local/bin, /usr/local/sbin, /var/lib, /var/log, /var/tmp and /run are the
# host's own directories under the scratch dir. deploy/install.sh installs pom on each as it
# would on a real host (the pom user, /etc/pom, the unit), the agents form a real 2-agent mTLS
# mesh (`pom ca init`, `pom cert issue`), and deploy.sh reaches them through
# deploy-ssh-shim.sh (its POM_DEPLOY_SSH), which runs each command inside the host.
# systemctl there is deploy-fake-systemctl.sh: it runs the agent as pom and reports "started"
# once its API listens, as Type=notify does.
#
# Binaries: "old" and "new" are target/debug/pom (stripped when strip exists) with different
# trailing bytes: both real agents, told apart by their sha256, on disk and as running
# (/proc/PID/exe). "exit1" is a script that exits 1; "nomesh" starts the new agent without its
# [mesh] section, so its /api/health is fine but no peer ever hears from it again.
#
# Checks, one line each:
#   1. a good deploy to both hosts: each passes the gate, runs the new binary, keeps the old as
#      pom.prev; alpha is done before beta is touched;
#   2. a binary that exits 1: systemctl start fails on alpha, alpha is rolled back to the
#      previous binary and is healthy again (and beta sees it again), beta is untouched;
#   3. a binary whose /api/health answers but that never rejoins the mesh: the gate's second
#      half fails on alpha, although beta still lists alpha `alive` from the old agent's last
#      heartbeats (heartbeat_interval is 60s); rolled back, healthy, beta untouched;
#   4. --dry-run: prints the plan, contacts no host, changes nothing;
#   5. an aarch64 host (x86_64, on an aarch64 machine) without --binary-aarch64 and no cross
#      linker: a clear error with the fixes, before any host is contacted;
#   6. a one-host deploy: the mesh half of the gate is skipped, with a warning.
# Every wait polls with a deadline. Everything (processes, namespaces, files) is removed on
# exit, failure and Ctrl-C included; POM_DEPLOY_GATE_KEEP=1 keeps the scratch dir for a look.
# Exit status 1 if any check failed, 2 if the test could not be set up.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
readonly REPO
readonly DEPLOY="$REPO/deploy/deploy.sh"
readonly SHIM="$REPO/deploy/tests/deploy-ssh-shim.sh"
readonly FAKE_SYSTEMCTL="$REPO/deploy/tests/deploy-fake-systemctl.sh"

if [ "$(id -u)" != 0 ]; then
    echo "deploy-gate: run as root (it makes network and mount namespaces)" >&2
    exit 2
fi
if [ -z "${POM_DEPLOY_GATE_INNER:-}" ]; then
    if [ -x bench/ensure-packages.sh ]; then
        bench/ensure-packages.sh ip:iproute2 curl:curl jq:jq nsenter:util-linux \
            setpriv:util-linux useradd:passwd
    fi
    # A private mount namespace: the namespaces' mounts end with this script, whatever happens.
    exec unshare --mount --propagation private env POM_DEPLOY_GATE_INNER=1 "$0" "$@"
fi
for c in ip curl jq nsenter unshare setpriv useradd; do
    command -v "$c" >/dev/null || { echo "deploy-gate: $c is missing" >&2; exit 2; }
done
if [ ! -x target/debug/pom ]; then
    echo "deploy-gate: no target/debug/pom; build it first: cargo build -p pom --bin pom" >&2
    exit 2
fi

started=$SECONDS
ARCH="$(uname -m)"
case "$ARCH" in
    x86_64) OTHER=aarch64 ;;
    aarch64) OTHER=x86_64 ;;
    *) echo "deploy-gate: this machine is $ARCH; deploy.sh knows x86_64 and aarch64" >&2; exit 2 ;;
esac
readonly ARCH OTHER
HOSTS=(alpha beta)
declare -A IP=([alpha]=10.78.0.1 [beta]=10.78.0.2)
readonly NS_PREFIX="pomdg$$"

T="$(mktemp -d /tmp/pom-deploy-gate.XXXXXX)"
# The agents run as pom and exec the test's binaries from here.
chmod 0755 "$T"
export POM_DEPLOY_TEST_ROOT="$T"
mkdir -p "$T/bin" "$T/hosts" "$T/ca" "$T/certs"
: >"$T/ssh.log"

failed=0
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); }
detail() { sed 's/^/       /'; }
now_ms() { date +%s%3N; }

# --- cleanup -----------------------------------------------------------------------------------
pid_alive() { [ -d "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }
cleanup() {
    local status=$? h ns pids p deadline
    trap - EXIT INT TERM
    for h in "${HOSTS[@]}"; do
        ns="$NS_PREFIX-$h"
        # Every process in the host's namespace is this test's: the keeper and the agents.
        read -r -d '' -a pids < <(ip netns pids "$ns" 2>/dev/null) || true
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        deadline=$(($(now_ms) + 10000))
        for p in "${pids[@]}"; do
            while pid_alive "$p" && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.1; done
            ! pid_alive "$p" || kill -KILL "$p" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ "${POM_DEPLOY_GATE_KEEP:-}" = 1 ]; then
        echo "kept: $T"
    else
        rm -rf "$T"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls `$@` every 0.2 s until it succeeds or $1 seconds pass.
wait_for() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# --- binaries ----------------------------------------------------------------------------------
if command -v strip >/dev/null && strip -o "$T/bin/pom-base" target/debug/pom 2>/dev/null; then :; else
    cp target/debug/pom "$T/bin/pom-base"
fi
for v in old new; do
    { cat "$T/bin/pom-base"; printf '\n# pom-%s (deploy/tests/deploy-gate.sh)\n' "$v"; } >"$T/bin/pom-$v"
    chmod 0755 "$T/bin/pom-$v"
done
rm -f "$T/bin/pom-base"
printf '#!/bin/sh\necho "pom: a broken build (deploy/tests/deploy-gate.sh)" >&2\nexit 1\n' >"$T/bin/pom-exit1"
# The agent with everything but its [mesh] section (the last one in the test config).
cat >"$T/bin/pom-nomesh" <<EOF
#!/bin/sh
# A broken build: its API is healthy, and it never rejoins the mesh (deploy/tests/deploy-gate.sh).
config=/var/tmp/pom-nomesh.\$\$.toml
sed '/^\[mesh\]/,\$d' /etc/pom/pom.toml >"\$config"
exec $T/bin/pom-new run --config "\$config"
EOF
chmod 0755 "$T/bin/pom-exit1" "$T/bin/pom-nomesh"
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
SHA_OLD="$(sha "$T/bin/pom-old")"
SHA_NEW="$(sha "$T/bin/pom-new")"
SHA_EXIT1="$(sha "$T/bin/pom-exit1")"
SHA_NOMESH="$(sha "$T/bin/pom-nomesh")"
readonly SHA_OLD SHA_NEW SHA_EXIT1 SHA_NOMESH
# Names the binary a checksum belongs to.
which_bin() {
    case "$1" in
        "$SHA_OLD") echo old ;; "$SHA_NEW") echo new ;; "$SHA_EXIT1") echo exit1 ;;
        "$SHA_NOMESH") echo nomesh ;; "") echo none ;; *) echo "other:${1:0:12}" ;;
    esac
}

# --- hosts -------------------------------------------------------------------------------------
on() { "$SHIM" "root@$1" "${@:2}"; }
hostdir() { echo "$T/hosts/$1"; }

make_host() {
    local h="$1" d ns keeper
    d="$(hostdir "$h")"
    ns="$NS_PREFIX-$h"
    mkdir -p "$d"/{etc,usr-local-bin,usr-local-sbin,var-lib,var-log,var-tmp,run}
    chmod 1777 "$d/var-tmp"
    cp -a /etc/. "$d/etc/"
    install -m 0755 "$FAKE_SYSTEMCTL" "$d/usr-local-sbin/systemctl"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # The keeper holds the host's mount namespace; `sleep infinity` only keeps it alive.
    # shellcheck disable=SC2016 # expanded by the keeper's bash
    nsenter --net="/run/netns/$ns" unshare --mount --propagation private bash -c '
        set -e
        d="$1"
        mount --bind "$d/etc" /etc
        mount --bind "$d/usr-local-bin" /usr/local/bin
        mount --bind "$d/usr-local-sbin" /usr/local/sbin
        mount --bind "$d/var-lib" /var/lib
        mount --bind "$d/var-log" /var/log
        mount --bind "$d/var-tmp" /var/tmp
        mount --bind "$d/run" /run
        touch "$d/ready"
        exec sleep infinity
    ' keeper "$d" </dev/null >"$d/keeper.log" 2>&1 &
    keeper=$!
    echo "$keeper" >"$d/keeper.pid"
    if ! wait_for 10 test -e "$d/ready"; then
        echo "deploy-gate: cannot make test host $h:" >&2
        cat "$d/keeper.log" >&2
        exit 2
    fi
}

agent_config() {
    local h="$1" peer="$2"
    cat <<EOF
# Test host $h (deploy/tests/deploy-gate.sh).
[agent]
name = "$h"
data_dir = "/var/lib/pom"
api_listen = "127.0.0.1:9100"
api_token_env = "POM_API_TOKEN"

# Last section: pom-nomesh cuts the file here.
[mesh]
listen = "${IP[$h]}:9101"
ca_cert = "/etc/pom/mesh/ca.crt"
cert = "/etc/pom/mesh/node.crt"
key = "/etc/pom/mesh/node.key"
heartbeat_interval = "60s"
missed_heartbeats = 3
quorum = "majority"

[[mesh.peers]]
name = "$peer"
addr = "${IP[$peer]}:9101"
EOF
}

token_of() { sed -n 's/^POM_API_TOKEN=//p' "$(hostdir "$1")/etc/pom/env"; }
health_json() { on "$1" "curl -s --max-time 5 http://127.0.0.1:9100/api/health"; }
mesh_json() { on "$1" "curl -s --max-time 5 -H 'Authorization: Bearer $(token_of "$1")' http://127.0.0.1:9100/api/mesh"; }
healthy() { [ "$(health_json "$1" 2>/dev/null | jq -r '.status + " " + .name' 2>/dev/null)" = "ok $1" ]; }
# peer_field WATCHER PEER FIELD: what WATCHER's /api/mesh says about PEER.
peer_field() { mesh_json "$1" 2>/dev/null | jq -r --arg n "$2" --arg f "$3" '.peers[] | select(.name == $n) | .[$f] | tostring' 2>/dev/null; }
# sees_alive WATCHER PEER [SINCE_MS]: alive, connected, and (if given) a heartbeat since SINCE_MS.
sees_alive() {
    local view hb
    view="$(mesh_json "$1" 2>/dev/null | jq -c --arg n "$2" '.peers[] | select(.name == $n)' 2>/dev/null)" || return 1
    [ "$(jq -r '.state + " " + (.connected | tostring)' <<<"$view")" = "alive true" ] || return 1
    [ -n "${3:-}" ] || return 0
    hb="$(jq -r '.last_heartbeat // ""' <<<"$view")"
    [ -n "$hb" ] && [ "$(date -u -d "$hb" +%s%3N)" -ge "$3" ]
}
running_pid() { cat "$(hostdir "$1")/run/pom.pid" 2>/dev/null || true; }
# What host $1 has installed and runs: "installed=… prev=… running=… pid=…" (binary names).
state_of() {
    local d pid
    d="$(hostdir "$1")"
    pid="$(running_pid "$1")"
    printf 'installed=%s prev=%s running=%s pid=%s' \
        "$(which_bin "$(sha "$d/usr-local-bin/pom")")" "$(which_bin "$(sha "$d/usr-local-bin/pom.prev")")" \
        "$(which_bin "$( [ -n "$pid" ] && sha "/proc/$pid/exe")")" "${pid:-none}"
}
# Everything deploy.sh could change on a host: its files (with checksums) and its agent's PID.
# (A `problems+=("… $(cmd)")` fails the script under set -e when cmd fails: such cmds end in
# `|| true` here.)
snapshot() {
    local h d
    for h in "$@"; do
        d="$(hostdir "$h")"
        echo "== $h pid $(running_pid "$h")"
        (cd "$d" && find usr-local-bin var-lib etc/pom etc/systemd -path var-lib/pom -prune -o -print0 \
            | sort -z | xargs -0 stat -c '%n %a %U:%G %s %Y')
        (cd "$d" || exit 0; sha256sum usr-local-bin/* etc/systemd/system/pom.service 2>/dev/null || true)
    done
}
ssh_calls() { wc -l <"$T/ssh.log"; }

for h in "${HOSTS[@]}"; do make_host "$h"; done
ip -n "$NS_PREFIX-alpha" link add eth0 type veth peer name eth0 netns "$NS_PREFIX-beta"
for h in "${HOSTS[@]}"; do
    ip -n "$NS_PREFIX-$h" addr add "${IP[$h]}/24" dev eth0
    ip -n "$NS_PREFIX-$h" link set eth0 up
done

"$T/bin/pom-new" ca init --dir "$T/ca" >/dev/null
setup_log="$T/setup.log"
setup_failed=false
for h in "${HOSTS[@]}"; do
    peer=beta
    [ "$h" != beta ] || peer=alpha
    d="$(hostdir "$h")"
    {
        echo "--- $h: install.sh --binary pom-old"
        on "$h" "bash $REPO/deploy/install.sh --binary $T/bin/pom-old"
        "$T/bin/pom-new" cert issue "$h" --ca-dir "$T/ca" --out "$T/certs/$h"
        agent_config "$h" "$peer" >"$d/etc/pom/pom.toml"
        cp "$T/certs/$h/ca.crt" "$T/certs/$h/node.crt" "$T/certs/$h/node.key" "$d/etc/pom/mesh/"
        on "$h" "chown pom:pom /etc/pom/mesh/node.key && chmod 0600 /etc/pom/mesh/node.key && chmod 0644 /etc/pom/mesh/ca.crt /etc/pom/mesh/node.crt && pom config check"
        on "$h" "systemctl start pom"
    } >>"$setup_log" 2>&1 || setup_failed=true
done
if [ "$setup_failed" = false ] && wait_for 20 sees_alive alpha beta && wait_for 20 sees_alive beta alpha; then
    ok "setup: install.sh on alpha and beta, a 2-agent mTLS mesh of the old binary, each sees the other alive ($(( SECONDS - started ))s)"
else
    fail "setup: the 2-agent mesh did not come up:"
    detail <"$setup_log"
    for h in "${HOSTS[@]}"; do tail -n 20 "$(hostdir "$h")/var-log/pom.log" 2>/dev/null | detail; done
    exit 1
fi

hosts_file="$T/hosts.txt"
printf '# name ssh_target arch\nalpha root@alpha %s\nbeta  root@beta  %s   # the edge box\n' "$ARCH" "$ARCH" >"$hosts_file"
# run_deploy LOG ARGS...: deploy.sh through the shim; its exit status in $rc.
run_deploy() {
    local log="$1"
    shift
    rc=0
    POM_DEPLOY_SSH="$SHIM" "$DEPLOY" "$@" >"$log" 2>&1 || rc=$?
}
# When the step "$2" shows in deploy.sh's output $1 (line number).
line_of() { grep -n -m1 -F -- "$2" "$1" | cut -d: -f1; }

# --- 1. a good deploy --------------------------------------------------------------------------
log="$T/1-good.log"
t=$SECONDS
run_deploy "$log" --binary-"$ARCH" "$T/bin/pom-new" --gate-timeout 30 "$hosts_file"
problems=()
[ "$rc" -eq 0 ] || problems+=("exit status $rc")
for h in "${HOSTS[@]}"; do
    s="$(state_of "$h")"
    [[ "$s" == "installed=new prev=old running=new "* ]] || problems+=("$h: $s")
    [ ! -e "$(hostdir "$h")/usr-local-bin/pom.new" ] && [ ! -e "$(hostdir "$h")/var-lib/pom-deploy" ] \
        || problems+=("$h: the upload (pom.new, /var/lib/pom-deploy) was not cleaned up")
done
[ "$(grep -c '^  gate passed: .* sees .* alive, heartbeat' "$log")" -eq 2 ] || problems+=("not two full gate passes")
a_done="$(line_of "$log" "alpha: done")"
b_first="$(line_of "$log" "== beta")"
[ -n "$a_done" ] && [ -n "$b_first" ] && [ "$a_done" -lt "$b_first" ] || problems+=("beta was touched before alpha was done")
healthy alpha && healthy beta && sees_alive alpha beta && sees_alive beta alpha || problems+=("the mesh is not healthy afterwards")
if [ "${#problems[@]}" -eq 0 ]; then
    ok "1. good deploy: alpha then beta each passed the gate ($(grep -o 'heartbeat [0-9]* ms after' "$log" | cut -d' ' -f2 | paste -sd/) ms after the restart point); both run the new binary, pom.prev is the old one ($((SECONDS - t))s)"
else
    fail "1. good deploy: ${problems[*]}"
    detail <"$log"
fi

# --- 2. a binary that exits 1 ------------------------------------------------------------------
# bad_deploy NUMBER WHAT BINARY EXPECTED_GREP: deploys BINARY, which must fail on alpha and be
# rolled back; beta must not change at all.
bad_deploy() {
    local n="$1" what="$2" bin="$3" expect="$4" log="$T/$1-bad.log" t=$SECONDS beta_before alpha_pid
    local calls beta_calls problems=()
    beta_before="$(snapshot beta)"
    calls="$(ssh_calls)"
    alpha_pid="$(running_pid alpha)"
    local t0
    t0="$(now_ms)"
    run_deploy "$log" --binary-"$ARCH" "$bin" --gate-timeout 6 "$hosts_file"
    [ "$rc" -eq 1 ] || problems+=("exit status $rc, expected 1")
    grep -q -- "$expect" "$log" || problems+=("no '$expect' in the output")
    grep -q "runs the previous one again and is healthy" "$log" || problems+=("no report of a healthy rollback")
    s="$(state_of alpha)"
    [[ "$s" == "installed=new prev=new running=new "* ]] || problems+=("alpha: $s (expected the new binary back, running)")
    [ "$(running_pid alpha)" != "$alpha_pid" ] || problems+=("alpha was not restarted")
    healthy alpha || problems+=("alpha's /api/health is not ok")
    # The rolled-back agent is back in the mesh: beta heard from it after the deploy began.
    wait_for 10 sees_alive beta alpha "$t0" || problems+=("beta does not see alpha alive again: $(peer_field beta alpha state || true), heartbeat $(peer_field beta alpha last_heartbeat || true)")
    [ "$(snapshot beta)" = "$beta_before" ] || problems+=("beta changed: $(diff <(echo "$beta_before") <(snapshot beta) | tr '\n' ' ' || true)")
    beta_calls="$(tail -n +"$((calls + 1))" "$T/ssh.log" | awk -F'\t' '$1 == "beta" { print $2 }')"
    if grep -qE '^(cat >|rm |cp |mv |bash |systemctl )' <<<"$beta_calls"; then
        problems+=("deploy.sh ran more than read-only queries on beta: $(grep -E '^(cat >|rm |cp |mv |bash |systemctl )' <<<"$beta_calls" | paste -sd';' || true)")
    fi
    if [ "${#problems[@]}" -eq 0 ]; then
        ok "$n. $what: alpha failed its gate ($(grep -m1 -o 'gate failed after [0-9]*s' "$log" || grep -m1 -o 'systemctl start pom failed' "$log")), was rolled back to the previous binary, is healthy and seen alive by beta; beta untouched ($((SECONDS - t))s)"
    else
        fail "$n. $what: ${problems[*]}"
        detail <"$log"
        tail -n 15 "$(hostdir alpha)/var-log/pom.log" | detail
    fi
}
bad_deploy 2 "a binary that exits 1" "$T/bin/pom-exit1" "systemctl start pom failed"
# Before 3: beta still lists alpha alive from its last heartbeats, which is what the gate must
# not fall for.
bad_deploy 3 "a binary that serves /api/health but never rejoins the mesh" "$T/bin/pom-nomesh" \
    "beta sees alpha alive, connected false, last heartbeat .* (before the restart point"

# --- 4. --dry-run ------------------------------------------------------------------------------
log="$T/4-dry.log"
before="$(snapshot alpha beta)"
calls="$(ssh_calls)"
run_deploy "$log" --dry-run --binary-"$ARCH" "$T/bin/pom-old" "$hosts_file"
problems=()
[ "$rc" -eq 0 ] || problems+=("exit status $rc")
[ "$(ssh_calls)" -eq "$calls" ] || problems+=("$(( $(ssh_calls) - calls )) ssh call(s)")
[ "$(snapshot alpha beta)" = "$before" ] || problems+=("a host changed")
for want in "1. alpha  ssh root@alpha  $ARCH" "2. beta  ssh root@beta  $ARCH" "pom-old" \
    "alpha\$ systemctl stop pom" "beta\$ date +%s%3N" "alpha\$ systemctl reset-failed pom >/dev/null 2>&1; systemctl start pom" \
    "install.sh --binary /usr/local/bin/pom.new" "alpha\$ cp -p /usr/local/bin/pom.prev" "beta\$ systemctl reset-failed pom >/dev/null 2>&1; systemctl start pom"; do
    grep -qF -- "$want" "$log" || problems+=("the plan lacks '$want'")
done
if [ "${#problems[@]}" -eq 0 ]; then
    ok "4. --dry-run: the plan (hosts in order, arch, binary, $(grep -c '\$ ' "$log") commands), no ssh call, both hosts unchanged"
else
    fail "4. --dry-run: ${problems[*]}"
    detail <"$log"
fi

# --- 5. no cross toolchain ---------------------------------------------------------------------
log="$T/5-toolchain.log"
other_hosts="$T/hosts-mixed.txt"
printf 'alpha root@alpha %s\ngamma root@gamma %s\n' "$ARCH" "$OTHER" >"$other_hosts"
var="CARGO_TARGET_${OTHER^^}_UNKNOWN_LINUX_GNU_LINKER"
pkg="gcc-${OTHER//_/-}-linux-gnu"
before="$(snapshot alpha beta)"
calls="$(ssh_calls)"
rc=0
env "$var=/nonexistent/$OTHER-linux-gnu-gcc" POM_DEPLOY_SSH="$SHIM" \
    "$DEPLOY" --binary-"$ARCH" "$T/bin/pom-old" "$other_hosts" >"$log" 2>&1 || rc=$?
problems=()
[ "$rc" -eq 2 ] || problems+=("exit status $rc, expected 2")
[ "$(ssh_calls)" -eq "$calls" ] || problems+=("$(( $(ssh_calls) - calls )) ssh call(s) before failing")
[ "$(snapshot alpha beta)" = "$before" ] || problems+=("a host changed")
for want in "apt-get install $pkg" "$var" "nothing was built, uploaded or restarted"; do
    grep -qF -- "$want" "$log" || problems+=("the error does not say '$want'")
done
if ! compgen -G "$(rustc --print sysroot 2>/dev/null)/lib/rustlib/$OTHER-unknown-linux-gnu/lib/libstd-*.rlib" >/dev/null; then
    grep -qF "rustup target add $OTHER-unknown-linux-gnu" "$log" || problems+=("the error does not say 'rustup target add $OTHER-unknown-linux-gnu'")
fi
if [ "${#problems[@]}" -eq 0 ]; then
    ok "5. no $OTHER toolchain for host gamma: exit 2 before any ssh call, naming the fixes ($(grep -c '^  - ' "$log") listed); no host changed"
else
    fail "5. no $OTHER toolchain: ${problems[*]}"
    detail <"$log"
fi

# --- 6. a single host --------------------------------------------------------------------------
log="$T/6-single.log"
printf 'beta root@beta %s\n' "$ARCH" >"$T/hosts-single.txt"
alpha_before="$(snapshot alpha)"
run_deploy "$log" --binary-"$ARCH" "$T/bin/pom-old" --gate-timeout 30 "$T/hosts-single.txt"
problems=()
[ "$rc" -eq 0 ] || problems+=("exit status $rc")
grep -q "warning: a single host: the gate's second half" "$log" || problems+=("no warning about the skipped mesh half")
grep -q "gate passed: .*the mesh half skipped" "$log" || problems+=("no gate pass")
s="$(state_of beta)"
[[ "$s" == "installed=old prev=new running=old "* ]] || problems+=("beta: $s")
[ "$(snapshot alpha)" = "$alpha_before" ] || problems+=("alpha changed")
if [ "${#problems[@]}" -eq 0 ]; then
    ok "6. a one-host fleet: beta deployed behind /api/health alone, with a warning that the mesh half is skipped; alpha untouched"
else
    fail "6. a one-host fleet: ${problems[*]}"
    detail <"$log"
fi

echo
if [ "$failed" -gt 0 ]; then
    echo "deploy-gate: $failed check(s) failed ($((SECONDS - started))s)"
    exit 1
fi
echo "deploy-gate: all checks passed ($((SECONDS - started))s)"
