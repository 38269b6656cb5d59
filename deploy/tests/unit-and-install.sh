#!/usr/bin/env bash
# Checks systemd/pom.service and deploy/install.sh (issue 6, parts 1 and 2). Run by .ci/run, as
# root, on a fresh Debian machine; builds nothing.
#
#   - `systemd-analyze verify` is clean: no output at all (unknown keys and bad values are only
#     warnings, with exit status 0, so the output is what counts). It runs on the unit as
#     install.sh puts it into a scratch root, next to a copy of this host's unit directory and
#     /bin/kill, so ExecStart, ExecReload and every dependency resolve: a genuinely clean verify,
#     not "clean but for the missing binary";
#   - the exposure from `systemd-analyze security --offline=true` is at most 2.0;
#   - install.sh into a fresh DESTDIR creates exactly the expected files, with the expected modes
#     and contents; a second run changes nothing and keeps an edited pom.toml, env and a file in
#     etc/pom/mesh/; a new binary is replaced and nothing else; a drifted mode is put back;
#   - --dry-run changes nothing; a missing --binary fails with a clear message and status 2;
#   - the on-host path (user, group, ownership), in a throwaway overlay of / inside a private
#     mount namespace, so this host gets no user and no files. Skipped, and said so, where
#     mounting is not allowed.
#
# The binary installed is target/debug/pom if it exists, else a small stub script (install.sh
# does not run it). Each check prints one line; the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
readonly REPO="$PWD"
readonly INSTALL="$REPO/deploy/install.sh"
readonly UNIT="$REPO/systemd/pom.service"
readonly MAX_EXPOSURE=2.0

failed=0
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); }
skip() { printf 'skip %s\n' "$*"; }
# Indented detail under a FAIL line.
detail() { sed 's/^/       /'; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# systemd-analyze comes with the systemd package; /bin/kill (the unit's ExecReload) with procps.
# Installed only when missing, without starting any service.
if [ -x bench/ensure-packages.sh ]; then
    bench/ensure-packages.sh systemd-analyze:systemd /bin/kill:procps
fi
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }

if [ -x target/debug/pom ]; then
    binary="$REPO/target/debug/pom"
    echo "binary: target/debug/pom"
else
    binary="$scratch/pom-stub"
    printf '#!/bin/sh\necho "pom stub for deploy/tests/unit-and-install.sh"\n' >"$binary"
    chmod 0755 "$binary"
    echo "binary: a stub script (target/debug/pom does not exist)"
fi
# A second, different binary: the upgrade case.
binary2="$scratch/pom-next"
{ cat "$binary"; printf '\n# next version\n'; } >"$binary2"
chmod 0755 "$binary2"

# Every path under a root with its type and mode, and a checksum and mtime for files: two equal
# listings mean nothing was created, removed, chmodded or rewritten.
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%P %y %m %s %T@\n' | sort)
    (cd "$1" && find . -type f -exec sha256sum {} + | sort -k2)
}
# Paths, types and modes only.
shape() { (cd "$1" && find . -mindepth 1 -printf '%P %y %m\n' | sort); }

# --- systemd-analyze verify --------------------------------------------------------------------
vroot="$scratch/verify-root"
if DESTDIR="$vroot" "$INSTALL" --binary "$binary" >"$scratch/verify-install.log" 2>&1; then
    mkdir -p "$vroot/usr/lib/systemd" "$vroot/bin"
    cp -a "$(readlink -f /usr/lib/systemd/system)" "$vroot/usr/lib/systemd/system"
    cp "$(readlink -f /bin/kill)" "$vroot/bin/kill"
    verify() { systemd-analyze verify --root="$vroot" /etc/systemd/system/pom.service 2>&1; }
    if out="$(verify)" && [ -z "$out" ]; then
        ok "systemd-analyze verify: clean (the unit as installed, with its binary, /bin/kill and this host's units)"
    else
        fail "systemd-analyze verify is not clean:"
        printf '%s\n' "$out" | detail
    fi
    # The check above can only fail if verify reads that file: a broken copy must be reported.
    cp "$vroot/etc/systemd/system/pom.service" "$scratch/pom.service.good"
    sed -i 's/^ProtectClock=yes$/ProtectClok=yes/' "$vroot/etc/systemd/system/pom.service"
    if out="$(verify)"; [ -n "$out" ] && printf '%s' "$out" | grep -q ProtectClok; then
        ok "systemd-analyze verify: reports a misspelt key (the clean result above is real)"
    else
        fail "systemd-analyze verify did not report a misspelt key; output: ${out:-<none>}"
    fi
    cp "$scratch/pom.service.good" "$vroot/etc/systemd/system/pom.service"
