#!/usr/bin/env bash
# systemctl for pom.service inside a test host of deploy/tests/deploy-gate.sh, installed there as
# /usr/local/sbin/systemctl. The test hosts have no systemd; this does what systemd does with
# systemd/pom.service, as far as deploy/deploy.sh can tell:
#   start       runs `/usr/local/bin/pom run --config /etc/pom/pom.toml` as User=pom, with
#               /etc/pom/env as its environment, in a session of its own; returns 0 once the
#               agent's API accepts connections (Type=notify: pom sends READY=1 then), 1 when
#               the process exits first or the API is not up within 10 s (TimeoutStartSec).
#   stop        SIGTERM, then waits for the exit (up to 20 s, TimeoutStopSec), then SIGKILL.
#   restart     stop, then start.
#   is-active   0 and "active" while the agent runs, else 3 and "inactive".
#   daemon-reload, reset-failed  nothing to do.
# State: /run/pom.pid (the main PID); the agent's output goes to /var/log/pom.log.
set -euo pipefail
readonly PIDFILE=/run/pom.pid LOG=/var/log/pom.log CONFIG=/etc/pom/pom.toml
readonly START_TIMEOUT=10 STOP_TIMEOUT=20

quiet=false
verb=""
unit=""
for arg in "$@"; do
    case "$arg" in
        -q|--quiet) quiet=true ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb="$arg"; elif [ -z "$unit" ]; then unit="${arg%.service}"; fi ;;
    esac
done
[ "$verb" != daemon-reload ] || exit 0
[ "$verb" != reset-failed ] || exit 0
if [ "$unit" != pom ]; then
    echo "Unit ${unit:-(none)}.service not found." >&2
    exit 5
fi

# Whether PID $1 is a live process (a zombie is not: nobody may reap it soon).
alive() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
main_pid() { [ -f "$PIDFILE" ] && cat "$PIDFILE"; }
now() { date +%s%3N; }
log() { printf '%s fake-systemctl: %s\n' "$(date -u +%FT%T.%3NZ)" "$*" >>"$LOG"; }

do_stop() {
    local pid deadline
    pid="$(main_pid)" || return 0
    if alive "$pid"; then
        log "stop: SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$(($(now) + STOP_TIMEOUT * 1000))
        while alive "$pid"; do
            if [ "$(now)" -ge "$deadline" ]; then
                log "stop: $pid still runs after ${STOP_TIMEOUT}s: SIGKILL to its process group"
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
                deadline=$(($(now) + 5000))
                while alive "$pid" && [ "$(now)" -lt "$deadline" ]; do sleep 0.1; done
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE"
}

do_start() {
    local pid addr host port deadline
    if pid="$(main_pid)" && alive "$pid"; then
        return 0
    fi
    addr="$(sed -n 's/^[[:space:]]*api_listen[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$CONFIG" 2>/dev/null | head -n 1)"
    addr="${addr:-127.0.0.1:9100}"
    host="${addr%:*}"
    port="${addr##*:}"
    log "start: /usr/local/bin/pom run --config $CONFIG (sha256 $(sha256sum /usr/local/bin/pom | cut -c1-16))"
    (
        set -a
        # shellcheck disable=SC1091
        [ ! -r /etc/pom/env ] || . /etc/pom/env
        set +a
        exec setsid setpriv --reuid=pom --regid=pom --init-groups -- \
            /usr/local/bin/pom run --config "$CONFIG"
    ) </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    deadline=$(($(now) + START_TIMEOUT * 1000))
    while :; do
        if ! alive "$pid"; then
            rm -f "$PIDFILE"
            log "start: $pid exited before it was ready"
            echo "Job for pom.service failed because the control process exited with error code." >&2
            echo "See \"journalctl -xeu pom.service\" (here: $LOG) for details; its last lines:" >&2
            tail -n 3 "$LOG" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            log "start: $pid is ready (its API listens on $addr)"
            return 0
        fi
        if [ "$(now)" -ge "$deadline" ]; then
            log "start: $pid not ready within ${START_TIMEOUT}s"
            do_stop
            echo "Job for pom.service failed because a timeout was exceeded." >&2
            return 1
        fi
        sleep 0.1
    done
}

case "$verb" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    is-active)
        if pid="$(main_pid)" && alive "$pid"; then
            [ "$quiet" = true ] || echo active
            exit 0
        fi
        [ "$quiet" = true ] || echo inactive
        exit 3
        ;;
    *) echo "fake systemctl: '$verb' is not supported here" >&2; exit 1 ;;
esac
