#!/usr/bin/env bash
# Stack deploy benchmark on one node (issue 6's second figure): deploys the fixture stack
# `secrets-deps.yml` (web and api, a file secret and an external one, a config, api healthchecked
# every 2 s, web depending on api being healthy) with `stack deploy --detach=false`, and times the
# command until every task runs, ROUNDS times (removing the stack in between). The fixture's
# images are the busybox test image imported under their names. Uses a scratch data root,
# loopback only, and removes everything it made. Run as root.
#   deploy/bench-stack-deploy.sh            # 5 rounds
#   ROUNDS=3 deploy/bench-stack-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}

cargo build --release -p cli --bin shoal
shoal="$PWD/target/release/shoal"
work=$(mktemp -d /tmp/shoal-bench-XXXXXX)
export SHOAL_HOST="unix://$work/shoal.sock"
daemon_pid=""
cleanup() {
  "$shoal" stack rm bench >/dev/null 2>&1 || true
  "$shoal" secret rm tls_key >/dev/null 2>&1 || true
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
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/www"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list | grep -vx busybox); do ln -s busybox "$work/rootfs/bin/$applet"; done
for image in local/web:1 local/api:1; do
  tar -C "$work/rootfs" -c . | "$shoal" image import - "$image" >/dev/null
done
"$shoal" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
cp -r crates/cli/tests/fixtures/compose "$work/stack"
echo "not a real key" | "$shoal" secret create tls_key - >/dev/null

# Tasks wanted running and running, over the stack's services.
running() {
  "$shoal" stack ps bench --format json |
    grep '"DesiredState":"Running"' | grep -c '"CurrentState":"Running' || true
}

times=()
for round in $(seq "$rounds"); do
  start=$(date +%s.%N)
  "$shoal" stack deploy -c "$work/stack/secrets-deps.yml" --detach=false -q bench >/dev/null
  while [ "$(running)" -lt 5 ]; do sleep 0.02; done
  end=$(date +%s.%N)
  elapsed=$(echo "$end - $start" | bc)
  times+=("$elapsed")
  echo "round $round: 2 services, 5 tasks running ${elapsed}s after stack deploy began"
  "$shoal" stack rm bench >/dev/null
  while [ -n "$("$shoal" service ls -q)" ] || [ -n "$("$shoal" container ls -a -q)" ]; do
    sleep 0.1
  done
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median of $rounds: ${median}s"
