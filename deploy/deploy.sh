#!/usr/bin/env bash
# Rolls a new pom binary out to the whole fleet, one host at a time, behind a health gate.
#
# Usage: deploy/deploy.sh [options] HOSTS_FILE
#   --binary-x86_64 PATH   use this x86_64 binary instead of building one
#   --binary-aarch64 PATH  use this aarch64 binary instead of building one
#   --gate-timeout SECS    how long a restarted host may take to pass the gate (default 60)
#   --api URL              each agent's API as seen on its own host (default
#                          http://127.0.0.1:9100, the default [agent] api_listen)
#   --dry-run              print the plan and every command; build, contact and change nothing
#   -h, --help             this text
# HOSTS_FILE: one host a line, `name ssh_target arch`; `#` starts a comment. name is the agent's
# [agent] name (its mesh name), ssh_target what `ssh` takes (it must log in as root), arch
# x86_64 or aarch64. See deploy/hosts.example.
#
# Exit codes: 0 every host runs the new binary and passed the gate; 1 a host failed and is on
# its previous binary again, healthy (rolled back, or never swapped); the hosts after it were not
# touched; 2 a problem found before any host changed (usage, hosts file, toolchain, build,
# preflight); 3 a host failed and its rollback did not bring it back healthy: it needs a human.
#
# What it does, in this order; no host changes before step 3, and then one host at a time:
#   1. Reads the hosts file. For each arch it uses, takes the --binary-ARCH given or builds one:
#      `cargo build --release --locked -p pom --target x86_64-unknown-linux-gnu` (or aarch64-...).
#      Before building anything it checks every toolchain it needs (the Rust standard library
#      for the target, a cross linker) and lists every fix at once.
#   2. Preflight, read-only, every host: ssh works as root, `uname -m` matches the arch, pom is
#      installed (run deploy/install.sh there and configure the host first), curl and
#      systemctl exist, the agent's /api/health answers ok with this name, and the host that
#      will watch it (below) lists it as a mesh peer.
#   3. Per host, in file order: uploads deploy/install.sh, systemd/pom.service and
#      deploy/examples/ to /var/lib/pom-deploy/, and the binary to /usr/local/bin/pom.new, and
#      checks its sha256; copies the installed binary to /usr/local/bin/pom.prev (what ran
#      before this deploy); runs install.sh --binary /usr/local/bin/pom.new, which replaces
#      /usr/local/bin/pom atomically (the running agent keeps its old code until it restarts),
#      refreshes the unit and never touches /etc/pom/pom.toml, /etc/pom/env or /etc/pom/mesh/.
#   4. Restarts it: `systemctl stop pom`, then reads the watching host's clock, then
#      `systemctl reset-failed pom; systemctl start pom` (a restart in two halves, so the gate
#      has a point in time that lies after the old agent's death and before the new one's
#      birth; Type=notify makes start wait for the new agent's READY).
#   5. The gate, polled every 0.5 s until --gate-timeout: (a) on the host itself,
#      `curl $API/api/health` answers {"status":"ok"} with the host's name; (b) on another host
#      of the fleet, its /api/mesh (what `pom mesh` prints there; the bearer token is read on
#      that host from /etc/pom/env) shows this host `alive`, connected, with a heartbeat that
#      arrived after the restart point. A peer stays `alive` for missed_heartbeats x
#      heartbeat_interval after its last heartbeat, so "alive" alone could be the old agent's
#      ghost; a heartbeat after the restart point can only come from the new one (an agent
#      sends one as soon as it connects). Neither check depends on what is being deployed
#      waiting for anything: the gate is the agent's own health and a peer's independent view.
#      The watcher is the first host in the file (the second, for the first host). With a
#      single host, (b) is skipped with a warning.
#   6. Gate passed: removes the upload, moves on. Gate failed (or systemctl start failed):
#      puts /usr/local/bin/pom.prev back, restarts, gates that too, reports, and stops.
#
# To roll a host back by hand later: install -m 0755 /usr/local/bin/pom.prev /usr/local/bin/pom
# && systemctl restart pom.
#
# Tools: bash, ssh, tar, sha256sum, GNU date and jq here; sh, curl, tar, sha256sum, GNU date and
# systemctl on the hosts. Every remote command goes through one function, which runs
# ${POM_DEPLOY_SSH:-ssh} TARGET COMMAND (uploads: the same, with the file on stdin). Set
# POM_DEPLOY_SSH to another command (it is split on spaces) to run them some other way: the
# tests (deploy/tests/deploy-gate.sh) use a shim that runs them in local network namespaces.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly BIN=/usr/local/bin/pom
readonly PREV=$BIN.prev
readonly NEW=$BIN.new
readonly STAGE=/var/lib/pom-deploy
readonly ENV_FILE=/etc/pom/env
readonly POLL=0.5

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }
say() { printf '%s\n' "$*"; }
warn() { printf 'deploy.sh: warning: %s\n' "$*" >&2; }
err() { printf 'deploy.sh: error: %s\n' "$*" >&2; }
# A problem found before any host changed.
die() { err "$@"; exit 2; }
usage_error() { err "$@"; echo "usage: deploy/deploy.sh [options] HOSTS_FILE (see --help)" >&2; exit 2; }
indent() { sed 's/^/    /'; }

