#!/usr/bin/env bash
# Installs what shoal's tests need on a fresh Debian 12 machine, then runs the whole suite:
# formatting, clippy with warnings as errors, every test in the workspace, and a short run of the
# image store's fuzz targets. Run it as root: the engine's end-to-end tests run real containers
# (they skip with a message when not root, and fail instead when SHOAL_REQUIRE_ALL_TESTS is set,
# as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

# docker.io is Docker Swarm 20.10, which crates/cli/tests/docker_compare.rs compares shoal's
# Docker API with, starting dockerds of its own inside its test hosts (tests/src/docker.rs).
# Installing it where systemd does not run starts nothing and leaves the machine's network alone
# (checked on Debian 12 with docker.io 20.10.24): its postinst adds a `docker` group and skips
# the systemd units (no /run/systemd/system); containerd ships a systemd unit only; and the
# `invoke-rc.d ... start` of its init script, and of the recommended cgroupfs-mount's, starts
# nothing where `runlevel` can't tell a runlevel (no init, as in a container) or a policy-rc.d
# denies it. A machine booted with sysvinit would start that dockerd in the machine's own
# namespace (docker0, iptables rules): `update-rc.d docker disable && service docker stop`
# there; where systemd runs, `systemctl disable --now docker.service docker.socket
# containerd.service`, as the README says for the benchmarks.
packages=(busybox-static nftables iproute2 runc docker-registry skopeo umoci python3 docker.io)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# prometheus brings promtool, with which crates/cli/tests/metrics.rs checks the daemons'
# /metrics. Only the tool is wanted: the recommended node exporter stays out, and a policy-rc.d
# that refuses every start (made only where none exists, removed after) keeps the package's own
# server from starting, under invoke-rc.d and deb-systemd-invoke alike; where systemd runs, its
# unit is disabled too, so no boot starts it.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed'; then
  echo "==> installing prometheus (for promtool; its server is not started)"
  policy=/usr/sbin/policy-rc.d
  made_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=true
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if "$made_policy"; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# Each step says how long it took, so a run that nears CI's limit shows where the time went.
step() {
  local started=$SECONDS
  echo "==> $*"
  "$@"
  echo "==> $1 took $((SECONDS - started)) s"
}
step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets -- -D warnings
step cargo test --workspace
echo "==> the image store's fuzz targets, ${FUZZ_SECONDS:-30} s each"
step ./deploy/fuzz.sh
