#!/usr/bin/env bash
# Multi-host benchmark (issue 5's figures) across test hosts on this machine: join time (worker
# and manager), leader failover (kill -9 of the leader's daemon to the first successful write
# through a surviving manager) and worker loss (kill -9 of a worker's daemon to its tasks running
# elsewhere), each the median of ROUNDS. Test hosts are network namespaces on a private underlay,
# removed at the end. Run as root.
#   deploy/bench-cluster.sh            # 5 rounds each
#   ROUNDS=9 deploy/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cli --bin shoal
cargo build --release -p shoal-tests --bin bench-cluster
SHOAL_BIN="$PWD/target/release/shoal" exec "$PWD/target/release/bench-cluster"
