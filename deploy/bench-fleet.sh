#!/usr/bin/env bash
# The simulated-fleet benchmark (issue 17's figures): three managers, each a process of its own,
# and N worker agents in one process, each with its own certificate and session over mutual TLS;
# one replicated service of 10 tasks per node, 30 tasks crashed one at a time (one task's status
# change: crash to replacement RUNNING, and the leader's CPU per change), then the leader's
# kill. One run per size in SIZES, one after the other (two at once would share the cores and
# spoil both). Loopback only; each run removes the processes and directories it made.
# BENCHMARKS.md ("Simulated fleet") reads the output.
#   deploy/bench-fleet.sh                          # 100, 1,000 and 5,000 agents
#   SIZES="5000 5000 5000" deploy/bench-fleet.sh
#   MANAGER_NICE=0 deploy/bench-fleet.sh           # the managers not under nice (see below)
# The managers run under `nice -n 10` unless MANAGER_NICE says otherwise: the agents stand for
# thousands of machines, each with CPUs of its own, but here they share two cores with the
# managers, and when the managers take the CPU first the agents miss heartbeats that real
# machines would have sent, their nodes are marked down and their tasks run twice. With the
# agents first, the managers get only what the agents leave, never more than on real machines.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-100 1000 5000}

cargo build --release -p daemon --bin bench-fleet
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in
  /*) ;;
  *) target_dir="$(pwd)/$target_dir" ;;
esac
bench="$target_dir/release/bench-fleet"
extra=()
manager_nice=${MANAGER_NICE-10}
if [ -n "$manager_nice" ] && [ "$manager_nice" != 0 ]; then
  wrapper=$(mktemp)
  trap 'rm -f "$wrapper"' EXIT
  printf '#!/bin/sh\nexec nice -n %s %s "$@"\n' "$manager_nice" "$bench" >"$wrapper"
  chmod +x "$wrapper"
  extra=(--manager-program "$wrapper")
fi

failed=0
for agents in $sizes; do
  echo "== $agents agents, the managers under nice ${manager_nice:-0} =="
  "$bench" --agents "$agents" "${extra[@]}" || failed=1
done
exit "$failed"
