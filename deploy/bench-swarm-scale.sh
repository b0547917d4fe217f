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
# busybox `sleep` as PID 1 ignores SIGTERM; a short grace period keeps scale-downs between rounds
# quick and does not touch the scale-up being measured.
"$shoal" service create --name bench --replicas 10 --stop-grace-period 1s busybox sleep 86400 >/dev/null

# Tasks wanted and running; tasks of a scale-down still stopping do not count.
running() {
  "$shoal" service ps bench --format json |
    grep '"DesiredState":"Running"' | grep -c '"CurrentState":"Running' || true
}
tasks() { "$shoal" service ps bench --format json | grep -c . || true; }

times=()
for round in $(seq "$rounds"); do
  start=$(date +%s.%N)
  "$shoal" service scale -d bench=100 >/dev/null
  while [ "$(running)" -lt 100 ]; do sleep 0.05; done
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
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median of $rounds: ${median}s"
