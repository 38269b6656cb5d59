#!/usr/bin/env bash
# Installs PoM on this host: the `pom` system user, the directories, the binary, the systemd unit
# and, where none exists yet, an example config and env file. Idempotent: a second run changes
# nothing. Never overwrites /etc/pom/pom.toml, /etc/pom/env or anything in /etc/pom/mesh/.
#
# Usage: deploy/install.sh [--binary PATH] [--destdir DIR] [--dry-run]
#   --binary PATH   the pom binary to install (default: target/release/pom in this checkout)
#   --destdir DIR   install under DIR instead of / (same as DESTDIR=DIR): no user is created, no
#                   owner is set and systemd is not called (see below)
#   --dry-run       print every action, change nothing
# Run as root, except with --dry-run or into a DESTDIR. It never starts or restarts the agent.
#
# Exit status: 0 done (or nothing to do), 1 an action failed, 2 bad usage (unknown option,
# missing binary, not root).
#
# What it installs (paths under DESTDIR, "/" by default):
#   /usr/local/bin/pom               0755 root:root  replaced when it differs
#   /etc/systemd/system/pom.service  0644 root:root  replaced when it differs (local changes go
#                                                    in a drop-in: systemctl edit pom)
#   /etc/pom/                        0750 root:pom
#   /etc/pom/mesh/                   0750 root:pom   for ca.crt, node.crt (0644) and node.key (pom:pom 0600)
#   /etc/pom/pom.toml                0640 root:pom   only if missing: deploy/examples/pom.toml
#   /etc/pom/env                     0600 root:root  only if missing: deploy/examples/env with a
#                                                    fresh random POM_API_TOKEN. systemd reads it
#                                                    as root; the agent never opens it
#   /var/lib/pom/                    0700 pom:pom    the agent's data_dir
# The modes and owners of the three directories are put back if they drifted. The pom user is a
# system user with its own group, home /var/lib/pom (not populated) and shell nologin.
#
# With a DESTDIR (an image or package build, a test) every path above goes under DESTDIR with the
# same modes but owned by whoever runs the script: the target's user database is not this host's,
# so no user is created here. On the target, run this script again without DESTDIR, or create
# the user and apply the owners above by hand.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly UNIT_SRC="$REPO/systemd/pom.service"
readonly CONFIG_SRC="$REPO/deploy/examples/pom.toml"
readonly ENV_SRC="$REPO/deploy/examples/env"
readonly USER_NAME=pom
readonly STATE_DIR=/var/lib/pom

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
usage_error() {
    echo "install.sh: $*" >&2
    echo "usage: deploy/install.sh [--binary PATH] [--destdir DIR] [--dry-run]  (--help for more)" >&2
    exit 2
}

binary="$REPO/target/release/pom"
binary_given=false
dry_run=false
destdir="${DESTDIR:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary)
            [ $# -ge 2 ] || usage_error "--binary needs a PATH"
            binary="$2"; binary_given=true; shift 2 ;;
        --binary=*) binary="${1#*=}"; binary_given=true; shift ;;
        --destdir)
            [ $# -ge 2 ] || usage_error "--destdir needs a DIR"
            destdir="$2"; shift 2 ;;
        --destdir=*) destdir="${1#*=}"; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
done