else
    fail "install.sh into the verify root failed:"
    detail <"$scratch/verify-install.log"
fi

# --- systemd-analyze security ------------------------------------------------------------------
if table="$(systemd-analyze security --offline=true "$UNIT" 2>&1)"; then :; fi
score="$(printf '%s\n' "$table" | sed -n 's/.*Overall exposure level for pom\.service: \([0-9.]*\).*/\1/p')"
if [ -z "$score" ]; then
    fail "systemd-analyze security: no exposure level in its output:"
    printf '%s\n' "$table" | detail
elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    ok "systemd-analyze security --offline=true: exposure $score (limit $MAX_EXPOSURE)"
else
    fail "systemd-analyze security --offline=true: exposure $score is above $MAX_EXPOSURE:"
    printf '%s\n' "$table" | detail
fi

# --- install.sh into a fresh DESTDIR -----------------------------------------------------------
root="$scratch/root"
expected="$scratch/expected"
cat >"$expected" <<'EOF'
etc d 755
etc/pom d 750
etc/pom/env f 600
etc/pom/mesh d 750
etc/pom/pom.toml f 640
etc/systemd d 755
etc/systemd/system d 755
etc/systemd/system/pom.service f 644
usr d 755
usr/local d 755
usr/local/bin d 755
usr/local/bin/pom f 755
var d 755
var/lib d 755
var/lib/pom d 700
EOF
if DESTDIR="$root" "$INSTALL" --binary "$binary" >"$scratch/first.log" 2>&1; then
    if diff <(shape "$root") "$expected" >"$scratch/shape.diff"; then
        ok "install into a fresh DESTDIR: exactly the expected $(wc -l <"$expected") paths and modes"
    else
        fail "install into a fresh DESTDIR: paths or modes differ (< got, > expected):"
        detail <"$scratch/shape.diff"
    fi
    problems=()
    cmp -s "$binary" "$root/usr/local/bin/pom" || problems+=("usr/local/bin/pom is not the binary")
    cmp -s "$UNIT" "$root/etc/systemd/system/pom.service" || problems+=("the unit differs from systemd/pom.service")
    cmp -s deploy/examples/pom.toml "$root/etc/pom/pom.toml" || problems+=("pom.toml differs from deploy/examples/pom.toml")
    # env: the example, except for a fresh 64-hex-digit token in place of the placeholder.
    diff <(grep -v '^POM_API_TOKEN=' deploy/examples/env) <(grep -v '^POM_API_TOKEN=' "$root/etc/pom/env") >/dev/null \
        || problems+=("env differs from deploy/examples/env beyond the token")
    grep -Eq '^POM_API_TOKEN=[0-9a-f]{64}$' "$root/etc/pom/env" || problems+=("env has no fresh random POM_API_TOKEN")
    if [ "${#problems[@]}" -eq 0 ]; then
        ok "install into a fresh DESTDIR: contents (binary, unit, example config; env with a fresh random token)"
    else
        fail "install into a fresh DESTDIR: ${problems[*]}"
    fi
    if grep -q 'no user is created' "$scratch/first.log" && ! grep -q 'create system user' "$scratch/first.log"; then
        ok "install into a DESTDIR: creates no user and says so"
    else
        fail "install into a DESTDIR: no clear note that no user is created:"
        detail <"$scratch/first.log"
    fi
else
    fail "install into a fresh DESTDIR failed (status $?):"
    detail <"$scratch/first.log"
fi

