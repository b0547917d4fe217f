#!/usr/bin/env bash
# The README's first command: builds shoal, starts a swarm of three test hosts on this machine
# (deploy/cluster-up.sh: one manager and two workers, each a network namespace running
# `shoal daemon`, with the busybox image), deploys the demo stack of deploy/examples/demo/ (a
# setup job, a healthchecked web service with a config, published on port 8080 of every host,
# workers with a secret that wait for web), waits until every service has converged, fetches the
# page through each host's address from a client on the underlay, and prints how to look at it
# and how to tear it down.
# Running it again redeploys the stack, which changes nothing unless the files changed. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${SHOAL_CLUSTER_DIR:-/tmp/shoal-demo-cluster}
export SHOAL_CLUSTER_DIR=$dir
echo "==> starting three test hosts and forming a swarm (deploy/cluster-up.sh)"
MANAGERS=1 deploy/cluster-up.sh 3
shoal=$(cat "$dir/shoal-path")
export SHOAL_HOST="unix://$dir/h1/shoal.sock"

echo "==> deploying the demo stack from deploy/examples/demo/stack.yml"
"$shoal" stack deploy -c deploy/examples/demo/stack.yml --detach=false demo
"$shoal" stack services demo
"$shoal" stack ps demo

# A client outside the swarm: an address on the underlay's bridge, in the underlay's namespace.
client=shoal-demo-ul
ip -n "$client" addr replace 10.213.0.254/24 dev br0
hosts=(10.213.0.1 10.213.0.2 10.213.0.3)
echo "==> fetching the web page through each host's address (the routing mesh)"
for host in "${hosts[@]}"; do
  for _ in $(seq 100); do
    if page=$(nsenter --net="/run/netns/$client" timeout 3 busybox wget -q -O - "http://$host:8080/" 2>/dev/null); then
      break
    fi
    sleep 0.2
  done
  echo "--- http://$host:8080/"
  echo "${page:-no answer}"
done

cat <<MSG

The demo stack runs on 3 hosts. Look at it (the CLI talks to the manager's socket):
  export SHOAL_HOST=$SHOAL_HOST
  $shoal stack ps demo
  $shoal service logs demo_web
  $shoal service logs -f demo_worker      # the workers, which read a secret
  $shoal node ls
Fetch the page through any host (each host sends to its own replica: prefer-local):
  for h in ${hosts[*]}; do nsenter --net=/run/netns/$client timeout 3 busybox wget -q -O - http://\$h:8080/; done
Roll web to a new spec, one task at a time, start-first; then back:
  $shoal service update --env-add COLOR=blue demo_web
  $shoal service rollback demo_web
Edit deploy/examples/demo/stack.yml and deploy again: only the services that changed are updated.
  $shoal stack deploy -c deploy/examples/demo/stack.yml --detach=false demo
Tear down:
  $shoal stack rm demo && deploy/cluster-down.sh
MSG