# --- arguments -------------------------------------------------------------------------------
declare -A given_binary=()
hosts_file=""
gate_timeout=60
api=http://127.0.0.1:9100
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --binary-x86_64|--binary-aarch64)
            [ $# -ge 2 ] || usage_error "$1 needs a PATH"
            given_binary[${1#--binary-}]="$2"; shift 2 ;;
        --binary-x86_64=*|--binary-aarch64=*)
            opt="${1%%=*}"; given_binary[${opt#--binary-}]="${1#*=}"; shift ;;
        --gate-timeout) [ $# -ge 2 ] || usage_error "--gate-timeout needs SECONDS"; gate_timeout="$2"; shift 2 ;;
        --gate-timeout=*) gate_timeout="${1#*=}"; shift ;;
        --api) [ $# -ge 2 ] || usage_error "--api needs a URL"; api="$2"; shift 2 ;;
        --api=*) api="${1#*=}"; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage_error "unknown option: $1" ;;
        *) [ -z "$hosts_file" ] || usage_error "one HOSTS_FILE only (got $hosts_file and $1)"; hosts_file="$1"; shift ;;
    esac
done
[ -n "$hosts_file" ] || usage_error "no HOSTS_FILE (see deploy/hosts.example)"
[[ "$gate_timeout" =~ ^[1-9][0-9]*$ ]] || usage_error "--gate-timeout: a whole number of seconds, at least 1 (got '$gate_timeout')"
api="${api%/}"
# The URL goes into remote shell commands: only plain characters.
api_re='^https?://[][A-Za-z0-9.:_-]+$'
[[ "$api" =~ $api_re ]] || usage_error "--api: a URL like http://127.0.0.1:9100 (got '$api')"

# --- the hosts file --------------------------------------------------------------------------
names=()
targets=()
arches=()
{ [ -f "$hosts_file" ] && [ -r "$hosts_file" ]; } || die "cannot read the hosts file $hosts_file"
target_re='^[][A-Za-z0-9_.@:%-]+$'
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line="${line%%#*}"
    read -r -a fields <<<"$line" || true
    [ "${#fields[@]}" -gt 0 ] || continue
    where="$hosts_file:$lineno"
    [ "${#fields[@]}" -eq 3 ] || die "$where: expected 'name ssh_target arch', got ${#fields[@]} field(s): ${fields[*]}"
    name="${fields[0]}" target="${fields[1]}" arch="${fields[2]}"
    [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "$where: the name '$name' is not an agent name (letters, digits, '.', '_', '-')"
    [[ "$target" =~ $target_re && "$target" != -* ]] || die "$where: the ssh target '$target' is not a plain [user@]host"
    case "$arch" in
        x86_64|aarch64) ;;
        *) die "$where: arch '$arch': use x86_64 or aarch64" ;;
    esac
    for ((i = 0; i < ${#names[@]}; i++)); do
        [ "${names[i]}" != "$name" ] || die "$where: the name '$name' appears twice"
        [ "${targets[i]}" != "$target" ] || die "$where: the ssh target '$target' appears twice"
    done
    names+=("$name")
    targets+=("$target")
    arches+=("$arch")
done <"$hosts_file"
readonly n_hosts=${#names[@]}
[ "$n_hosts" -gt 0 ] || die "$hosts_file lists no host"

# The host whose view of the mesh gates host $1: the first in the file, the second for the first.
observer_of() {
    if [ "$n_hosts" -lt 2 ]; then echo -1
    elif [ "$1" -eq 0 ]; then echo 1
    else echo 0
    fi
}

# --- binaries and toolchains -----------------------------------------------------------------
triple_of() { echo "$1-unknown-linux-gnu"; }
cross_gcc_of() { echo "$1-linux-gnu-gcc"; }
cross_pkg_of() { case "$1" in x86_64) echo gcc-x86-64-linux-gnu ;; aarch64) echo gcc-aarch64-linux-gnu ;; esac; }
linker_var_of() { local t; t="$(triple_of "$1")"; t="${t^^}"; echo "CARGO_TARGET_${t//-/_}_LINKER"; }

# The linker a cargo config file sets for triple $2 ([target.TRIPLE] linker = "..."), if any.
config_linker() {
    [ -f "$1" ] || return 0
    awk -v section="[target.$2]" '
        /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); inside = ($0 == section); next }
        inside && /^[[:space:]]*linker[[:space:]]*=/ {
            sub(/^[^=]*=[[:space:]]*/, ""); gsub(/^["'\'']|["'\''][[:space:]]*(#.*)?$/, ""); print; exit
        }' "$1"
}

# The ELF machine of file $1: x86_64, aarch64, other, or none (not ELF, e.g. a script).
elf_arch() {
    local magic machine
    magic="$(od -An -tx1 -N4 "$1" | tr -d ' \n')"
    [ "$magic" = 7f454c46 ] || { echo none; return; }
    machine="$(od -An -tu1 -j18 -N2 "$1" | awk '{ print $1 + 256 * $2 }')"
    case "$machine" in 62) echo x86_64 ;; 183) echo aarch64 ;; *) echo "other (e_machine $machine)" ;; esac
}

