# Shared by the one-node benchmarks (bench-swarm-scale, bench-rolling-update, bench-stack-deploy):
# a release shoal, a daemon on a scratch data root with a loopback swarm, busybox test images,
# and a cleanup that removes everything made. Source it from the repository root, as root.
#
# A script may define `remove_bench_objects` (services, stacks, secrets it made); the cleanup
# runs it before waiting for the containers to go.

cargo build --release -p cli --bin shoal
shoal="$PWD/target/release/shoal"
work=$(mktemp -d /tmp/shoal-bench-XXXXXX)
export SHOAL_HOST="unix://$work/shoal.sock"
daemon_pid=""

one_node_cleanup() {
  if declare -F remove_bench_objects >/dev/null; then remove_bench_objects || true; fi
  for _ in $(seq 100); do
    [ -z "$("$shoal" container ls -a -q 2>/dev/null)" ] && break
    sleep 0.1
  done
  "$shoal" container ls -a -q 2>/dev/null | xargs -r "$shoal" container rm -f >/dev/null 2>&1 || true
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap one_node_cleanup EXIT

"$shoal" daemon --data-root "$work/data" --docker-api "unix://$work/docker.sock" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do "$shoal" container ls >/dev/null 2>&1 && break; sleep 0.1; done
"$shoal" container ls >/dev/null || { echo "the daemon did not start; see its log:" >&2; cat "$work/daemon.log" >&2; exit 1; }
"$shoal" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null

# The busybox-static binary with every applet: a rootfs a script may add to before importing.
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list | grep -vx busybox); do ln -s busybox "$rootfs/bin/$applet"; done

# import_busybox IMAGE...: imports the rootfs under each name.
import_busybox() {
  for image in "$@"; do
    tar -C "$rootfs" -c . | "$shoal" image import - "$image" >/dev/null
  done
}

# running_tasks LIST-COMMAND...: how many tasks the `ps`-like command lists as wanted and running
# (tasks still stopping do not count).
running_tasks() {
  "$shoal" "$@" --format json | grep '"DesiredState":"Running"' | grep -c '"CurrentState":"Running' || true
}

# median SECONDS...: the middle value (the upper one of an even count's two).
median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