# --- second run: a no-op that keeps the operator's files ---------------------------------------
echo '# edited by the operator' >>"$root/etc/pom/pom.toml"
echo 'POSTMARK_TOKEN=operator-secret' >>"$root/etc/pom/env"
echo 'operator key' >"$root/etc/pom/mesh/node.key"
chmod 0600 "$root/etc/pom/mesh/node.key"
listing "$root" >"$scratch/before-second"
if DESTDIR="$root" "$INSTALL" --binary "$binary" >"$scratch/second.log" 2>&1 \
    && listing "$root" | diff "$scratch/before-second" - >"$scratch/second.diff" \
    && grep -q 'nothing to do' "$scratch/second.log"; then
    ok "second run: a no-op; the edited pom.toml and env and etc/pom/mesh/node.key are untouched"
else
    fail "second run changed something or did not say 'nothing to do':"
    detail <"$scratch/second.log"
    detail <"$scratch/second.diff"
fi

# --- --dry-run ---------------------------------------------------------------------------------
# On an installed root, with a new binary, so that there is something to do.
listing "$root" >"$scratch/before-dry"
if DESTDIR="$root" "$INSTALL" --binary "$binary2" --dry-run >"$scratch/dry.log" 2>&1 \
    && listing "$root" | diff "$scratch/before-dry" - >"$scratch/dry.diff" \
    && grep -q 'would replace .*/usr/local/bin/pom' "$scratch/dry.log"; then
    ok "--dry-run on an installed root: lists the binary replacement, changes nothing"
else
    fail "--dry-run on an installed root changed something or did not list the replacement:"
    detail <"$scratch/dry.log"
    detail <"$scratch/dry.diff"
fi
# Into a root that does not exist: it must not appear, and every action is listed.
if DESTDIR="$scratch/dry-root" "$INSTALL" --binary "$binary" --dry-run >"$scratch/dry2.log" 2>&1 \
    && [ ! -e "$scratch/dry-root" ] \
    && [ "$(grep -c '^\[dry-run\] would ' "$scratch/dry2.log")" -ge 16 ]; then
    ok "--dry-run into a new root: prints all $(grep -c '^\[dry-run\] would ' "$scratch/dry2.log") actions, creates nothing"
else
    fail "--dry-run into a new root created something or listed too few actions:"
    detail <"$scratch/dry2.log"
fi

# --- upgrade and repair ------------------------------------------------------------------------
chmod 0755 "$root/etc/pom"
# Everything but the binary, its directory (the rename changes its mtime) and etc/pom's mode.
unchanged() { listing "$root" | grep -v -e '^usr/local/bin' -e ' \./usr/local/bin/pom$' -e '^etc/pom d '; }
unchanged >"$scratch/before-upgrade"
if DESTDIR="$root" "$INSTALL" --binary "$binary2" >"$scratch/upgrade.log" 2>&1 \
    && cmp -s "$binary2" "$root/usr/local/bin/pom" \
    && [ "$(stat -c %a "$root/usr/local/bin/pom")" = 755 ] \
    && [ "$(stat -c %a "$root/etc/pom")" = 750 ] \
    && unchanged | diff "$scratch/before-upgrade" - >"$scratch/upgrade.diff"; then
    ok "upgrade: a new binary replaces the old (0755), a drifted etc/pom mode is put back to 0750, nothing else changes"
else
    fail "upgrade: the binary was not replaced, etc/pom not repaired, or something else changed:"
    detail <"$scratch/upgrade.log"
    detail <"$scratch/upgrade.diff" 2>/dev/null || true
fi

# --- a missing --binary --------------------------------------------------------------------------
status=0
DESTDIR="$scratch/nobin-root" "$INSTALL" --binary "$scratch/no-such-pom" >"$scratch/nobin.out" 2>"$scratch/nobin.err" || status=$?
if [ "$status" -eq 2 ] && grep -q "no-such-pom: no such file" "$scratch/nobin.err" && [ ! -e "$scratch/nobin-root" ]; then
    ok "a missing --binary: status 2, '$(head -n1 "$scratch/nobin.err")', nothing created"
else
    fail "a missing --binary: status $status (expected 2), or an unclear message, or files created:"
    detail <"$scratch/nobin.err"