needed=()
for a in x86_64 aarch64; do
    for h in "${arches[@]}"; do
        if [ "$h" = "$a" ]; then needed+=("$a"); break; fi
    done
done
for a in "${!given_binary[@]}"; do
    [[ " ${needed[*]} " == *" $a "* ]] || warn "--binary-$a given, but no host in $hosts_file is $a: ignored"
done

declare -A binary=()
to_build=()
problems=()
for a in "${needed[@]}"; do
    if [ -n "${given_binary[$a]:-}" ]; then
        b="${given_binary[$a]}"
        { [ -f "$b" ] && [ -r "$b" ]; } || { problems+=("--binary-$a $b: no such file"); continue; }
        case "$(elf_arch "$b")" in
            "$a") ;;
            none) warn "--binary-$a $b is not an ELF binary (a script?); deploying it as given" ;;
            *) problems+=("--binary-$a $b is an ELF binary for $(elf_arch "$b"), not $a") ;;
        esac
        binary[$a]="$(cd "$(dirname "$b")" && pwd)/$(basename "$b")"
    else
        to_build+=("$a")
    fi
done

# Checks what `cargo build --target` needs for arch $1; appends each missing piece, with its
# fix, to problems.
check_toolchain() {
    local a="$1" triple host sysroot var linker src gcc pkg
    triple="$(triple_of "$a")"
    gcc="$(cross_gcc_of "$a")"
    pkg="$(cross_pkg_of "$a")"
    var="$(linker_var_of "$a")"
    host="$(uname -m)-unknown-linux-gnu"
    if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
        problems+=("building for $a needs cargo and rustc: install Rust (https://rustup.rs), then: rustup target add $triple")
    else
        host="$(rustc -vV | sed -n 's/^host: //p')"
        sysroot="$(rustc --print sysroot)"
        if ! compgen -G "$sysroot/lib/rustlib/$triple/lib/libstd-*.rlib" >/dev/null; then
            problems+=("the Rust standard library for $triple is not installed. Fix: rustup target add $triple")
        fi
    fi
    [ "$triple" != "$host" ] || return 0
    # A cross build needs a linker for the target; ring and SQLite also need its C compiler.
    linker="${!var:-}"
    src="\$$var"
    if [ -z "$linker" ]; then
        for f in "$REPO/.cargo/config.toml" "$REPO/.cargo/config" \
            "${CARGO_HOME:-$HOME/.cargo}/config.toml" "${CARGO_HOME:-$HOME/.cargo}/config"; do
            linker="$(config_linker "$f" "$triple")"
            if [ -n "$linker" ]; then src="target.$triple.linker in $f"; break; fi
        done
    fi
    if [ -n "$linker" ]; then
        command -v "$linker" >/dev/null || problems+=("$src is '$linker', and there is no such program. Fix: apt-get install $pkg, then export $var=$gcc")
    elif command -v "$gcc" >/dev/null; then
        export "$var=$gcc"
        say "toolchain: no linker configured for $triple; using $gcc ($var=$gcc)"
    else
        problems+=("no linker for $triple (no $var, no target.$triple.linker in a cargo config, no $gcc on PATH). Fix: apt-get install $pkg, then export $var=$gcc")
    fi
}
for a in "${to_build[@]}"; do check_toolchain "$a"; done
# GNU date: the gate compares RFC 3339 heartbeat times in milliseconds.
if [ "$(date -u -d 2026-01-01T00:00:00.5Z +%s%3N 2>/dev/null)" != 1767225600500 ]; then
    problems+=("this date cannot read RFC 3339 times in milliseconds; the gate needs GNU date (coreutils)")
