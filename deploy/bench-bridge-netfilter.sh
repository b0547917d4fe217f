#!/usr/bin/env bash
# What br_netfilter costs an overlay, without shoal: two hosts as network namespaces on a switch
# (a bridge in a namespace of its own), each with an overlay namespace holding a bridge and a
# VXLAN device as shoal's data plane makes them (VNI 4200, dstport 4789, nolearning, MTU 1450),
# and a task namespace on a veth from that bridge. TCP throughput task to task over VXLAN and host
# to host on the underlay, with the bridges' `bridge-nf-call-*` switches on (the kernel's default
# where br_netfilter is loaded) or off, in the overlay namespaces and on the switch, rounds
# alternated. A Python stream of 1 MiB writes. Every namespace is removed at the end.
#
# FIGURES=tables measures, with every switch off (as shoal runs), what the nftables tables shoal
# keeps cost the same path: the gateway bridge's masquerade in each host's namespace, and a VIP
# table in each task's (the layout of routing-mesh's `vip::plan`, one VIP, one backend). Both hook
# conntrack and NAT into their namespace for every packet; a last variant adds a raw chain that
# leaves the task's own flows untracked, to tell the hooks' cost from conntrack's entries.
# Run as root:
#   deploy/bench-bridge-netfilter.sh              # 4 rounds of 1500 MiB, both experiments
#   ROUNDS=8 MIB=1000 FIGURES=tables deploy/bench-bridge-netfilter.sh
set -euo pipefail
rounds=${ROUNDS:-4}
mib=${MIB:-1500}
figures=${FIGURES:-bridges,tables}
p="bnf$$"
names=(sw h1 h2 o1 o2 t1 t2)
workdir=$(mktemp -d)
cleanup() {
  for n in "${names[@]}"; do ip netns delete "$p$n" 2>/dev/null || true; done
  rm -rf "$workdir"
}
trap cleanup EXIT
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$p$ns" "$@"; }

for n in "${names[@]}"; do ip netns add "$p$n"; in_ns "$n" ip link set lo up; done
in_ns sw ip link add sw0 type bridge
in_ns sw ip link set sw0 up
for i in 1 2; do
  other=$((3 - i))
  in_ns sw ip link add "u$i" type veth peer name eth0 netns "${p}h$i"
  in_ns sw ip link set "u$i" master sw0 up
  in_ns "h$i" ip addr add "192.168.77.$i/24" dev eth0
  in_ns "h$i" ip link set eth0 up
  # Made in the host so that its socket stays there, then moved, as shoal does.
  in_ns "h$i" ip link add "vx$i" type vxlan id 4200 local "192.168.77.$i" dstport 4789 nolearning
  in_ns "h$i" ip link set "vx$i" netns "${p}o$i"
  in_ns "o$i" ip link add br0 type bridge
  in_ns "o$i" ip link set br0 mtu 1450 up
  in_ns "o$i" ip link set "vx$i" master br0 mtu 1450 up
  in_ns "o$i" bridge fdb append 00:00:00:00:00:00 dev "vx$i" dst "192.168.77.$other"
  in_ns "o$i" ip link add "v$i" type veth peer name eth0 netns "${p}t$i"
  in_ns "o$i" ip link set "v$i" master br0 mtu 1450 up
  in_ns "t$i" ip addr add "10.9.0.1$i/24" dev eth0
  in_ns "t$i" ip link set eth0 mtu 1450 up
done

cat >"$workdir/stream.py" <<'EOF'
import socket, sys, time
if sys.argv[1] == "recv":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5001))
    s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept()
    buf = bytearray(1 << 20)
    while c.recv_into(buf):
        pass
    c.close()
else:
    addr, mib = sys.argv[2], int(sys.argv[3])
    data = b"\0" * (1 << 20)
    s = socket.create_connection((addr, 5001))
    started = time.time()
    for _ in range(mib):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(f"{mib * 1.048576 / (time.time() - started):.0f}")
EOF

# The machine's busy CPU time so far, in clock ticks (user, nice, system, irq, softirq).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# "MB/s CPU-ms-per-GiB" from namespace $1 to the listener in $2 at $3. The CPU time is the
# whole machine's, sender, receiver and every hop's softirqs: what a byte costs, which moves far
# less than the rate does when the host's other guests take time from this one.
transfer() {
  local ready="$workdir/ready"
  rm -f "$ready"
  in_ns "$2" python3 "$workdir/stream.py" recv >"$ready" &
  local receiver=$!
  until grep -q listening "$ready" 2>/dev/null; do sleep 0.05; done
  local before rate after
  before=$(busy_ticks)
  rate=$(in_ns "$1" python3 "$workdir/stream.py" send "$3" "$mib")
  wait "$receiver"
  after=$(busy_ticks)
  echo "$rate $(((after - before) * 1000 * 1024 / $(getconf CLK_TCK) / mib))"
}

# Sets the three bridge-nf-call switches to $1 in the namespaces after it.
netfilter() {
  local value=$1; shift
  for n in "$@"; do
    in_ns "$n" sysctl -q -e -w "net.bridge.bridge-nf-call-iptables=$value" \
      "net.bridge.bridge-nf-call-ip6tables=$value" "net.bridge.bridge-nf-call-arptables=$value"
  done
}

