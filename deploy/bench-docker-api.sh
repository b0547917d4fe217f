#!/usr/bin/env bash
# Docker Engine API benchmark (issue 16's figures): the stock docker CLI 28.2 driving a shoal
# swarm through the Docker socket every node serves, against the shoal CLI on the same swarm and
# against Docker Swarm 20.10 driven by the same docker CLI in the same run. Two shoal test hosts
# and, when Debian's docker.io is installed, two Docker test hosts (each its own dockerd) on one
# private underlay on this machine, each swarm holding 10 services of 10 sleep tasks. Figures:
# `service ls` and `service ps` latency (p50, p99) per client, with each server's own time for
# the same requests made by hand; and `service create --replicas 100 busybox sleep 3600` from
# command to return, with and without -d. Test hosts are network namespaces on a private
# underlay, removed at the end. Run as root, with the docker CLI 28 at /usr/local/bin/docker.
#   deploy/bench-docker-api.sh                   # 50 runs of each ls/ps, 5 rounds of create
#   SAMPLES=200 ROUNDS=3 deploy/bench-docker-api.sh
#   FIGURES=latency deploy/bench-docker-api.sh   # latency or create
#   SHOAL_BIN=/path/to/shoal deploy/bench-docker-api.sh   # that shoal binary, not built here
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/local/bin/docker ]; then
  echo "bench-docker-api: the docker CLI 28 must be at /usr/local/bin/docker (a client only;" >&2
  echo "  Debian's docker.io ships an older one at /usr/bin/docker)" >&2
  exit 1
fi
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build --release -p cli --bin shoal
  SHOAL_BIN="$PWD/target/release/shoal"
fi
cargo build --release -p shoal-tests --bin bench-docker-api
SHOAL_BIN="$SHOAL_BIN" exec "$PWD/target/release/bench-docker-api"
