//! Exact tests of the mesh table: elements per traffic policy, scripts, reading it back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::mesh::observe;
use crate::table::{TableAction, plan};
use crate::vip::TableName;

fn task(text: &str) -> SocketAddrV4 {
    text.parse().expect("address and port")
}

fn node(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

/// A port whose remote tasks are reached across the overlay, as on an encrypted ingress network.
fn web(policy: TrafficPolicy, local: &[&str], cluster: &[&str]) -> PublishedPort {
    PublishedPort {
        protocol: Protocol::Tcp,
        port: 8080,
        policy,
        local: local.iter().map(|t| task(t)).collect(),
        cluster: cluster.iter().map(|t| task(t)).collect(),
        crossing: Crossing::Overlay,
    }
}

/// The ports as node 192.168.5.1 serves them, with no peer.
fn mesh(ports: &[PublishedPort]) -> Mesh {
    Mesh {
        address: node("192.168.5.1"),
        peers: BTreeSet::new(),
        ports: ports.to_vec(),
    }
}

fn elements(ports: &[PublishedPort]) -> Elements {
    desired_elements(&mesh(ports)).expect("plan")
}

fn table() -> TableName {
    TableName::new("shoal").expect("name")
}

fn change_script(before: &[PublishedPort], after: &[PublishedPort]) -> (Change, String) {
    let change = plan(&Observed::Layout(elements(before)), &elements(after));
    let script = change.script(&table());
    (change, script)
}

/// Node 192.168.5.1 with one ready task of a prefer-local web port, and two more on
/// 192.168.5.3; its peers (itself among them, as gossip lists every node) are 192.168.5.2 and .3.
fn handing_on() -> Mesh {
    Mesh {
        address: node("192.168.5.1"),
        peers: BTreeSet::from([
            node("192.168.5.1"),
            node("192.168.5.2"),
            node("192.168.5.3"),
        ]),
        ports: vec![PublishedPort {
            crossing: Crossing::NodePorts(BTreeMap::from([(node("192.168.5.3"), 2)])),
            ..web(
                TrafficPolicy::PreferLocal,
                &["10.0.0.5:80"],
                &["10.0.0.5:80", "10.0.0.9:80", "10.0.0.10:80"],
            )
        }],
    }
}

#[test]
fn the_cluster_path_hands_a_connection_to_the_node_of_its_task_and_nodes_weigh_as_their_tasks() {
    let elements = desired_elements(&handing_on()).expect("plan");
    let slots = |map: &BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>| {
        map.iter()
            .map(|((_, _, first, last), to)| (*first, *last, to.to_string()))
            .collect::<Vec<_>>()
    };
    // A third of the slots to the local task, two thirds to the other node's published port.
    assert_eq!(
        slots(&elements.cluster),
        [
            (0, 240_239, "10.0.0.5:80".to_owned()),
            (240_240, 480_479, "192.168.5.3:8080".to_owned()),
            (480_480, 720_719, "192.168.5.3:8080".to_owned()),
        ]
    );
    // What another node hands on and finds no ready task here for crosses the overlay.
    assert_eq!(elements.overlay.len(), 3);
    assert_eq!(
        elements.overlay_ports,
        BTreeSet::from([(Protocol::Tcp, 8080)])
    );
    // The node is not its own peer; what it hands to each peer gets this node's address.
    assert_eq!(
        elements.peers,
        BTreeMap::from([
            (node("192.168.5.2"), node("192.168.5.1")),
            (node("192.168.5.3"), node("192.168.5.1")),
        ])
    );
}

#[test]
fn a_new_table_is_the_fixed_layout_then_each_port_s_paths() {
    let ports = [
        web(
            TrafficPolicy::PreferLocal,
            &["10.0.0.5:80"],
            &["10.0.0.5:80", "10.0.0.9:80"],
        ),
        PublishedPort {
            protocol: Protocol::Udp,
            port: 53,
            policy: TrafficPolicy::Cluster,
            local: BTreeSet::from([task("10.0.0.7:5353")]),
            cluster: BTreeSet::from([task("10.0.0.7:5353")]),
            crossing: Crossing::Overlay,
        },
    ];
    let change = plan(&Observed::Absent, &elements(&ports));
    assert_eq!(change.table, TableAction::Create);
    let script = change.script(&table());
    assert!(script.starts_with(&LAYOUT.replace("{table}", "shoal")));
    // Across the overlay, the cluster path sends to every task by its ingress address.
    assert_eq!(
        &script[LAYOUT.replace("{table}", "shoal").len()..],
        "add element inet shoal local { tcp . 8080 . 0-720719 : 10.0.0.5 . 80, \
         udp . 53 . 0-720719 : 10.0.0.7 . 5353 }\n\
         add element inet shoal cluster { tcp . 8080 . 0-360359 : 10.0.0.5 . 80, \
         tcp . 8080 . 360360-720719 : 10.0.0.9 . 80, udp . 53 . 0-720719 : 10.0.0.7 . 5353 }\n\
         add element inet shoal overlay { tcp . 8080 . 0-360359 : 10.0.0.5 . 80, \
         tcp . 8080 . 360360-720719 : 10.0.0.9 . 80, udp . 53 . 0-720719 : 10.0.0.7 . 5353 }\n\
         add element inet shoal cluster_ports { tcp . 8080, udp . 53 }\n\
         add element inet shoal overlay_ports { tcp . 8080, udp . 53 }\n\
         add element inet shoal ports { tcp . 8080, udp . 53 }\n\
         add element inet shoal published { tcp . 8080 : goto prefer_local, udp . 53 : goto cluster }\n"
    );
}

#[test]
fn a_local_port_never_goes_to_the_cluster_and_one_with_no_ready_task_stays_published() {
    let elements = elements(&[web(TrafficPolicy::Local, &[], &["10.0.0.9:80"])]);
    // Published, so a connection to it is refused at once rather than reaching the host.
    assert_eq!(
        elements.published.get(&(Protocol::Tcp, 8080)),
        Some(&TrafficPolicy::Local)
    );
    assert!(elements.local.is_empty());
    assert!(elements.cluster.is_empty());
    assert!(elements.cluster_ports.is_empty());
    assert!(elements.overlay.is_empty());
}

#[test]
fn a_task_becoming_ready_or_going_is_element_commands_only() {
    let before = [web(
        TrafficPolicy::PreferLocal,
        &["10.0.0.5:80"],
        &["10.0.0.5:80", "10.0.0.9:80"],
    )];
    // The local task stops being ready: it leaves every map; the remote one takes every slot.
    let after = [web(TrafficPolicy::PreferLocal, &[], &["10.0.0.9:80"])];
    let (change, script) = change_script(&before, &after);
    assert_eq!(change.table, TableAction::Keep);
    assert_eq!(
        script,
        "delete element inet shoal local { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal cluster { tcp . 8080 . 0-360359, tcp . 8080 . 360360-720719 }\n\
         delete element inet shoal overlay { tcp . 8080 . 0-360359, tcp . 8080 . 360360-720719 }\n\
         add element inet shoal cluster { tcp . 8080 . 0-720719 : 10.0.0.9 . 80 }\n\
         add element inet shoal overlay { tcp . 8080 . 0-720719 : 10.0.0.9 . 80 }\n"
    );
}

#[test]
fn a_policy_change_swaps_the_port_s_verdict_and_the_same_ports_change_nothing() {
    let before = [web(
        TrafficPolicy::PreferLocal,
        &["10.0.0.5:80"],
        &["10.0.0.5:80"],
    )];
    let after = [web(
        TrafficPolicy::Cluster,
        &["10.0.0.5:80"],
        &["10.0.0.5:80"],
    )];
    let (_, script) = change_script(&before, &after);
    assert_eq!(
        script,
        "delete element inet shoal published { tcp . 8080 }\n\
         add element inet shoal published { tcp . 8080 : goto cluster }\n"
    );
    let (change, script) = change_script(&after, &after);
    assert!(change.is_empty());
    assert_eq!(script, "");
}

#[test]
fn an_unpublished_port_leaves_every_map() {
    let before = [web(
        TrafficPolicy::PreferLocal,
        &["10.0.0.5:80"],
        &["10.0.0.5:80"],
    )];
    let (_, script) = change_script(&before, &[]);
    assert_eq!(
        script,
        "delete element inet shoal local { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal cluster { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal overlay { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal cluster_ports { tcp . 8080 }\n\
         delete element inet shoal overlay_ports { tcp . 8080 }\n\
         delete element inet shoal ports { tcp . 8080 }\n\
         delete element inet shoal published { tcp . 8080 }\n"
    );
}

#[test]
fn another_layout_is_replaced_in_one_transaction() {
    let ports = [web(TrafficPolicy::Cluster, &[], &["10.0.0.9:80"])];
    let change = plan(&Observed::OtherLayout, &elements(&ports));
    assert_eq!(change.table, TableAction::Replace);
    assert!(
        change
            .script(&table())
            .starts_with("add table inet shoal\ndelete table inet shoal\ntable inet shoal {\n")
    );
}

#[test]
fn bad_input_is_refused_naming_the_port() {
    let twice = [
        web(TrafficPolicy::Cluster, &[], &[]),
        web(TrafficPolicy::Local, &[], &[]),
    ];
    let error = desired_elements(&mesh(&twice)).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "port 8080/tcp is published twice on one node: a published port belongs to one service; \
         remove it from the other"
    );
}

/// nft 1.0.6's JSON listing of the layout holding `handing_on`: read back, it is the elements
/// that made it, so a restarted daemon changes nothing.
#[test]
fn a_listing_reads_back_as_the_elements_that_made_it() {
    let listing = include_str!("listing.json");
    let wanted = desired_elements(&handing_on()).expect("plan");
    let observed = observe(listing).expect("nft JSON");
    assert_eq!(observed, Observed::Layout(wanted.clone()));
    assert!(plan(&observed, &wanted).is_empty());

    // A table of another layout (here the VIP table's) is replaced, not patched.
    let vip_table = r#"{"nftables": [{"table": {"family": "inet", "name": "shoal", "handle": 1}}, {"set": {"family": "inet", "name": "vips", "table": "shoal", "type": "ipv4_addr", "handle": 6}}]}"#;
    assert_eq!(observe(vip_table), Some(Observed::OtherLayout));
    assert_eq!(observe("Error: not JSON"), None);
}
