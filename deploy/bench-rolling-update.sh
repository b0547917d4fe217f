#!/usr/bin/env bash
# Rolling-update benchmark on one node (issue 6's figure): a 20-replica busybox service whose
# tasks exit promptly on SIGTERM (`--init` forwards it to `sleep`) is updated with parallelism 5,
# delay 0, monitor 1 s, stop-first, ROUNDS times. Each round reports the wall time from the
# `service update -d` command until `service inspect` shows UpdateStatus completed, and the
# manager's own account (CompletedAt - StartedAt). Uses a scratch data root, loopback only, and
# removes everything it made. Run as root.
#   deploy/bench-rolling-update.sh            # 5 rounds
#   ROUNDS=3 deploy/bench-rolling-update.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}

# shellcheck source=deploy/lib/one-node.sh
. deploy/lib/one-node.sh
remove_bench_objects() { "$shoal" service rm bench >/dev/null 2>&1; }
import_busybox busybox:latest
"$shoal" service create --name bench --replicas 20 --init \
  --update-parallelism 5 --update-delay 0s --update-monitor 1s --update-order stop-first \
  busybox sleep 86400 >/dev/null

# "STATE STARTED COMPLETED" of the service's UpdateStatus, from `service inspect`.
update_status() {
  "$shoal" service inspect bench | python3 -c '
import json, sys
from datetime import datetime
status = json.load(sys.stdin)[0].get("UpdateStatus", {})
def seconds(text):
    if not text:
        return 0.0
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))
print(status.get("State", "none"), seconds(status.get("StartedAt")), seconds(status.get("CompletedAt")))'
}

times=()
for round in $(seq "$rounds"); do
  start=$(date +%s.%N)
  "$shoal" service update -d --env-add "ROUND=$round" bench >/dev/null
  while :; do
    read -r state started completed < <(update_status)
    [ "$state" = completed ] && break
    sleep 0.02
  done
  end=$(date +%s.%N)
  elapsed=$(echo "$end - $start" | bc)
  managed=$(echo "$completed - $started" | bc)
  times+=("$elapsed")
  echo "round $round: 20 tasks updated, UpdateStatus completed after ${elapsed}s (manager: ${managed}s from start to completion)"
done
median=$(median "${times[@]}")
echo "median of $rounds: ${median}s"