# The gateway bridge's masquerade as shoal's node networking writes it (overlay-net's gateway).
host_table() {
  in_ns "$1" nft -f - <<'EOF'
table ip bench_gw_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.18.0.0/16 oifname != "gw" masquerade
	}
}
EOF
}

# A task's VIP table, routing-mesh's layout with one VIP whose one backend is the other task.
task_table() {
  in_ns "$1" nft -f - <<'EOF'
table inet bench_vip {
	map backends {
		typeof ip daddr . numgen random mod 720720 : ip daddr
		flags interval
		elements = { 10.9.0.2 . 0-720719 : 10.9.0.12 }
	}
	set vip_ports {
		typeof ip daddr . meta l4proto . th dport
	}
	set vip_any {
		typeof ip daddr
		elements = { 10.9.0.2 }
	}
	set vips {
		typeof ip daddr
		elements = { 10.9.0.2 }
	}
	chain nat_output {
		type nat hook output priority -100; policy accept;
		ip daddr . meta l4proto . th dport @vip_ports dnat ip to ip daddr . numgen random mod 720720 map @backends
		ip daddr @vip_any dnat ip to ip daddr . numgen random mod 720720 map @backends
	}
	chain filter_output {
		type filter hook output priority filter; policy accept;
		ip daddr @vips meta l4proto tcp reject with tcp reset
		ip daddr @vips reject with icmpx port-unreachable
	}
}
EOF
}

# A raw chain in a task's namespace that leaves every TCP packet untracked: the hooks stay,
# conntrack's lookups and entries go.
untracked() {
  in_ns "$1" nft -f - <<'EOF'
table inet bench_notrack {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		meta l4proto tcp notrack
	}
	chain output {
		type filter hook output priority raw; policy accept;
		meta l4proto tcp notrack
	}
}
EOF
}

drop_tables() {
  for n in h1 h2 t1 t2; do
    for table in "ip bench_gw_nat" "inet bench_vip" "inet bench_notrack"; do
      in_ns "$n" nft delete table $table 2>/dev/null || true
    done
  done
}

results="$workdir/results"
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# Column $2 of the results whose line starts with $1.
column() { grep "^$1 " "$results" | awk -v c="$2" '{print $c}'; }

if [[ ,$figures, == *,bridges,* ]]; then
  for round in $(seq "$rounds"); do
    for switch in 1 0; do
      netfilter "$switch" sw
      echo "switch=$switch underlay $(transfer h1 h2 192.168.77.2)" >>"$results"
      for overlay in 1 0; do
        netfilter "$overlay" o1 o2
        echo "switch=$switch overlay-ns=$overlay overlay $(transfer t1 t2 10.9.0.12)" >>"$results"
      done
    done
    echo "bridges: round $round of $rounds done" >&2
  done

  echo "bridge-nf-call-* on the switch and in the overlay namespaces, median of $rounds rounds of $mib MiB:"
  echo "MB/s, and the machine's CPU time per GiB carried (ms)"
  for switch in 1 0; do
    under=$(column "switch=$switch underlay" 3 | median)
    under_cpu=$(column "switch=$switch underlay" 4 | median)
    echo "switch netfilter $switch: underlay $under MB/s, $under_cpu ms/GiB (MB/s: $(column "switch=$switch underlay" 3 | tr '\n' ' '))"
    for overlay in 1 0; do
      key="switch=$switch overlay-ns=$overlay overlay"
      over=$(column "$key" 4 | median)
      over_cpu=$(column "$key" 5 | median)
      echo "  overlay-namespace netfilter $overlay: overlay $over MB/s, $((100 * over / under)) % of the underlay; $over_cpu ms/GiB, $((100 * under_cpu / over_cpu)) % of the underlay's rate per CPU (MB/s: $(column "$key" 4 | tr '\n' ' '))"
    done
  done
fi

if [[ ,$figures, == *,tables,* ]]; then
  netfilter 0 sw o1 o2
  variants=(underlay underlay+host overlay overlay+host overlay+host+task overlay+host+task+notrack)
  for round in $(seq "$rounds"); do
    for variant in "${variants[@]}"; do
      drop_tables
      case $variant in *host*) host_table h1; host_table h2 ;; esac
      case $variant in *task*) task_table t1; task_table t2 ;; esac
      case $variant in *notrack*) untracked t1; untracked t2 ;; esac
      case $variant in
        underlay*) echo "tables=$variant $(transfer h1 h2 192.168.77.2)" >>"$results" ;;
        *) echo "tables=$variant $(transfer t1 t2 10.9.0.12)" >>"$results" ;;
      esac
    done
    drop_tables
    echo "tables: round $round of $rounds done" >&2
  done

  echo "shoal's nftables tables in the hosts' and tasks' namespaces (bridge-nf-call-* off), median of $rounds rounds of $mib MiB:"
  under_cpu=$(column "tables=underlay" 3 | median)
  for variant in "${variants[@]}"; do
    rate=$(column "tables=$variant" 2 | median)
    cpu=$(column "tables=$variant" 3 | median)
    echo "  $variant: $rate MB/s, $cpu ms/GiB, $((100 * cpu / under_cpu)) % of the bare underlay's CPU per GiB (ms/GiB: $(column "tables=$variant" 3 | tr '\n' ' '))"
  done
fi