fi
if [ -z "${POM_DEPLOY_SSH:-}" ] && ! command -v ssh >/dev/null; then
    problems+=("ssh is missing here. Fix: apt-get install openssh-client")
fi
if ! command -v jq >/dev/null; then
    if [ "$dry_run" = true ]; then
        warn "jq is missing here; the gate needs it to read /api/health and /api/mesh (apt-get install jq)"
    else
        problems+=("jq is missing here; the gate needs it to read /api/health and /api/mesh. Fix: apt-get install jq")
    fi
fi
if [ "${#problems[@]}" -gt 0 ]; then
    err "cannot deploy; nothing was built, uploaded or restarted:"
    for p in "${problems[@]}"; do printf '  - %s\n' "$p" >&2; done
    exit 2
fi

target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
case "$target_dir" in /*) ;; *) target_dir="$REPO/$target_dir" ;; esac
for a in "${to_build[@]}"; do
    binary[$a]="$target_dir/$(triple_of "$a")/release/pom"
done

say "deploy: $n_hosts host(s) from $hosts_file, one at a time, gate timeout ${gate_timeout}s, API $api"
if [ "$dry_run" = true ]; then
    say "DRY RUN: nothing is built, uploaded or restarted, and no host is contacted; this is the plan"
fi

for a in "${to_build[@]}"; do
    build=(cargo build --release --locked -p pom --target "$(triple_of "$a")")
    if [ "$dry_run" = true ]; then
        say "build $a: (cd $REPO && ${build[*]}) -> ${binary[$a]}"
        continue
    fi
    say "build $a: ${build[*]}"
    (cd "$REPO" && "${build[@]}") || die "the $a build failed; nothing was uploaded or restarted"
    [ -f "${binary[$a]}" ] || die "the $a build succeeded, but there is no ${binary[$a]}"
done

declare -A sha=()
for a in "${needed[@]}"; do
    if [ -f "${binary[$a]}" ]; then
        sha[$a]="$(sha256sum "${binary[$a]}" | cut -d' ' -f1)"
        say "binary $a: ${binary[$a]} (sha256 ${sha[$a]})"
    else
        sha[$a]="(built at deploy time)"
        say "binary $a: ${binary[$a]} (built at deploy time)"
    fi
done

# --- remote execution ------------------------------------------------------------------------
exec 3>&1
if [ -n "${POM_DEPLOY_SSH:-}" ]; then
    read -r -a ssh_cmd <<<"$POM_DEPLOY_SSH"
else
    ssh_cmd=(ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
fi

# remote HOST_INDEX COMMAND [FILE]: runs COMMAND (sh) on the host, with FILE (or nothing) on its
# stdin. The one place that reaches a host. In a dry run it prints what it would run.
remote() {
    local i="$1" cmd="$2" input="${3:-/dev/null}" prompt
    if [ "$dry_run" = true ]; then
        # To fd 3, the script's stdout: callers capture stdout, and the plan must show.
        prompt="    ${names[i]}\$ "
        {
            printf '%s%s' "$prompt" "${cmd//$'\n'/$'\n'"${prompt//?/ }"}"
            case "$input" in
                /dev/null) ;;
                */bundle.tar) printf '    (stdin: a tar of deploy/install.sh, deploy/examples/, systemd/pom.service)' ;;
                *) printf '    (stdin: %s)' "$input" ;;
            esac
            printf '\n'
        } >&3
        return 0
    fi
    "${ssh_cmd[@]}" "${targets[i]}" "$cmd" <"$input"
}

