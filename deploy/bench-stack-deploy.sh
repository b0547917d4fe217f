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

# shellcheck source=deploy/lib/one-node.sh
. deploy/lib/one-node.sh
remove_bench_objects() {
  "$shoal" stack rm bench >/dev/null 2>&1
  "$shoal" secret rm tls_key >/dev/null 2>&1
}
mkdir -p "$rootfs/www"
import_busybox local/web:1 local/api:1
cp -r crates/compose/tests/fixtures/compose "$work/stack"
echo "not a real key" | "$shoal" secret create tls_key - >/dev/null

times=()
for round in $(seq "$rounds"); do
  start=$(date +%s.%N)
  "$shoal" stack deploy -c "$work/stack/secrets-deps.yml" --detach=false -q bench >/dev/null
  while [ "$(running_tasks stack ps bench)" -lt 5 ]; do sleep 0.02; done
  end=$(date +%s.%N)
  elapsed=$(echo "$end - $start" | bc)
  times+=("$elapsed")
  echo "round $round: 2 services, 5 tasks running ${elapsed}s after stack deploy began"
  "$shoal" stack rm bench >/dev/null
  while [ -n "$("$shoal" service ls -q)" ] || [ -n "$("$shoal" container ls -a -q)" ]; do
    sleep 0.1
  done
done
median=$(median "${times[@]}")
echo "median of $rounds: ${median}s"
