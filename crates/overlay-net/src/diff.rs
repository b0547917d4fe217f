//! The pure diff: the changes that take an observed data plane to the planned one, ordered so
//! nothing live breaks on the way (entries are replaced in place; stale ones go last).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::desired::{Ipv4Cidr, Mac};
use crate::plan::{Link, LinkKey, LinkKind, Masquerade, Netns, State, VethPeer};

/// One step of the way from the observed state to the planned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateNamespace(String),
    /// Turns netfilter off for the frames a network namespace's bridge forwards.
    UnfilterBridge(String),
    /// Removes a link, before anything is created when the plan needs its name back (a link of
    /// the wrong kind or settings, half a veth pair, a leftover temporary name), after everything
    /// else when it is only stale.
    DeleteLink(LinkKey),
    /// Creates a bridge or VXLAN device with its attributes (a VXLAN device is created in the
    /// underlay and then moved into `key.ns`).
    CreateLink {
        key: LinkKey,
        link: Link,
    },
    /// Creates a veth pair beside `key` and moves the far end into its namespace under its name.
    CreateVeth {
        key: LinkKey,
        link: Link,
        peer: VethPeer,
        peer_link: Link,
    },
    /// Brings an existing link's MTU, MAC, master and state to the plan's.
    SetLink {
        key: LinkKey,
        link: Link,
    },
    AddAddress {
        link: LinkKey,
        addr: Ipv4Cidr,
    },
    /// Sets (NLM_F_REPLACE) a namespace's default route.
    ReplaceRoute {
        ns: Netns,
        dev: String,
        gateway: Ipv4Addr,
    },
    EnableForwarding,
    /// Sets an underlay link's reverse-path filter to loose (`rp_filter` 2).
    LooseRpFilter(String),
    /// Spreads what a VXLAN device receives over the node's CPUs (its `rps_cpus`).
    SteerLink(LinkKey),
    /// Writes the masquerade's nftables table whole, replacing what was there.
    SetMasquerade(Masquerade),
    /// Sets (NLM_F_REPLACE) a permanent FDB entry on a VXLAN device: MAC → VTEP.
    ReplaceFdb {
        link: LinkKey,
        mac: Mac,
        vtep: Ipv4Addr,
    },
    /// Sets (NLM_F_REPLACE) a permanent neighbour entry on a VXLAN device: IP → MAC.
    ReplaceNeigh {
        link: LinkKey,
        addr: Ipv4Addr,
        mac: Mac,
    },
    DelNeigh {
        link: LinkKey,
        addr: Ipv4Addr,
        mac: Mac,
    },
    DelFdb {
        link: LinkKey,
        mac: Mac,
        vtep: Ipv4Addr,
    },
    DelRoute {
        ns: Netns,
        dev: String,
        gateway: Ipv4Addr,
    },
    DelAddress {
        link: LinkKey,
        addr: Ipv4Cidr,
    },
    RemoveMasquerade(String),
    DeleteNamespace(String),
}

/// Whether an observed link can stay as the planned one: same kind and, for VXLAN, the same
/// settings (those can't change in place).
fn same_kind(planned: &LinkKind, observed: &LinkKind) -> bool {
    planned == observed
}

/// Whether an observed link's attributes are the planned ones.
fn same_attributes(planned: &Link, observed: &Link) -> bool {
    planned.mtu == observed.mtu
        && planned.mac.is_none_or(|m| observed.mac == Some(m))
        && planned.master == observed.master
        && planned.up == observed.up
}