# The remote commands, as they run on the host (POSIX sh). @API@, @BIN@ and the like are filled
# in below; the values are checked plain strings.
CMD_PREFLIGHT="$(cat <<'EOF'
echo "arch=$(uname -m)"
echo "uid=$(id -u)"
echo "clock=$(date +%s%3N)"
if [ -x @BIN@ ]; then echo installed=yes; else echo installed=no; fi
if [ -f /etc/pom/pom.toml ]; then echo config=yes; else echo config=no; fi
for c in curl systemctl tar sha256sum bash; do command -v $c >/dev/null || echo "missing=$c"; done
EOF
)"
CMD_HEALTH="curl -s --max-time 5 @API@/api/health"
# Reads the token on the host and hands it to curl on stdin: it never shows in a process list.
CMD_MESH="$(cat <<'EOF'
tok=$(sed -n 's/^POM_API_TOKEN=//p' @ENV@ 2>/dev/null | tail -n 1)
case $tok in \"*\") tok=${tok#\"}; tok=${tok%\"} ;; \'*\') tok=${tok#\'}; tok=${tok%\'} ;; esac
printf 'Authorization: Bearer %s\n' "$tok" | curl -s --max-time 5 -H @- -w '\n%{http_code}\n' @API@/api/mesh
EOF
)"
CMD_CLOCK="date +%s%3N"
CMD_UPLOAD_BUNDLE="rm -rf @STAGE@ && mkdir -m 0700 @STAGE@ && tar -C @STAGE@ -xf -"
CMD_UPLOAD_BINARY="cat >@NEW@.tmp && chmod 0755 @NEW@.tmp && mv -f @NEW@.tmp @NEW@ && sha256sum @NEW@"
CMD_KEEP_PREV="cp -p @BIN@ @PREV@.tmp && mv -f @PREV@.tmp @PREV@ && sha256sum @PREV@"
CMD_INSTALL="bash @STAGE@/deploy/install.sh --binary @NEW@"
CMD_RESTORE="cp -p @PREV@ @BIN@.rollback-tmp && mv -f @BIN@.rollback-tmp @BIN@ && sha256sum @BIN@"
CMD_STOP="systemctl stop pom"
# reset-failed first: a bad binary that crash-looped may have hit StartLimitBurst, and then
# systemd refuses every start (the rollback's too) until the counter is reset.
CMD_START="systemctl reset-failed pom >/dev/null 2>&1; systemctl start pom"
CMD_CLEANUP="rm -rf @STAGE@ @NEW@"
fill() {
    local s="$1"
    s="${s//@API@/$api}"; s="${s//@BIN@/$BIN}"; s="${s//@PREV@/$PREV}"; s="${s//@NEW@/$NEW}"
    s="${s//@STAGE@/$STAGE}"; s="${s//@ENV@/$ENV_FILE}"
    printf '%s' "$s"
}
for c in CMD_PREFLIGHT CMD_HEALTH CMD_MESH CMD_UPLOAD_BUNDLE CMD_UPLOAD_BINARY CMD_KEEP_PREV \
    CMD_INSTALL CMD_RESTORE CMD_CLEANUP; do
    printf -v "$c" '%s' "$(fill "${!c}")"
done
readonly CMD_PREFLIGHT CMD_HEALTH CMD_MESH CMD_CLOCK CMD_UPLOAD_BUNDLE CMD_UPLOAD_BINARY \
    CMD_KEEP_PREV CMD_INSTALL CMD_RESTORE CMD_STOP CMD_START CMD_CLEANUP

now_ms() { date +%s%3N; }

# mesh_view OBSERVER: the observer's /api/mesh JSON on stdout, or a reason on stderr and 1.
mesh_view() {
    local o="$1" out code
    if ! out="$(remote "$o" "$CMD_MESH" 2>&1)"; then
        echo "cannot query ${names[o]}'s API over ssh: $(tail -n 1 <<<"$out")" >&2
        return 1
    fi
    code="$(tail -n 1 <<<"$out")"
    case "$code" in
        200) sed '$d' <<<"$out" ;;
        401) echo "${names[o]}'s API refused the token from ${names[o]}:$ENV_FILE (POM_API_TOKEN)" >&2; return 1 ;;
        000) echo "${names[o]}'s API at $api does not answer" >&2; return 1 ;;
        *) echo "${names[o]}'s /api/mesh answered HTTP $code" >&2; return 1 ;;
    esac
}

# health_of HOST: 0 if its /api/health says ok with its own name; else the reason on stdout.
health_of() {
    local i="$1" out status name
    if ! out="$(remote "$i" "$CMD_HEALTH" 2>&1)" || [ -z "$out" ]; then
        echo "/api/health at $api does not answer"
        return 1
    fi
    status="$(jq -r '.status // empty' <<<"$out" 2>/dev/null)" || status=""
    name="$(jq -r '.name // empty' <<<"$out" 2>/dev/null)" || name=""
    if [ "$status" != ok ]; then
        echo "/api/health answered: $(head -c 200 <<<"$out")"
        return 1
    fi
    if [ "$name" != "${names[i]}" ]; then
        echo "/api/health says this agent is '$name', not '${names[i]}' (check [agent] name or the hosts file)"
        return 1
    fi
    jq -r '"version \(.version // "?")"' <<<"$out"
}


