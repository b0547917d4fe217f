#!/usr/bin/env bash
# Routing-mesh benchmark (issue 15's figures): three shoal test hosts and a client host on one
# private underlay on this machine, a busybox httpd service published on port 8080 with its one
# task on h1. From the client: requests per second and p99 latency of short HTTP/1.0 requests
# (a new connection each) through the mesh's local path (h1:8080) and its cluster path (h2:8080,
# handed on to h1 with SNAT), against the same busybox httpd started in h1's namespace outside any
# container (h1:8000, no NAT) and against the task's own address on h1's gateway bridge (routed
# through h1, no NAT); a 200 MiB download through each; and, when Debian's docker.io is
# installed, what Docker Swarm 20.10's published port gives on the same underlay. Test hosts
# are network namespaces on a private underlay, removed at the end. Run as root.
#   deploy/bench-mesh.sh                        # 5 rounds each
#   ROUNDS=3 deploy/bench-mesh.sh
#   FIGURES=requests,transfer deploy/bench-mesh.sh   # some of requests, transfer, docker
#   SHOAL_BIN=/path/to/shoal deploy/bench-mesh.sh    # that shoal binary, not built here
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build --release -p cli --bin shoal
  SHOAL_BIN="$PWD/target/release/shoal"
fi
cargo build --release -p shoal-tests --bin bench-mesh
SHOAL_BIN="$SHOAL_BIN" exec "$PWD/target/release/bench-mesh"