/// The changes that take `observed` to `plan`, in the order to make them: namespaces, links
/// that must go to free a name, new links, attributes, addresses, routes, egress, entries
/// replaced in place, and only then stale entries, links and namespaces.
pub fn diff(plan: &State, observed: &State) -> Vec<Change> {
    let mut out = Vec::new();

    for ns in plan.namespaces.difference(&observed.namespaces) {
        out.push(Change::CreateNamespace(ns.clone()));
    }
    for ns in plan
        .unfiltered_bridges
        .difference(&observed.unfiltered_bridges)
    {
        out.push(Change::UnfilterBridge(ns.clone()));
    }
    let dead_namespaces: BTreeSet<&String> =
        observed.namespaces.difference(&plan.namespaces).collect();
    let in_dead_ns =
        |key: &LinkKey| matches!(&key.ns, Netns::Named(n) if dead_namespaces.contains(n));
    // A task's namespace belongs to the engine: what is in it is looked at only while the plan
    // has the task, and a gone task's interfaces die with their other ends.
    let planned_tasks: BTreeSet<&Netns> = plan
        .links
        .keys()
        .map(|k| &k.ns)
        .filter(|ns| matches!(ns, Netns::Task(_)))
        .collect();
    let ours = |ns: &Netns| !matches!(ns, Netns::Task(_)) || planned_tasks.contains(ns);

    // Links that go before anything is created, and links created anew: their observed
    // addresses and entries no longer count.
    let mut early_deletes: BTreeSet<LinkKey> = BTreeSet::new();
    let mut fresh: BTreeSet<LinkKey> = BTreeSet::new();
    for (key, link) in &plan.links {
        if let Some(seen) = observed.links.get(key)
            && !same_kind(&link.kind, &seen.kind)
        {
            early_deletes.insert(key.clone());
            fresh.insert(key.clone());
        }
    }
    for (near, peer) in &plan.veths {
        let has_near = observed.links.contains_key(near) && !fresh.contains(near);
        let has_far = observed.links.contains_key(&peer.key) && !fresh.contains(&peer.key);
        if has_near && has_far {
            continue;
        }
        // Half a pair is no use: both ends are made again together.
        for key in [near, &peer.key] {
            if observed.links.contains_key(key) {
                early_deletes.insert(key.clone());
            }
            fresh.insert(key.clone());
        }
        let temp = LinkKey {
            ns: near.ns.clone(),
            name: peer.temp_name.clone(),
        };
        if observed.links.contains_key(&temp) {
            early_deletes.insert(temp);
        }
    }
    // Planned links absent from observation are fresh too.
    for key in plan.links.keys() {
        if !observed.links.contains_key(key) {
            fresh.insert(key.clone());
        }
    }
    // A VXLAN device is made in the underlay under its final name before it moves: one left
    // there by a crash between the two steps must go first.
    for (key, link) in &plan.links {
        if let LinkKind::Vxlan(_) = link.kind
            && key.ns != Netns::Underlay
            && fresh.contains(key)
        {
            let stranded = LinkKey {
                ns: Netns::Underlay,
                name: key.name.clone(),
            };
            if observed.links.contains_key(&stranded) {
                early_deletes.insert(stranded);
            }
        }
    }
    for key in &early_deletes {
        out.push(Change::DeleteLink(key.clone()));
    }

    let stale_links: Vec<&LinkKey> = observed
        .links
        .keys()
        .filter(|k| {
            !plan.links.contains_key(k)
                && !early_deletes.contains(k)
                && !in_dead_ns(k)
                && ours(&k.ns)
        })
        .collect();
    let gone = |key: &LinkKey| {
        !ours(&key.ns)
            || fresh.contains(key)
            || early_deletes.contains(key)
            || stale_links.contains(&key)
            || in_dead_ns(key)
    };

    // Bridges first, so every other link finds its master; veth pairs are made from their near
    // end (their far end is created with it).
    let far_ends: BTreeSet<&LinkKey> = plan.veths.values().map(|p| &p.key).collect();
    let rank = |link: &Link| match link.kind {
        LinkKind::Bridge => 0,
        LinkKind::Vxlan(_) => 1,
        _ => 2,
    };
    let mut creations: Vec<(&LinkKey, &Link)> = plan
        .links
        .iter()
        .filter(|(k, _)| fresh.contains(*k) && !far_ends.contains(k))
        .collect();
    creations.sort_by_key(|(k, l)| (rank(l), (*k).clone()));
    for (key, link) in creations {
        match plan.veths.get(key) {
            Some(peer) => {
                if let Some(peer_link) = plan.links.get(&peer.key) {
                    out.push(Change::CreateVeth {
                        key: key.clone(),
                        link: link.clone(),
                        peer: peer.clone(),
                        peer_link: peer_link.clone(),
                    });
                }
            }
            None => out.push(Change::CreateLink {
                key: key.clone(),
                link: link.clone(),
            }),
        }
    }
    for (key, link) in &plan.links {
        if fresh.contains(key) {
            continue;
        }
        if let Some(seen) = observed.links.get(key)
            && !same_attributes(link, seen)
        {
            out.push(Change::SetLink {
                key: key.clone(),
                link: link.clone(),
            });
        }
    }

    for (link, addr) in &plan.addresses {
        if fresh.contains(link) || !observed.addresses.contains(&(link.clone(), *addr)) {
            out.push(Change::AddAddress {
                link: link.clone(),
                addr: *addr,
            });
        }
    }
    for (ns, (dev, gateway)) in &plan.default_routes {
        let dev_fresh = fresh.contains(&LinkKey {
            ns: ns.clone(),
            name: dev.clone(),
        });
        if dev_fresh || observed.default_routes.get(ns) != Some(&(dev.clone(), *gateway)) {
            out.push(Change::ReplaceRoute {
                ns: ns.clone(),
                dev: dev.clone(),
                gateway: *gateway,
            });
        }
    }

    if plan.forwarding && !observed.forwarding {
        out.push(Change::EnableForwarding);
    }
    for name in &plan.loose_rp_filter {
        // A link made anew starts from the namespace's default, whatever the old one had.
        let fresh_link = fresh.contains(&LinkKey {
            ns: Netns::Underlay,
            name: name.clone(),
        });
        if fresh_link || !observed.loose_rp_filter.contains(name) {
            out.push(Change::LooseRpFilter(name.clone()));
        }
    }
    for key in &plan.steered_links {
        if fresh.contains(key) || !observed.steered_links.contains(key) {
            out.push(Change::SteerLink(key.clone()));
        }
    }
    if let Some(masq) = &plan.masquerade
        && observed.masquerade.as_ref() != Some(masq)
    {
        out.push(Change::SetMasquerade(masq.clone()));
    }

    for ((link, mac), vtep) in &plan.fdb {
        if fresh.contains(link) || observed.fdb.get(&(link.clone(), *mac)) != Some(vtep) {
            out.push(Change::ReplaceFdb {
                link: link.clone(),
                mac: *mac,
                vtep: *vtep,
            });
        }
    }
    for ((link, addr), mac) in &plan.neigh {
        if fresh.contains(link) || observed.neigh.get(&(link.clone(), *addr)) != Some(mac) {
            out.push(Change::ReplaceNeigh {
                link: link.clone(),
                addr: *addr,
                mac: *mac,
            });
        }
    }

    // Stale entries, on links that stay (entries on links that go, go with them).
    for ((link, addr), mac) in &observed.neigh {
        if !gone(link) && !plan.neigh.contains_key(&(link.clone(), *addr)) {
            out.push(Change::DelNeigh {
                link: link.clone(),
                addr: *addr,
                mac: *mac,
            });
        }
    }
    for ((link, mac), vtep) in &observed.fdb {
        if !gone(link) && !plan.fdb.contains_key(&(link.clone(), *mac)) {
            out.push(Change::DelFdb {
                link: link.clone(),
                mac: *mac,
                vtep: *vtep,
            });
        }
    }
    for (ns, (dev, gateway)) in &observed.default_routes {
        let dev_key = LinkKey {
            ns: ns.clone(),
            name: dev.clone(),
        };
        if !plan.default_routes.contains_key(ns) && !gone(&dev_key) {
            out.push(Change::DelRoute {
                ns: ns.clone(),
                dev: dev.clone(),
                gateway: *gateway,
            });
        }
    }
    for (link, addr) in &observed.addresses {
        if !gone(link) && !plan.addresses.contains(&(link.clone(), *addr)) {
            out.push(Change::DelAddress {
                link: link.clone(),
                addr: *addr,
            });
        }
    }
    if plan.masquerade.is_none()
        && let Some(masq) = &observed.masquerade
    {
        out.push(Change::RemoveMasquerade(masq.table.clone()));
    }
    for key in stale_links {
        out.push(Change::DeleteLink(key.clone()));
    }
    for ns in dead_namespaces {
        out.push(Change::DeleteNamespace(ns.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Mac, RemotePeer};
    use crate::plan::plan;
    use crate::plan::tests::{cidr, desired, ip, steered_names, with_host_leg};

    /// What a node that applied `state` observes afterwards: the same, less what observation
    /// can't see (which end of a veth is which).
    fn observed(state: &State) -> State {
        let mut seen = state.clone();
        seen.veths.clear();
        for link in seen.links.values_mut() {
            link.mac.get_or_insert(Mac([2, 0, 0, 0, 0, 1]));
        }
        seen
    }

    fn vx() -> LinkKey {
        LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "t1-x001001".into(),
        }
    }

    #[test]
    fn restart_observing_the_plan_changes_nothing() {
        let state = plan(&desired()).unwrap();
        assert_eq!(diff(&state, &observed(&state)), vec![]);
    }

    #[test]
    fn a_network_namespace_whose_bridge_is_filtered_again_is_unfiltered_and_nothing_else() {
        let state = plan(&desired()).unwrap();
        assert_eq!(
            state.unfiltered_bridges,
            BTreeSet::from(["t1-net1".to_string()])
        );
        let mut seen = observed(&state);
        seen.unfiltered_bridges.clear();
        assert_eq!(
            diff(&state, &seen),
            vec![Change::UnfilterBridge("t1-net1".into())]
        );
    }

    #[test]
    fn a_link_that_no_longer_spreads_its_packets_is_steered_again_and_nothing_else() {
        let state = plan(&desired()).unwrap();
        // The tunnel, and the task's leg on the gateway bridge.
        assert_eq!(steered_names(&state), ["t1-gtaskaaa", "t1-x001001"]);
        let mut seen = observed(&state);
        seen.steered_links.remove(&vx());
        assert_eq!(diff(&state, &seen), vec![Change::SteerLink(vx())]);
    }

    #[test]
    fn a_tunnel_made_anew_is_steered_after_it_is_made() {
        let state = plan(&desired()).unwrap();
        let mut seen = observed(&state);
        seen.links.remove(&vx());
        let changes = diff(&state, &seen);
        let made = changes
            .iter()
            .position(|c| matches!(c, Change::CreateLink { key, .. } if *key == vx()))
            .expect("the tunnel is made");
        let steered = changes
            .iter()
            .position(|c| *c == Change::SteerLink(vx()))
            .expect("the tunnel is steered");
        assert!(made < steered, "{changes:?}");
    }

    #[test]
    fn a_peer_moved_to_another_vtep_is_one_replace() {
        let before = plan(&desired()).unwrap();
        let mut d = desired();
        d.peers[0].vtep = ip("192.0.2.3");
        let after = plan(&d).unwrap();
        assert_eq!(
            diff(&after, &observed(&before)),
            vec![Change::ReplaceFdb {
                link: vx(),
                mac: Mac::for_ipv4(ip("10.0.1.6")),
                vtep: ip("192.0.2.3"),
            }]
        );
    }

    #[test]
    fn a_dead_node_removes_only_its_entries() {
        let mut d = desired();
        d.peers.push(RemotePeer {
            network_id: "net1".into(),
            address: ip("10.0.1.7"),
            mac: Mac::for_ipv4(ip("10.0.1.7")),
            vtep: ip("192.0.2.3"),
        });
        let before = plan(&d).unwrap();
        // The node behind 192.0.2.2 dies: its task's entries go, the other peer's stay.
        d.peers.remove(0);
        let after = plan(&d).unwrap();
        assert_eq!(
            diff(&after, &observed(&before)),
            vec![
                Change::DelNeigh {
                    link: vx(),
                    addr: ip("10.0.1.6"),
                    mac: Mac::for_ipv4(ip("10.0.1.6")),
                },
                Change::DelFdb {
                    link: vx(),
                    mac: Mac::for_ipv4(ip("10.0.1.6")),
                    vtep: ip("192.0.2.2"),
                },
            ]
        );
    }

    #[test]
    fn from_nothing_everything_is_created_in_order() {
        let state = plan(&desired()).unwrap();
        let changes = diff(&state, &State::default());
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::CreateNamespace(n) => format!("ns {n}"),
                Change::UnfilterBridge(n) => format!("unfilter {n}"),
                Change::CreateLink { key, .. } => format!("link {}", key.name),
                Change::CreateVeth { key, peer, .. } => {
                    format!("veth {} {}", key.name, peer.key.name)
                }
                Change::AddAddress { link, addr } => format!("addr {} {addr}", link.name),
                Change::ReplaceRoute { dev, gateway, .. } => format!("route {dev} {gateway}"),
                Change::EnableForwarding => "forwarding".into(),
                Change::SteerLink(key) => format!("steer {}", key.name),
                Change::SetMasquerade(m) => format!("masq {}", m.table),
                Change::ReplaceFdb { mac, vtep, .. } => format!("fdb {mac} {vtep}"),
                Change::ReplaceNeigh { addr, mac, .. } => format!("neigh {addr} {mac}"),
                other => format!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "ns t1-net1",
                "unfilter t1-net1",
                "link t1-gw",
                "link br0",
                "link t1-x001001",
                "veth t1-gtaskaaa eth1",
                "veth vetaskaaaaaaaaa eth0",
                "addr t1-gw 172.18.0.1/16",
                "addr br0 10.0.1.1/24",
                "addr eth0 10.0.1.5/24",
                "addr eth1 172.18.0.2/16",
                "route eth1 172.18.0.1",
                "forwarding",
                "steer t1-gtaskaaa",
                "steer t1-x001001",
                "masq t1_nat",
                "fdb 02:42:0a:00:01:06 192.0.2.2",
                "neigh 10.0.1.6 02:42:0a:00:01:06",
            ]
        );
    }

    #[test]
    fn a_gone_task_loses_its_ports_and_a_gone_network_its_namespace() {
        let before = plan(&desired()).unwrap();
        let mut d = desired();
        d.endpoints.clear();
        d.tasks.clear();
        d.networks.clear();
        d.peers.clear();
        let after = plan(&d).unwrap();
        let changes = diff(&after, &observed(&before));
        // The task's own namespace is the engine's: its interfaces die with their underlay and
        // network ends, which are what gets deleted.
        assert_eq!(
            changes,
            vec![
                Change::RemoveMasquerade("t1_nat".into()),
                Change::DeleteLink(LinkKey {
                    ns: Netns::Underlay,
                    name: "t1-gtaskaaa".into()
                }),
                Change::DeleteLink(LinkKey {
                    ns: Netns::Underlay,
                    name: "t1-gw".into()
                }),
                Change::DeleteNamespace("t1-net1".into()),
            ]
        );
    }

    #[test]
    fn half_a_veth_pair_is_made_again_whole() {
        let state = plan(&desired()).unwrap();
        let mut seen = observed(&state);
        let eth0 = LinkKey {
            ns: Netns::Task("/proc/100/ns/net".into()),
            name: "eth0".into(),
        };
        seen.links.remove(&eth0);
        seen.addresses.remove(&(eth0, cidr("10.0.1.5/24")));
        let changes = diff(&state, &seen);
        assert!(matches!(&changes[0], Change::DeleteLink(k) if k.name == "vetaskaaaaaaaaa"));
        assert!(
            matches!(&changes[1], Change::CreateVeth { key, .. } if key.name == "vetaskaaaaaaaaa")
        );
        assert!(changes.contains(&Change::AddAddress {
            link: LinkKey {
                ns: Netns::Task("/proc/100/ns/net".into()),
                name: "eth0".into()
            },
            addr: cidr("10.0.1.5/24"),
        }));
        assert_eq!(changes.len(), 3);
    }

    #[test]
    fn a_vxlan_device_stranded_in_the_underlay_goes_before_it_is_made_again() {
        let state = plan(&desired()).unwrap();
        let mut seen = observed(&state);
        let link = seen.links.remove(&vx()).unwrap();
        seen.fdb.clear();
        seen.neigh.clear();
        let stranded = LinkKey {
            ns: Netns::Underlay,
            name: vx().name,
        };
        seen.links.insert(stranded.clone(), link.clone());
        let changes = diff(&state, &seen);
        assert_eq!(
            changes[..2],
            [
                Change::DeleteLink(stranded),
                Change::CreateLink {
                    key: vx(),
                    link: state.links[&vx()].clone(),
                },
            ]
        );
        // Made again, it is steered again, and its two entries are set on it.
        assert!(changes.contains(&Change::SteerLink(vx())), "{changes:?}");
        assert_eq!(changes.len(), 5, "{changes:?}");
    }

    #[test]
    fn a_temporary_veth_end_left_by_a_crash_goes_before_the_pair_is_made() {
        let state = plan(&desired()).unwrap();
        let mut seen = observed(&state);
        // The crash came after creating the pair and before moving its far end into the task.
        let eth0 = LinkKey {
            ns: Netns::Task("/proc/100/ns/net".into()),
            name: "eth0".into(),
        };
        let link = seen.links.remove(&eth0).unwrap();
        seen.addresses.remove(&(eth0, cidr("10.0.1.5/24")));
        let temp = LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "vttaskaaaaaaaaa".into(),
        };
        seen.links.insert(temp.clone(), link);
        let changes = diff(&state, &seen);
        let near = LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "vetaskaaaaaaaaa".into(),
        };
        assert_eq!(
            changes[..2],
            [Change::DeleteLink(near), Change::DeleteLink(temp)]
        );
        assert!(matches!(&changes[2], Change::CreateVeth { .. }));
    }

    #[test]
    fn a_changed_mtu_is_set_in_place() {
        let state = plan(&desired()).unwrap();
        let mut seen = observed(&state);
        let br = LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "br0".into(),
        };
        seen.links.get_mut(&br).unwrap().mtu = 1500;
        assert_eq!(
            diff(&state, &seen),
            vec![Change::SetLink {
                link: state.links[&br].clone(),
                key: br,
            }]
        );
    }

    fn host_leg_near() -> LinkKey {
        LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "hostleg".into(),
        }
    }

    fn host_leg_far() -> LinkKey {
        LinkKey {
            ns: Netns::Underlay,
            name: "t1-i001001".into(),
        }
    }

    #[test]
    fn a_new_host_leg_is_one_veth_its_address_and_a_loose_gateway_bridge() {
        let before = plan(&desired()).unwrap();
        let after = plan(&with_host_leg()).unwrap();
        assert_eq!(
            diff(&after, &observed(&before)),
            vec![
                Change::CreateVeth {
                    key: host_leg_near(),
                    link: after.links[&host_leg_near()].clone(),
                    peer: VethPeer {
                        key: host_leg_far(),
                        temp_name: "hostlegtmp".into(),
                    },
                    peer_link: after.links[&host_leg_far()].clone(),
                },
                Change::AddAddress {
                    link: host_leg_far(),
                    addr: cidr("10.0.1.2/24"),
                },
                Change::LooseRpFilter("t1-gw".into()),
            ]
        );
        // Applied and observed again, after a restart too: nothing.
        assert_eq!(diff(&after, &observed(&after)), vec![]);
    }

    #[test]
    fn a_strict_gateway_bridge_is_loosened_again_and_a_new_one_too() {
        let state = plan(&with_host_leg()).unwrap();
        let mut seen = observed(&state);
        seen.loose_rp_filter.clear();
        assert_eq!(
            diff(&state, &seen),
            vec![Change::LooseRpFilter("t1-gw".into())]
        );
        // A bridge made again (it was something else) starts from the default, whatever the
        // old one had.
        let gw = LinkKey {
            ns: Netns::Underlay,
            name: "t1-gw".into(),
        };
        let mut seen = observed(&state);
        seen.links.get_mut(&gw).unwrap().kind = LinkKind::Veth;
        let changes = diff(&state, &seen);
        assert_eq!(changes[0], Change::DeleteLink(gw));
        assert!(changes.contains(&Change::LooseRpFilter("t1-gw".into())));
    }

    #[test]
    fn a_dropped_host_leg_loses_both_ends_and_a_dropped_network_its_leg() {
        let before = plan(&with_host_leg()).unwrap();
        // The rp_filter stays loose: nothing is made strict again.
        assert_eq!(
            diff(&plan(&desired()).unwrap(), &observed(&before)),
            vec![
                Change::DeleteLink(host_leg_far()),
                Change::DeleteLink(host_leg_near()),
            ]
        );

        let mut d = with_host_leg();
        d.endpoints.clear();
        d.tasks.clear();
        d.networks.clear();
        d.peers.clear();
        d.host_legs.clear();
        let changes = diff(&plan(&d).unwrap(), &observed(&before));
        assert!(changes.contains(&Change::DeleteLink(host_leg_far())));
        assert_eq!(
            changes.last(),
            Some(&Change::DeleteNamespace("t1-net1".into()))
        );
    }

    #[test]
    fn an_underlay_end_left_in_the_network_by_a_crash_goes_before_the_leg_is_made() {
        let state = plan(&with_host_leg()).unwrap();
        let mut seen = observed(&state);
        // The crash came after creating the pair and before moving its far end out.
        let link = seen.links.remove(&host_leg_far()).unwrap();
        seen.addresses
            .remove(&(host_leg_far(), cidr("10.0.1.2/24")));
        let temp = LinkKey {
            ns: Netns::Named("t1-net1".into()),
            name: "hostlegtmp".into(),
        };
        seen.links.insert(temp.clone(), link);
        let changes = diff(&state, &seen);
        assert_eq!(
            changes[..2],
            [
                Change::DeleteLink(host_leg_near()),
                Change::DeleteLink(temp)
            ]
        );
        assert!(matches!(&changes[2], Change::CreateVeth { key, .. } if *key == host_leg_near()));
        assert_eq!(changes.len(), 4, "{changes:?}");
    }
}