# --- preflight -------------------------------------------------------------------------------
# Read-only: nothing on any host changes before every host passed.
say ""
if [ "$dry_run" = true ]; then
    say "every remote command runs as: ${ssh_cmd[*]} SSH_TARGET COMMAND"
    say ""
    say "plan, in this order; each host passes its gate before the next one is touched:"
    for ((i = 0; i < n_hosts; i++)); do
        o="$(observer_of "$i")"
        watcher="none (a single host: the mesh half of the gate is skipped)"
        [ "$o" -lt 0 ] || watcher="${names[o]}"
        say "  $((i + 1)). ${names[i]}  ssh ${targets[i]}  ${arches[i]}  binary ${binary[${arches[i]}]}  gate watcher: $watcher"
    done
    say ""
    say "preflight, read-only, every host: arch, root, pom installed, tools, clock; then /api/health:"
    for ((i = 0; i < n_hosts; i++)); do
        remote "$i" "$CMD_PREFLIGHT"
        remote "$i" "$CMD_HEALTH"
    done
    say "each gate watcher's /api/mesh must list the host it watches:"
    declare -A shown=()
    for ((i = 0; i < n_hosts; i++)); do
        o="$(observer_of "$i")"
        if [ "$o" -ge 0 ] && [ -z "${shown[$o]+set}" ]; then
            shown[$o]=1
            remote "$o" "$CMD_MESH"
        fi
    done
else
    say "preflight (read-only):"
    preflight_failed=0
    value() { sed -n "s/^$1=//p" <<<"$out" | head -n 1; }
    for ((i = 0; i < n_hosts; i++)); do
        pf=()
        if ! out="$(remote "$i" "$CMD_PREFLIGHT" 2>&1)"; then
            err "${names[i]} (ssh ${targets[i]}): cannot run commands there: $(tail -n 1 <<<"$out")"
            preflight_failed=1
            continue
        fi
        [ "$(value arch)" = "${arches[i]}" ] || pf+=("it is '$(value arch)', and the hosts file says ${arches[i]}")
        [ "$(value uid)" = 0 ] || pf+=("ssh ${targets[i]} logs in as uid '$(value uid)', not root")
        [[ "$(value clock)" =~ ^[0-9]{13}$ ]] || pf+=("its date lacks +%s%3N (milliseconds): the gate needs GNU date there")
        [ "$(value installed)" = yes ] && [ "$(value config)" = yes ] \
            || pf+=("pom is not installed ($BIN or /etc/pom/pom.toml is missing): run deploy/install.sh there and configure it first")
        while read -r m; do pf+=("it has no $m"); done < <(sed -n 's/^missing=//p' <<<"$out")
        health=""
        if [ "${#pf[@]}" -eq 0 ] && ! health="$(health_of "$i")"; then
            pf+=("its agent is not healthy: $health. Fix it first, or leave it out of the hosts file")
        fi
        if [ "${#pf[@]}" -gt 0 ]; then
            for p in "${pf[@]}"; do err "${names[i]}: $p"; done
            preflight_failed=1
        else
            say "  ${names[i]}: ok (${arches[i]}, agent healthy, $health)"
        fi
    done
    if [ "$preflight_failed" -eq 0 ]; then
        declare -A views=()
        for ((i = 0; i < n_hosts; i++)); do
            o="$(observer_of "$i")"
            [ "$o" -ge 0 ] || continue
            if [ -z "${views[$o]+set}" ] && ! views[$o]="$(mesh_view "$o" 2>&1)"; then
                err "${names[o]} is to watch ${names[i]}'s gate, but: ${views[$o]}"
                views[$o]='{}'
                preflight_failed=1
                continue
            fi
            state="$(jq -r --arg n "${names[i]}" '.peers[]? | select(.name == $n) | .state' <<<"${views[$o]}" 2>/dev/null)" || state=""
            if [ -z "$state" ]; then
                err "${names[o]} is to watch ${names[i]}'s gate, but its /api/mesh does not list ${names[i]} as a peer (it lists: $(jq -r '[.peers[]?.name] | join(", ")' <<<"${views[$o]}" 2>/dev/null))"
                preflight_failed=1
            else
                say "  ${names[o]} lists ${names[i]} as a peer, $state now"
            fi
        done
    fi
    [ "$preflight_failed" -eq 0 ] || die "preflight failed; no host was changed"
    [ "$n_hosts" -gt 1 ] || warn "a single host: the gate's second half (another host sees it alive) is skipped"
fi

