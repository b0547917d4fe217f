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

cargo build --release -p cli --bin shoal
shoal="$PWD/target/release/shoal"
work=$(mktemp -d /tmp/shoal-bench-XXXXXX)
export SHOAL_HOST="unix://$work/shoal.sock"
daemon_pid=""
cleanup() {
  "$shoal" service rm bench >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    [ -z "$("$shoal" container ls -a -q 2>/dev/null)" ] && break
    sleep 0.1
  done
  "$shoal" container ls -a -q 2>/dev/null | xargs -r "$shoal" container rm -f >/dev/null 2>&1 || true
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$shoal" daemon --data-root "$work/data" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do "$shoal" container ls >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sleep"
tar -C "$work/rootfs" -c . | "$shoal" image import - busybox:latest >/dev/null
"$shoal" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
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
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median of $rounds: ${median}s"
