#!/usr/bin/env bash
# The network-namespace fault suite (issue 5; docs/fault-suite.md). Needs root (ip netns,
# nftables), nginx, dnsmasq, nft, curl, faketime and Alertmanager (Debian: nginx-light dnsmasq
# nftables curl faketime prometheus-alertmanager), which it installs when they are missing.
# Builds the agent and the harness, then runs every scenario; the arguments are passed on
# (e.g. --scenario 2 --repeat 1, or --soak 30). Exits non-zero on any deviation.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "fault-suite: run as root (it creates network namespaces)" >&2
    exit 2
fi
bench/ensure-packages.sh nginx:nginx-light dnsmasq:dnsmasq nft:nftables curl:curl \
    faketime:faketime ip:iproute2 ss:iproute2 prometheus-alertmanager:prometheus-alertmanager
cargo build -p pom --bin pom --example fault_suite
exec target/debug/examples/fault_suite "$@"
