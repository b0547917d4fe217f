#!/usr/bin/env bash
# Builds shoal and shows what it does today on one machine: starts `shoal daemon` on a scratch
# data root, imports a busybox image made from the host's busybox-static, runs containers with
# the built-in engine, and prints how to look around and how to tear it all down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
echo "==> building shoal (release)"
cargo build --release -p cli --bin shoal
shoal="$PWD/target/release/shoal"

demo=${SHOAL_DEMO_DIR:-/tmp/shoal-demo}
mkdir -p "$demo"
export SHOAL_HOST="unix://$demo/shoal.sock"
if ! "$shoal" container ls >/dev/null 2>&1; then
  echo "==> starting shoal daemon (data root $demo/data, log $demo/daemon.log)"
  setsid "$shoal" daemon --data-root "$demo/data" -H "$SHOAL_HOST" >"$demo/daemon.log" 2>&1 &
  echo $! >"$demo/daemon.pid"
  for _ in $(seq 100); do "$shoal" container ls >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "==> importing busybox:latest from /bin/busybox"
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo sleep hostname cat ls ps; do ln -sf busybox "$rootfs/bin/$applet"; done
tar -C "$rootfs" -c . | "$shoal" image import - busybox:latest

echo "==> running containers"
"$shoal" container run --rm busybox:latest echo "hello from a shoal container"
"$shoal" container run -d --name demo-sleeper --memory 32m --pids-limit 64 busybox:latest sleep 3600
"$shoal" container ls

echo "==> swarm mode: a one-node swarm and a service of 3 replicas"
if ! "$shoal" info 2>/dev/null | grep -q '^Swarm: active'; then
  # Loopback only: the demo's cluster port is reachable from this machine alone.
  "$shoal" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377
fi
"$shoal" service rm demo-web >/dev/null 2>&1 || true
"$shoal" service create --name demo-web --replicas 3 busybox:latest \
  sh -c 'echo "hello from $(hostname)"; exec sleep 3600'
"$shoal" service ls
"$shoal" service ps demo-web

cat <<MSG

shoal is running. Try:
  export SHOAL_HOST=$SHOAL_HOST
  $shoal service scale demo-web=10
  $shoal service logs demo-web
  $shoal node ls
  $shoal container ls --format json
  $shoal image ls
Tear down (containers outlive the daemon, so remove them first):
  $shoal service rm demo-web; $shoal container rm -f demo-sleeper
  kill \$(cat $demo/daemon.pid) && rm -rf $demo
MSG