# --- the deploy ------------------------------------------------------------------------------
bundle_dir="$(mktemp -d)"
current=""
phase=""
done_hosts=""
trap 'rm -rf "$bundle_dir"' EXIT
on_signal() {
    trap - INT TERM
    if [ -n "$current" ]; then
        err "interrupted on $current while $phase. Check it: $PREV is what ran before (roll back: install -m 0755 $PREV $BIN && systemctl restart pom)"
    else
        err "interrupted between hosts${done_hosts:+; updated: $done_hosts}"
    fi
    exit 130
}
trap on_signal INT TERM
tar -C "$REPO" -cf "$bundle_dir/bundle.tar" deploy/install.sh deploy/examples systemd/pom.service
stopped() { printf 'Stopped: the hosts after %s were not touched%s.' "$current" "${done_hosts:+ (updated before it: $done_hosts)}"; }

# gate HOST WATCHER T0_MS: polls until (a) and (b) hold, or the timeout passes; returns 1 then.
gate() {
    local i="$1" o="$2" t0="$3" deadline problem health view peer state connected hb hb_ms
    deadline=$(($(now_ms) + gate_timeout * 1000))
    while :; do
        problem=""
        if ! health="$(health_of "$i")"; then
            problem="${names[i]}: $health"
        elif [ "$o" -lt 0 ]; then
            say "  gate passed: /api/health ok ($health); the mesh half skipped (a single host)"
            return 0
        elif ! view="$(mesh_view "$o" 2>&1)"; then
            problem="$view"
        else
            peer="$(jq -c --arg n "${names[i]}" '.peers[]? | select(.name == $n)' <<<"$view" 2>/dev/null)" || peer=""
            if [ -z "$peer" ]; then
                problem="${names[o]}'s /api/mesh does not list ${names[i]}"
            else
                state="$(jq -r '.state' <<<"$peer")"
                connected="$(jq -r '.connected' <<<"$peer")"
                hb="$(jq -r '.last_heartbeat // ""' <<<"$peer")"
                hb_ms=0
                [ -z "$hb" ] || hb_ms="$(date -u -d "$hb" +%s%3N 2>/dev/null)" || hb_ms=0
                if [ "$state" = alive ] && [ "$connected" = true ] && [ "$hb_ms" -ge "$t0" ]; then
                    # Once more (a): an agent that crashed meanwhile must not pass.
                    if health="$(health_of "$i")"; then
                        say "  gate passed: /api/health ok ($health); ${names[o]} sees ${names[i]} alive, heartbeat $((hb_ms - t0)) ms after the restart point"
                        return 0
                    fi
                    problem="${names[i]}: $health"
                else
                    problem="${names[o]} sees ${names[i]} $state, connected $connected, last heartbeat ${hb:-never}"
                    [ "$hb_ms" -ge "$t0" ] || problem+=" (before the restart point: not from the new agent)"
                fi
            fi
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            err "${names[i]}: the gate failed after ${gate_timeout}s: $problem"
            return 1
        fi
        sleep "$POLL"
    done
}

# systemctl_step HOST VERB COMMAND: runs `systemctl VERB pom` (as COMMAND) on HOST and shows
# what it printed; fails with a message naming the host.
systemctl_step() {
    local i="$1" verb="$2" cmd="$3" out
    say "  systemctl $verb pom"
    if ! out="$(remote "$i" "$cmd" 2>&1)"; then
        [ -z "$out" ] || indent <<<"$out"
        err "${names[i]}: systemctl $verb pom failed"
        return 1
    fi
    [ -z "$out" ] || indent <<<"$out"
}

# restart_and_gate HOST WATCHER: stop, the restart point on the watcher's clock, start, gate.
restart_and_gate() {
    local i="$1" o="$2" t0=0
    phase="stopping pom"
    systemctl_step "$i" stop "$CMD_STOP" || return 1
    if [ "$o" -ge 0 ]; then
        phase="reading ${names[o]}'s clock"
        if ! t0="$(remote "$o" "$CMD_CLOCK" 2>&1)" || ! [[ "$t0" =~ ^[0-9]{13}$ ]]; then
            err "cannot read ${names[o]}'s clock for the restart point: $t0"
            t0=0
            phase="starting pom"
            remote "$i" "$CMD_START" >/dev/null 2>&1 || true
            return 1
        fi
    fi
    phase="starting pom"
    systemctl_step "$i" start "$CMD_START" || return 1
    phase="waiting for its gate"
    gate "$i" "$o" "$t0"
}

# rollback HOST WATCHER: the previous binary back, restarted behind the same gate. Exits: 1 when
# the host is healthy again, 3 when it is not.
rollback() {
    local i="$1" o="$2" out
    say "${names[i]}: rolling back to the previous binary ($PREV)"
    phase="rolling back"
    if out="$(remote "$i" "$CMD_RESTORE" 2>&1)"; then
        say "  $BIN is the previous binary again (sha256 ${out%% *})"
        if restart_and_gate "$i" "$o"; then
            err "${names[i]} failed its gate with the new binary; it runs the previous one again and is healthy. $(stopped)"
            exit 1
        fi
    else
        [ -z "$out" ] || indent <<<"$out"
        err "${names[i]}: cannot put $PREV back as $BIN"
    fi
    err "${names[i]}: the ROLLBACK FAILED: it is not healthy. Look at it now (journalctl -u pom; $PREV is the previous binary). $(stopped)"
    exit 3
}