fi

# --- on the host, in a throwaway overlay of / ----------------------------------------------------
# The overlay's upper layer is a tmpfs in a private mount namespace: the user, the group and every
# file vanish with it. Checked afterwards: this host's own files did not change.
host_check() {
    local s="$1" m="$1/merged"
    mount -t tmpfs tmpfs "$s"
    mkdir "$s/upper" "$s/work" "$m"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$s/upper,workdir=$s/work" "$m"
    mount --rbind /proc "$m/proc"
    mount --rbind /dev "$m/dev"
    # The checkout and the binary may live on other mounts than /: bind them in.
    mkdir -p "$m/pom-src" "$m/pom-bin"
    mount --bind "$REPO" "$m/pom-src"
    cp "$2" "$m/pom-bin/pom"
    echo "--- first run"
    chroot "$m" /pom-src/deploy/install.sh --binary /pom-bin/pom
    echo "--- second run"
    chroot "$m" /pom-src/deploy/install.sh --binary /pom-bin/pom
    echo "--- state"
    chroot "$m" getent passwd pom | awk -F: '{ print "user", $1, "home", $6, "shell", $7 }'
    chroot "$m" getent group pom | awk -F: '{ print "group", $1 }'
    chroot "$m" stat -c 'mode %a %U:%G %n' /etc/pom /etc/pom/mesh /etc/pom/pom.toml /etc/pom/env \
        /var/lib/pom /usr/local/bin/pom /etc/systemd/system/pom.service
}
if ! unshare --mount true 2>/dev/null; then
    skip "install on the host (in an overlay of /): cannot make a mount namespace here"
else
    mkdir "$scratch/overlay"
    host_state() { sha256sum /etc/passwd /etc/group; stat -c '%n %s %Y' /etc/pom /usr/local/bin/pom /var/lib/pom /etc/systemd/system/pom.service 2>&1 || true; }
    host_before="$(host_state)"
    status=0
    unshare --mount --propagation private bash -c "$(declare -f host_check); set -euo pipefail; REPO='$REPO'; host_check \"\$1\" \"\$2\"" \
        _ "$scratch/overlay" "$binary" >"$scratch/host.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ] && grep -qi -e 'overlay' -e 'mount:' "$scratch/host.log" && ! grep -q -- '--- first run' "$scratch/host.log"; then
        skip "install on the host (in an overlay of /): overlayfs cannot be mounted here: $(grep -m1 -i mount "$scratch/host.log")"
    else
        want="$(cat <<'EOF'
user pom home /var/lib/pom shell /usr/sbin/nologin
group pom
mode 750 root:pom /etc/pom
mode 750 root:pom /etc/pom/mesh
mode 640 root:pom /etc/pom/pom.toml
mode 600 root:root /etc/pom/env
mode 700 pom:pom /var/lib/pom
mode 755 root:root /usr/local/bin/pom
mode 644 root:root /etc/systemd/system/pom.service
EOF
)"
        got="$(sed -n '/^--- state$/,$p' "$scratch/host.log" | sed 1d)"
        if [ "$status" -eq 0 ] && [ "$got" = "$want" ] \
            && sed -n '/^--- second run$/,/^--- state$/p' "$scratch/host.log" | grep -q 'nothing to do'; then
            ok "install on the host (in an overlay of /): system user pom (nologin, home /var/lib/pom), owners root:pom / pom:pom as specified; second run a no-op"
        else
            fail "install on the host (in an overlay of /): status $status, or owners/modes not as expected:"
            detail <"$scratch/host.log"
            diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | detail || true
        fi
        if [ "$(host_state)" = "$host_before" ]; then
            ok "install on the host (in an overlay of /): this host itself is untouched (passwd, group, /etc/pom, the binary, the unit)"
        else
            fail "install on the host (in an overlay of /): this host itself changed:"
            diff <(printf '%s\n' "$host_before") <(host_state) | detail || true
        fi
    fi
fi

echo
if [ "$failed" -gt 0 ]; then
    echo "unit-and-install: $failed check(s) failed"
    exit 1
fi
echo "unit-and-install: all checks passed"