# DESTDIR is made absolute; a DESTDIR of "/" is the host itself.
if [ -n "$destdir" ]; then
    case "$destdir" in /*) ;; *) destdir="$PWD/$destdir" ;; esac
    destdir="${destdir%/}"
fi
on_host=true
[ -z "$destdir" ] || on_host=false

if [ ! -f "$binary" ]; then
    [ "$binary_given" = false ] \
        || usage_error "--binary $binary: no such file"
    usage_error "no binary at $binary; build it (cargo build --release -p pom) or pass --binary PATH"
fi
for src in "$UNIT_SRC" "$CONFIG_SRC" "$ENV_SRC"; do
    [ -f "$src" ] || die "missing $src: run this script from a complete checkout"
done
if [ "$on_host" = true ] && [ "$dry_run" = false ] && [ "$(id -u)" != 0 ]; then
    usage_error "run as root (or with --dry-run, or with DESTDIR to install into a scratch root)"
fi

# --- helpers -------------------------------------------------------------------------------------
prefix=""
[ "$dry_run" = false ] || prefix="[dry-run] would "
changes=0
say() { printf '%s\n' "$*"; }
# Counts and prints one change; the caller makes it only if `doing`.
act() { changes=$((changes + 1)); say "${prefix}$*"; }
doing() { [ "$dry_run" = false ]; }
owner_of() { stat -c '%U:%G' "$1"; }
mode_of() { stat -c '%a' "$1"; }
# " OWNER" on the host, nothing in a DESTDIR (where owners are not set).
owner_note() { [ "$on_host" = false ] || printf ' %s' "$1"; }

# fix_mode_owner TARGET MODE OWNER: puts back a drifted mode and, on the host, owner.
fix_mode_owner() {
    local target="$1" mode="$2" owner="$3"
    if [ "$(mode_of "$target")" != "${mode#0}" ]; then
        act "chmod $mode $target (was $(mode_of "$target"))"
        ! doing || chmod "$mode" "$target"
    fi
    if [ "$on_host" = true ] && [ "$(owner_of "$target")" != "$owner" ]; then
        act "chown $owner $target (was $(owner_of "$target"))"
        ! doing || chown "$owner" "$target"
    fi
}

# ensure_dir PATH MODE OWNER: one of PoM's own directories; created, or its mode and owner fixed.
ensure_dir() {
    local mode="$2" owner="$3" target="$destdir$1"
    if [ -d "$target" ]; then
        fix_mode_owner "$target" "$mode" "$owner"
        return
    fi
    [ ! -e "$target" ] || die "$target exists and is not a directory"
    act "create $target/ ($mode$(owner_note "$owner"))"
    if doing; then
        mkdir "$target"
        chmod "$mode" "$target"
        [ "$on_host" = false ] || chown "$owner" "$target"
    fi
}

# ensure_parent PATH: a standard directory (/usr/local/bin, ...); created 0755 when missing,
# never changed.
ensure_parent() {
    local target="$destdir$1"
    [ ! -d "$target" ] || return 0
    act "create $target/ (0755)"
    ! doing || install -d -m 0755 "$target"
}

# install_file SRC PATH MODE OWNER: installs SRC at PATH unless the same content is already there
# (then only a drifted mode or owner is fixed). Sets `written` to whether the content was (or
# would be) written; no exit status, so that it is never called where `set -e` is off. The
# replacement is a rename in the same directory: a running agent keeps the old binary until it
# restarts, and nobody ever sees half a file.
install_file() {
    local src="$1" mode="$3" owner="$4" target="$destdir$2"
    written=false
    if [ -f "$target" ] && cmp -s "$src" "$target"; then
        fix_mode_owner "$target" "$mode" "$owner"
        return
    fi
    written=true
    if [ -e "$target" ]; then
        act "replace $target with $src ($mode$(owner_note "$owner"))"
    else
        act "install $src to $target ($mode$(owner_note "$owner"))"
    fi
    if doing; then
        local tmp="$target.install-tmp.$$"
        install -m "$mode" "$src" "$tmp"
        [ "$on_host" = false ] || chown "$owner" "$tmp"
        mv -f "$tmp" "$target"
    fi
}

# install_new SRC PATH MODE OWNER [FILTER]: installs SRC at PATH only when nothing is there.
# FILTER, if given, is a function that rewrites the content on the way (stdin to stdout).
install_new() {
    local src="$1" mode="$3" owner="$4" filter="${5:-cat}" target="$destdir$2"
    if [ -e "$target" ] || [ -L "$target" ]; then
        say "keep $target (exists; never overwritten)"
        return
    fi
    local what=""
    [ "$filter" = cat ] || what=", with a fresh random POM_API_TOKEN"
    act "install $src to $target ($mode$(owner_note "$owner"))$what"
    if doing; then
        local tmp="$target.install-tmp.$$"
        (umask 077 && "$filter" <"$src" >"$tmp")
        chmod "$mode" "$tmp"
        [ "$on_host" = false ] || chown "$owner" "$tmp"
        # -n: should a file appear there meanwhile, it wins.
        mv -n "$tmp" "$target"
        rm -f "$tmp"
    fi
}

# The example env's placeholder token is public knowledge; a new env gets a random one.
fresh_token() {
    local token
    token="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    sed "s/^POM_API_TOKEN=.*/POM_API_TOKEN=$token/"
}

