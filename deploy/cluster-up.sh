#!/usr/bin/env bash
# Starts a cluster of N test hosts on this machine (default 3), the same kind the end-to-end
# harness in tests/ builds: each host is a network namespace (shoal-demo-h1 …) wired by a veth to
# a bridge inside its own underlay namespace (shoal-demo-ul), so the hosts reach each other on
# 10.213.0.0/24 and nothing touches this machine's network. Each runs `shoal daemon` with its own
# hostname, data root and socket under $SHOAL_CLUSTER_DIR (default /tmp/shoal-demo-cluster), has
# the busybox image, and they form one swarm: host 1 founds it, hosts 2 … MANAGERS join as
# managers (MANAGERS=3 deploy/cluster-up.sh 5), the rest as workers. Running it again starts only
# what is missing. Run as root; `deploy/cluster-down.sh` removes it all.
# SHOAL_BIN=/path/to/shoal skips the release build and runs that binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "cluster-up.sh needs root (network namespaces, nftables, containers): run it with sudo" >&2
  exit 1
fi
hosts=${1:-3}
# The first MANAGERS hosts manage (default 1); the others join as workers.
managers=${MANAGERS:-1}
if ! [[ "$hosts" =~ ^[0-9]+$ ]] || [ "$hosts" -lt 1 ] || [ "$hosts" -gt 200 ]; then
  echo "usage: $0 [HOSTS]   (1 to 200, default 3)" >&2
  exit 1
fi

prefix=shoal-demo
underlay=$prefix-ul
subnet=10.213.0
dir=${SHOAL_CLUSTER_DIR:-/tmp/shoal-demo-cluster}

missing=()
for pair in busybox-static:/bin/busybox nftables:nft iproute2:ip util-linux:nsenter; do
  package=${pair%%:*} program=${pair#*:}
  [ -x "$program" ] || command -v "$program" >/dev/null || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${SHOAL_BIN:-}" ]; then
  shoal=$(realpath "$SHOAL_BIN")
else
  echo "==> building shoal (release)"
  cargo build --release -p cli --bin shoal
  shoal="${CARGO_TARGET_DIR:-$PWD/target}/release/shoal"
  [[ "$shoal" = /* ]] || shoal="$PWD/$shoal"
fi
mkdir -p "$dir"
# cluster-down.sh runs the same binary's `shim --cleanup`.
echo "$shoal" >"$dir/shoal-path"

# Underlay: a bridge inside its own namespace, never in this machine's.
if [ ! -e "/run/netns/$underlay" ]; then
  ip netns add "$underlay"
  ip -n "$underlay" link set lo up
  ip -n "$underlay" link add br0 type bridge
  ip -n "$underlay" link set br0 up
fi

sock() { echo "unix://$dir/h$1/shoal.sock"; }
answers() { "$shoal" -H "$(sock "$1")" container ls -q >/dev/null 2>&1; }

for i in $(seq "$hosts"); do
  name=$prefix-h$i
  if [ ! -e "/run/netns/$name" ]; then
    echo "==> host $name at $subnet.$i"
    ip netns add "$name"
    ip -n "$name" link set lo up
    # Both veth ends are made inside the host namespace; the peer moves to the underlay.
    ip -n "$name" link add eth0 type veth peer name "h$i" netns "$underlay"
    ip -n "$underlay" link set "h$i" master br0 up
    ip -n "$name" addr add "$subnet.$i/24" dev eth0
    ip -n "$name" link set eth0 up
  fi
  mkdir -p "$dir/h$i"
  if ! answers "$i"; then
    echo "==> starting $name's daemon (log $dir/h$i/daemon.log)"
    # nsenter --net (not `ip netns exec`, which hides the cgroup v1 mounts) and a fresh UTS
    # namespace named after the host; the inner shell records its pid, then execs the daemon.
    setsid nsenter --net="/run/netns/$name" unshare --uts \
      sh -c 'echo $$ >"$0"; hostname "$1"; shift; exec "$@"' \
      "$dir/h$i/daemon.pid" "$name" \
      "$shoal" daemon --data-root "$dir/h$i/data" -H "$(sock "$i")" \
        --docker-api "unix://$dir/h$i/docker.sock" \
      </dev/null >>"$dir/h$i/daemon.log" 2>&1 &
  fi
done

tarball="$dir/busybox.tar"
for i in $(seq "$hosts"); do
  for _ in $(seq 300); do answers "$i" && break; sleep 0.1; done
  if ! answers "$i"; then
    echo "$prefix-h$i's daemon did not come up; last lines of $dir/h$i/daemon.log:" >&2
    tail -n 20 "$dir/h$i/daemon.log" >&2
    exit 1
  fi
  if ! "$shoal" -H "$(sock "$i")" image ls | grep -q '^busybox '; then
    if [ ! -s "$tarball" ]; then
      rootfs=$(mktemp -d)
      mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root}
      chmod 1777 "$rootfs/tmp"
      cp /bin/busybox "$rootfs/bin/busybox"
      for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
      done
      printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n' >"$rootfs/etc/passwd"
      printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
      tar -C "$rootfs" --owner=0 --group=0 -cf "$tarball.partial" .
      mv "$tarball.partial" "$tarball"
      rm -rf "$rootfs"
    fi
    echo "==> importing busybox:latest on $prefix-h$i"
    "$shoal" -H "$(sock "$i")" image import "$tarball" busybox:latest >/dev/null
  fi
done

manager=$(sock 1)
if ! "$shoal" -H "$manager" info 2>/dev/null | grep -q '^Swarm: active'; then
  echo "==> swarm init on $prefix-h1 ($subnet.1)"
  "$shoal" -H "$manager" swarm init --advertise-addr "$subnet.1"
fi
for i in $(seq 2 "$hosts"); do
  "$shoal" -H "$(sock "$i")" info 2>/dev/null | grep -q '^Swarm: active' && continue
  role=worker
  [ "$i" -le "$managers" ] && role=manager
  echo "==> $prefix-h$i joins as a $role"
  token=$("$shoal" -H "$manager" swarm join-token -q "$role")
  "$shoal" -H "$(sock "$i")" swarm join --token "$token" --advertise-addr "$subnet.$i" "$subnet.1:2377"
done
"$shoal" -H "$manager" node ls

cat <<MSG

The cluster is up: $hosts hosts, shoal-demo-h1 … shoal-demo-h$hosts at $subnet.1 … $subnet.$hosts,
one swarm with $managers manager(s).
Talk to a host's daemon (sockets are files, so no namespace is needed):
  SHOAL_HOST=$(sock 1) $shoal node ls
  SHOAL_HOST=$(sock 1) $shoal service create --name web --replicas 3 busybox:latest sleep 3600
Enter a host's network namespace (and its daemon's hostname):
  nsenter --net=/run/netns/$prefix-h2 sh
  nsenter --net=/run/netns/$prefix-h2 --uts=/proc/\$(cat $dir/h2/daemon.pid)/ns/uts sh
Cut a host off the underlay, and reconnect it:
  nsenter --net=/run/netns/$prefix-h2 nft 'add table inet shoal_partition; add chain inet shoal_partition in { type filter hook input priority -400; }; add rule inet shoal_partition in iifname "eth0" drop; add chain inet shoal_partition out { type filter hook output priority -400; }; add rule inet shoal_partition out oifname "eth0" drop'
  nsenter --net=/run/netns/$prefix-h2 nft delete table inet shoal_partition
Tear it all down: deploy/cluster-down.sh
MSG
