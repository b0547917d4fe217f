#!/usr/bin/env bash
# Overlay benchmark (issue 14's figures), shoal beside Docker Swarm 20.10 in the same run: two
# shoal test hosts and two Docker test hosts (each its own dockerd) on one private underlay on
# this machine. TCP throughput task to task over each overlay against the underlay between the
# same host namespaces (busybox nc, and 1 MiB writes), from a task running to its name resolving
# and answering HTTP from a task on the other host, DNS answers per second and p99 from inside a
# task against the embedded resolver at 127.0.0.11, and the daemons' RSS before and after 100
# networked tasks. Test hosts are network namespaces on a private underlay, removed at the end.
# Run as root, with Debian's docker.io installed (its own dockerd need not, and should not, run).
#   deploy/bench-overlay.sh                      # 5 rounds each
#   ROUNDS=9 deploy/bench-overlay.sh
#   FIGURES=throughput,dns deploy/bench-overlay.sh   # some of throughput, reachability, dns, memory
#   SHOAL_BIN=/path/to/shoal deploy/bench-overlay.sh # that shoal binary, not built here
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ]; then
  echo "bench-overlay: Docker's side needs Debian's docker.io (Docker 20.10): apt-get install docker.io" >&2
  echo "  (where systemd runs, then: systemctl disable --now docker.service docker.socket containerd.service;" >&2
  echo "  the benchmark starts its own dockerd inside each of its test hosts)" >&2
  exit 1
fi
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build --release -p cli --bin shoal
  SHOAL_BIN="$PWD/target/release/shoal"
fi
cargo build --release -p shoal-tests --bin bench-overlay
SHOAL_BIN="$SHOAL_BIN" exec "$PWD/target/release/bench-overlay"