for ((i = 0; i < n_hosts; i++)); do
    a="${arches[i]}"
    o="$(observer_of "$i")"
    current="${names[i]}"
    started_at=$SECONDS
    say ""
    if [ "$o" -ge 0 ]; then
        say "== ${names[i]} ($((i + 1))/$n_hosts, ssh ${targets[i]}, $a; gate watcher ${names[o]})"
    else
        say "== ${names[i]} ($((i + 1))/$n_hosts, ssh ${targets[i]}, $a; no gate watcher)"
    fi

    # Until the agent is stopped, a failure needs no restart: the old agent still runs.
    phase="uploading"
    say "  upload the install files to $STAGE/ and the binary to $NEW"
    if ! out="$(remote "$i" "$CMD_UPLOAD_BUNDLE" "$bundle_dir/bundle.tar" 2>&1)"; then
        indent <<<"$out"
        err "${names[i]}: the upload failed; ${names[i]} is unchanged. $(stopped)"
        exit 1
    fi
    if ! out="$(remote "$i" "$CMD_UPLOAD_BINARY" "${binary[$a]}" 2>&1)"; then
        indent <<<"$out"
        err "${names[i]}: the binary upload failed; ${names[i]} is unchanged. $(stopped)"
        exit 1
    fi
    if [ "$dry_run" = false ] && [ "${out%% *}" != "${sha[$a]}" ]; then
        err "${names[i]}: the binary arrived damaged (sha256 ${out%% *}, expected ${sha[$a]}); ${names[i]} is unchanged. $(stopped)"
        exit 1
    fi
    phase="keeping the previous binary"
    say "  keep the installed binary as $PREV"
    if ! out="$(remote "$i" "$CMD_KEEP_PREV" 2>&1)"; then
        indent <<<"$out"
        err "${names[i]}: cannot keep the previous binary; ${names[i]} is unchanged. $(stopped)"
        exit 1
    fi
    [ "$dry_run" = true ] || say "  previous: sha256 ${out%% *}"
    phase="installing"
    say "  install (deploy/install.sh; keeps pom.toml, env and mesh/):"
    if ! out="$(remote "$i" "$CMD_INSTALL" 2>&1)"; then
        indent <<<"$out"
        err "${names[i]}: install.sh failed; putting the previous binary back (the agent was not restarted)"
        remote "$i" "$CMD_RESTORE" >/dev/null 2>&1 || err "${names[i]}: cannot put $PREV back as $BIN: do it by hand"
        err "$(stopped)"
        exit 1
    fi
    [ "$dry_run" = true ] || indent <<<"$out"

    if [ "$dry_run" = true ]; then
        say "  restart in two halves: stop; the restart point on the watcher's clock; start:"
        remote "$i" "$CMD_STOP"
        [ "$o" -lt 0 ] || remote "$o" "$CMD_CLOCK"
        remote "$i" "$CMD_START"
        say "  gate: every ${POLL}s for up to ${gate_timeout}s, until (a) and (b) hold:"
        say "   (a) /api/health answers status ok and name ${names[i]}:"
        remote "$i" "$CMD_HEALTH"
        if [ "$o" -ge 0 ]; then
            say "   (b) ${names[o]}'s /api/mesh shows ${names[i]} alive and connected, its last heartbeat after the restart point:"
            remote "$o" "$CMD_MESH"
        else
            say "   (b) skipped: a single host"
        fi
        say "  gate passed: clean up, next host:"
        remote "$i" "$CMD_CLEANUP"
        say "  gate failed: the previous binary back, the same restart and gate, then stop (exit 1):"
        remote "$i" "$CMD_RESTORE"
        continue
    fi
    if ! restart_and_gate "$i" "$o"; then
        rollback "$i" "$o"
    fi
    phase="cleaning up"
    remote "$i" "$CMD_CLEANUP" || warn "${names[i]}: cannot remove $STAGE and $NEW"
    say "  ${names[i]}: done in $((SECONDS - started_at))s"
    done_hosts+="${done_hosts:+, }${names[i]}"
    current=""
done

say ""
if [ "$dry_run" = true ]; then
    say "dry run: nothing was built, uploaded or restarted"
else
    say "deploy: done: $done_hosts run the new binary and passed the gate"
fi
