#!/usr/bin/env bash
# Benchmark of the mesh: three real `pom run` agents on 127.0.0.1 talking mutual-TLS QUIC.
#
# Usage: bench/mesh.sh [all|latency|idle|reconnect] [OPTIONS]
#        (results and how to read them: docs/benchmarks.md, "Mesh")
#
# Builds `pom` and the `mesh_bench` example (agent/examples/mesh_bench.rs) in release mode, then
# runs the example with the arguments given (default: all three measurements):
#
# 1. latency: from the first failing probe to the confirmed `firing` webhook, over --incidents
#    (60) incidents of refusing targets (connections reset; --targets (12) of them, taken down in
#    turn), health checks every --interval (10) s with a 1 s timeout;
# 2. idle: UDP bytes per peer at the default heartbeat, over --idle-window (180) s, then with
#    --busy-checks (10) checks at 10 s over --busy-window (120) s;
# 3. reconnect: kill -9 and restart an agent --restarts (12) times, and --blips (3) SIGSTOP /
#    SIGCONT blips; time until both other agents show it back in /api/mesh.
#
# `bench/mesh.sh --help` lists every option. The example prints the summary tables, the exact
# `pom run` command lines and configs on stdout, and progress on stderr. It fails if an agent dies
# or a wait passes its deadline. A full run takes about 15 minutes after the build. Set
# POM_BIN=PATH to benchmark another `pom` binary (for example target/debug/pom, or one built from
# another commit) instead of building it; KEEP_WORK=1 keeps the scratch directory (configs, data
# directories, agent logs).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "building (release)..." >&2
# Two builds: the example pulls in dev-dependency features (tokio's test-util), and `pom` should be
# the binary a plain `cargo build --release -p pom` makes.
if [[ -z ${POM_BIN:-} ]]; then
    cargo build --release -p pom --bin pom >&2
fi
cargo build --release -p pom --example mesh_bench >&2
target_dir=${CARGO_TARGET_DIR:-$root/target}
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit="$commit with uncommitted changes"
fi
echo "tree: $commit; $(rustc -V)"

args=("$@")
if [[ ${KEEP_WORK:-0} == 1 ]]; then
    args+=(--keep)
fi
POM_BIN=${POM_BIN:-$target_dir/release/pom} exec "$target_dir/release/examples/mesh_bench" "${args[@]}"
