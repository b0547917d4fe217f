#!/usr/bin/env bash
# Installs what shoal's tests need on a fresh Debian 12 machine, then runs the whole suite:
# formatting, clippy with warnings as errors, every test in the workspace, and a short run of the
# image store's fuzz targets. Run it as root: the engine's end-to-end tests run real containers
# (they skip with a message when not root, and fail instead when SHOAL_REQUIRE_ALL_TESTS is set,
# as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(busybox-static nftables iproute2 runc docker-registry skopeo umoci python3)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test --workspace"
cargo test --workspace
echo "==> deploy/fuzz.sh (the image store's fuzz targets, ${FUZZ_SECONDS:-30} s each)"
./deploy/fuzz.sh