systemd_runs() { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# --- the plan ------------------------------------------------------------------------------------
if [ "$on_host" = true ]; then
    say "installing PoM on this host ($(uname -n))${prefix:+; dry run, nothing changes}"
else
    say "installing PoM into DESTDIR=$destdir${prefix:+; dry run, nothing changes}"
fi
say "binary: $binary"

# The user and group.
if [ "$on_host" = true ]; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    if ! getent group "$USER_NAME" >/dev/null; then
        act "create system group $USER_NAME"
        ! doing || groupadd --system "$USER_NAME"
    fi
    if ! getent passwd "$USER_NAME" >/dev/null; then
        act "create system user $USER_NAME (group $USER_NAME, home $STATE_DIR, shell $nologin)"
        ! doing || useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
            --shell "$nologin" --comment "PoM monitoring agent" "$USER_NAME"
    fi
else
    say "note: DESTDIR is set, so no user is created and no owner is set; on the target, run" \
        "install.sh again, or create the system user and group '$USER_NAME' and apply the owners" \
        "listed in install.sh's header"
fi

# Directories.
if [ "$on_host" = false ] && [ ! -d "$destdir" ]; then
    act "create $destdir/"
    ! doing || mkdir -p "$destdir"
fi
for dir in /usr /usr/local /usr/local/bin /etc /etc/systemd /etc/systemd/system /var /var/lib; do
    ensure_parent "$dir"
done
ensure_dir /etc/pom 0750 "root:$USER_NAME"
ensure_dir /etc/pom/mesh 0750 "root:$USER_NAME"
ensure_dir "$STATE_DIR" 0700 "$USER_NAME:$USER_NAME"

# Files.
install_file "$binary" /usr/local/bin/pom 0755 root:root
binary_changed="$written"
install_file "$UNIT_SRC" /etc/systemd/system/pom.service 0644 root:root
unit_changed="$written"
install_new "$CONFIG_SRC" /etc/pom/pom.toml 0640 "root:$USER_NAME"
install_new "$ENV_SRC" /etc/pom/env 0600 root:root fresh_token

# The agent reads its mesh key as pom; `pom cert issue` writes it 0600 for whoever ran it.
key="$destdir/etc/pom/mesh/node.key"
if [ "$on_host" = true ] && [ -f "$key" ] && [ "$(owner_of "$key")" != "$USER_NAME:$USER_NAME" ]
then
    say "warning: $key is owned by $(owner_of "$key"): the agent, which runs as $USER_NAME," \
        "cannot read it. Fix: chown $USER_NAME:$USER_NAME $key && chmod 0600 $key"
fi

# systemd.
if [ "$unit_changed" = true ]; then
    if [ "$on_host" = true ] && systemd_runs; then
        act "run systemctl daemon-reload"
        ! doing || systemctl daemon-reload
    elif [ "$on_host" = true ]; then
        say "note: systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo '?'));" \
            "on a systemd host, run: systemctl daemon-reload"
    else
        say "note: on the target, run: systemctl daemon-reload"
    fi
fi
if [ "$binary_changed" = true ] && [ "$on_host" = true ] && systemd_runs \
    && systemctl is-active --quiet pom 2>/dev/null; then
    say "note: pom still runs the previous binary; restart it when ready: systemctl restart pom"
fi

if [ "$changes" -eq 0 ]; then
    say "nothing to do: already installed"
elif [ "$dry_run" = true ]; then
    say "dry run: $changes change(s) listed, none made"
else
    say "done: $changes change(s)"
fi
say "next: edit /etc/pom/pom.toml and /etc/pom/env; put ca.crt and node.crt (0644) and node.key" \
    "($USER_NAME:$USER_NAME 0600) in /etc/pom/mesh/; check with 'pom config check';" \
    "then: systemctl enable --now pom"
