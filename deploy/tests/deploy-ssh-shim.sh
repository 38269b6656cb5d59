#!/usr/bin/env bash
# ssh for deploy/tests/deploy-gate.sh: deploy/deploy.sh runs it as POM_DEPLOY_SSH.
#
# Usage: deploy-ssh-shim.sh [user@]HOST COMMAND...
# Runs COMMAND with sh, as root, from /, with stdin passed through, inside test host HOST: the
# network namespace and mount namespace that deploy-gate.sh made for it, where /etc,
# /usr/local/bin, /usr/local/sbin, /var/lib, /var/log, /var/tmp and /run are that host's own
# directories and 127.0.0.1 is its own loopback. Like ssh, it joins the COMMAND words with
# spaces, gives the command a clean login-like environment, and exits 255 when it cannot reach
# HOST. Every call is appended to $POM_DEPLOY_TEST_ROOT/ssh.log (host, first line of COMMAND).
set -euo pipefail
root="${POM_DEPLOY_TEST_ROOT:?POM_DEPLOY_TEST_ROOT is not set (deploy-gate.sh sets it)}"
if [ $# -lt 2 ]; then
    echo "usage: deploy-ssh-shim.sh [user@]HOST COMMAND..." >&2
    exit 255
fi
host="${1#*@}"
shift
cmd="$*"
printf '%s\t%s\n' "$host" "${cmd%%$'\n'*}" >>"$root/ssh.log"
keeper_file="$root/hosts/$host/keeper.pid"
keeper="$(cat "$keeper_file" 2>/dev/null)" || keeper=""
if [ -z "$keeper" ] || ! kill -0 "$keeper" 2>/dev/null; then
    echo "ssh: connect to host $host port 22: No route to host" >&2
    exit 255
fi
exec nsenter --target "$keeper" --mount --net -- \
    env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/sh LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c "cd / && $cmd"
