#!/usr/bin/env bash
# Swarm-mode benchmark on one node (issue 4's figures): takes a busybox `sleep` service from 10 to
# 100 replicas and times until `service ps --format json` shows all 100 RUNNING, ROUNDS times
# (scaling back to 10 in between), then reports the median and the daemon's RSS with 100 tasks
# running. Uses a scratch data root, loopback only, and removes everything it made. Run as root.
#   deploy/bench-swarm-scale.sh            # 3 rounds
#   ROUNDS=5 deploy/bench-swarm-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}

# shellcheck source=deploy/lib/one-node.sh
. deploy/lib/one-node.sh
remove_bench_objects() { "$shoal" service rm bench >/dev/null 2>&1; }
import_busybox busybox:latest
# busybox `sleep` as PID 1 ignores SIGTERM; a short grace period keeps scale-downs between rounds
# quick and does not touch the scale-up being measured.
"$shoal" service create --name bench --replicas 10 --stop-grace-period 1s busybox sleep 86400 >/dev/null

tasks() { "$shoal" service ps bench --format json | grep -c . || true; }

times=()
for round in $(seq "$rounds"); do
  start=$(date +%s.%N)
  "$shoal" service scale -d bench=100 >/dev/null
  while [ "$(running_tasks service ps bench)" -lt 100 ]; do sleep 0.05; done
  end=$(date +%s.%N)
  elapsed=$(echo "$end - $start" | bc)
  times+=("$elapsed")
  echo "round $round: 10 -> 100 replicas RUNNING in ${elapsed}s"
  if [ "$round" = "$rounds" ]; then
    rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
    anon_kib=$(awk '/^RssAnon/ {print $2}' "/proc/$daemon_pid/status")
    file_kib=$(awk '/^RssFile/ {print $2}' "/proc/$daemon_pid/status")
    echo "daemon RSS with 100 tasks running: $((rss_kib / 1024)) MiB (anonymous $((anon_kib / 1024)) MiB, file-backed $((file_kib / 1024)) MiB)"
  else
    "$shoal" service scale bench=10 >/dev/null
    # The next round starts from 10 tasks and 10 containers, as the first did.
    while [ "$(tasks)" -gt 10 ] || [ "$("$shoal" container ls -a -q | grep -c .)" -gt 10 ]; do
      sleep 0.1
    done
  fi
done
median=$(median "${times[@]}")
echo "median of $rounds: ${median}s"
