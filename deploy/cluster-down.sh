#!/usr/bin/env bash
# Removes everything deploy/cluster-up.sh made, in the order of the test harness's teardown:
# services (through a manager), then every host's containers, then the daemons (each first leaves
# the swarm, which removes its overlay networking; then SIGTERM, SIGKILL after 10 s), then
# whatever is left without a daemon: shims and container processes, mounts, cgroups, the cluster
# directory, and the shoal-demo-* network namespaces (their veths, bridge and nftables tables go
# with them). Safe to run again. Run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "cluster-down.sh needs root (network namespaces, mounts, processes): run it with sudo" >&2
  exit 1
fi

prefix=shoal-demo
dir=${SHOAL_CLUSTER_DIR:-/tmp/shoal-demo-cluster}
shoal=$(cat "$dir/shoal-path" 2>/dev/null || true)
[ -x "$shoal" ] || shoal="$(cd "$(dirname "$0")/.." && pwd)/target/release/shoal"

# The host directories (h1 …) under the cluster directory.
host_dirs=()
for host_dir in "$dir"/h*; do
  [ -d "$host_dir" ] && host_dirs+=("$host_dir")
done

cli() { timeout 20 "$shoal" -H "unix://$1/shoal.sock" "${@:2}"; }

if [ -x "$shoal" ] && [ "${#host_dirs[@]}" -gt 0 ]; then
  # Services first, through whichever host answers as a manager.
  for host_dir in "${host_dirs[@]}"; do
    if services=$(cli "$host_dir" service ls -q 2>/dev/null); then
      if [ -n "$services" ]; then
        echo "==> removing services"
        # shellcheck disable=SC2086 # one id per word
        cli "$host_dir" service rm $services >/dev/null 2>&1 || true
        # A moment for the workers to stop them; whatever still runs is forced below.
        for _ in $(seq 20); do
          running=0
          for other in "${host_dirs[@]}"; do
            [ -n "$(cli "$other" container ls -q 2>/dev/null || true)" ] && running=1
          done
          [ "$running" -eq 0 ] && break
          sleep 0.1
        done
      fi
      break
    fi
  done
  for host_dir in "${host_dirs[@]}"; do
    containers=$(cli "$host_dir" container ls -a -q 2>/dev/null || true)
    if [ -n "$containers" ]; then
      echo "==> removing the containers on $prefix-$(basename "$host_dir")"
      # shellcheck disable=SC2086 # one id per word
      timeout 60 "$shoal" -H "unix://$host_dir/shoal.sock" container rm -f $containers >/dev/null 2>&1 || true
    fi
  done
fi

# Each daemon's overlay networking (a namespace per network and per task, links, nftables
# tables) outlives the daemon by design, so a restart finds it; leaving the swarm removes it.
if [ -x "$shoal" ]; then
  for host_dir in "${host_dirs[@]}"; do
    cli "$host_dir" swarm leave --force >/dev/null 2>&1 || true
  done
fi

# Daemons: SIGTERM, then SIGKILL after 10 s.
pids=()
for host_dir in "${host_dirs[@]}"; do
  pid=$(cat "$host_dir/daemon.pid" 2>/dev/null || true)
  # Only a pid that is still this host's daemon (pids get reused).
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$host_dir/data"; then
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  fi
done
if [ "${#pids[@]}" -gt 0 ]; then
  echo "==> stopping ${#pids[@]} daemons"
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
fi

# Whatever is left without a daemon: processes mentioning the directory (shims, daemons this
# script has no pid for), container processes and their mounts and cgroups.
if [ -d "$dir" ]; then
  pkill -KILL -f -- "$dir/" 2>/dev/null || true
  for host_dir in "${host_dirs[@]}"; do
    for container_dir in "$host_dir"/data/containers/*/; do
      [ -d "$container_dir" ] || continue
      id=$(basename "$container_dir")
      for pid in $(grep -oE '"(shim_)?pid": *[0-9]+' "$container_dir/state.json" 2>/dev/null | grep -oE '[0-9]+$' || true); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      [ -x "$shoal" ] && timeout 20 "$shoal" shim --cleanup --data-root "$host_dir/data" --id "$id" >/dev/null 2>&1 || true
      for controller in memory pids cpu cpuacct cpuset devices freezer blkio systemd unified; do
        rmdir "/sys/fs/cgroup/$controller/shoal/$id" 2>/dev/null || true
      done
    done
  done
  awk -v dir="$dir" '$5 == dir || index($5, dir "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2- | while read -r target; do umount -l "$target" 2>/dev/null || true; done
  rm -rf "$dir"
fi

# Namespaces: hosts first (each holds a veth whose peer is in the underlay), then the underlay.
namespaces=$(ip netns list | awk '{ print $1 }' | grep -E "^$prefix-h[0-9]+\$" || true)
[ -e "/run/netns/$prefix-ul" ] && namespaces="$namespaces $prefix-ul"
for name in $namespaces; do
  ip netns delete "$name"
done
if [ -n "${namespaces// /}" ]; then
  echo "==> removed namespaces:" $namespaces
fi
echo "the shoal-demo cluster is gone"
