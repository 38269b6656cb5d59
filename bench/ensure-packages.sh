#!/usr/bin/env bash
# Installs the Debian packages whose commands are missing, without starting their services.
# Usage: bench/ensure-packages.sh COMMAND:PACKAGE... (as root; e.g. nginx:nginx-light).
# Run by .ci/run and bench/fault-suite.sh.
set -euo pipefail
missing=()
for pair in "$@"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
[ "${#missing[@]}" -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ensure-packages: missing ${missing[*]}; run as root to install them" >&2
    exit 2
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep the packages from starting their services: the tests run their own instances.
made_policy=false
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=true
fi
installed=0
{ apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } || installed=$?
if [ "$made_policy" = true ]; then rm -f /usr/sbin/policy-rc.d; fi
exit "$installed"
