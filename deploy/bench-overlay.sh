#!/usr/bin/env bash
# Overlay benchmark (issue 14's figures) across two test hosts on this machine: TCP throughput
# task to task over the overlay against the underlay between the same host namespaces (busybox
# nc, and 1 MiB writes), from a task running to its name resolving and answering HTTP from a
# task on the other host, and the daemon's RSS before and after 100 networked tasks. Test hosts
# are network namespaces on a private underlay, removed at the end. Run as root.
#   deploy/bench-overlay.sh            # 5 rounds each
#   ROUNDS=9 deploy/bench-overlay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cli --bin shoal
cargo build --release -p shoal-tests --bin bench-overlay
SHOAL_BIN="$PWD/target/release/shoal" exec "$PWD/target/release/bench-overlay"
