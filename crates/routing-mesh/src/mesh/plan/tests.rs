//! Exact tests of the mesh table: elements per traffic policy, scripts, reading it back.

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use super::*;
use crate::mesh::observe;
use crate::table::{TableAction, plan};
use crate::vip::TableName;

fn task(text: &str) -> SocketAddrV4 {
    text.parse().expect("address and port")
}

fn web(policy: TrafficPolicy, local: &[&str], cluster: &[&str]) -> PublishedPort {
    PublishedPort {
        protocol: Protocol::Tcp,
        port: 8080,
        policy,
        local: local.iter().map(|t| task(t)).collect(),
        cluster: cluster.iter().map(|t| task(t)).collect(),
    }
}

fn table() -> TableName {
    TableName::new("shoal").expect("name")
}

fn change_script(before: &[PublishedPort], after: &[PublishedPort]) -> (Change, String) {
    let before = desired_elements(before).expect("before");
    let change = plan(
        &Observed::Layout(before),
        &desired_elements(after).expect("after"),
    );
    let script = change.script(&table());
    (change, script)
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
        },
    ];
    let change = plan(&Observed::Absent, &desired_elements(&ports).expect("plan"));
    assert_eq!(change.table, TableAction::Create);
    let script = change.script(&table());
    assert!(script.starts_with(&LAYOUT.replace("{table}", "shoal")));
    // A `cluster` port never looks at its local tasks.
    assert_eq!(
        &script[LAYOUT.replace("{table}", "shoal").len()..],
        "add element inet shoal local { tcp . 8080 . 0-720719 : 10.0.0.5 . 80 }\n\
         add element inet shoal cluster { tcp . 8080 . 0-360359 : 10.0.0.5 . 80, \
         tcp . 8080 . 360360-720719 : 10.0.0.9 . 80, udp . 53 . 0-720719 : 10.0.0.7 . 5353 }\n\
         add element inet shoal cluster_ports { tcp . 8080, udp . 53 }\n\
         add element inet shoal ports { tcp . 8080, udp . 53 }\n\
         add element inet shoal published { tcp . 8080 : goto prefer_local, udp . 53 : goto cluster }\n"
    );
}

#[test]
fn a_local_port_never_goes_to_the_cluster_and_one_with_no_ready_task_stays_published() {
    let elements =
        desired_elements(&[web(TrafficPolicy::Local, &[], &["10.0.0.9:80"])]).expect("plan");
    // Published, so a connection to it is refused at once rather than reaching the host.
    assert_eq!(
        elements.published.get(&(Protocol::Tcp, 8080)),
        Some(&TrafficPolicy::Local)
    );
    assert!(elements.local.is_empty());
    assert!(elements.cluster.is_empty());
    assert!(elements.cluster_ports.is_empty());
}

#[test]
fn a_task_becoming_ready_or_going_is_element_commands_only() {
    let before = [web(
        TrafficPolicy::PreferLocal,
        &["10.0.0.5:80"],
        &["10.0.0.5:80", "10.0.0.9:80"],
    )];
    // The local task stops being ready: it leaves both maps; the remote one takes every slot.
    let after = [web(TrafficPolicy::PreferLocal, &[], &["10.0.0.9:80"])];
    let (change, script) = change_script(&before, &after);
    assert_eq!(change.table, TableAction::Keep);
    assert_eq!(
        script,
        "delete element inet shoal local { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal cluster { tcp . 8080 . 0-360359, tcp . 8080 . 360360-720719 }\n\
         add element inet shoal cluster { tcp . 8080 . 0-720719 : 10.0.0.9 . 80 }\n"
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
        "delete element inet shoal local { tcp . 8080 . 0-720719 }\n\
         delete element inet shoal published { tcp . 8080 }\n\
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
         delete element inet shoal cluster_ports { tcp . 8080 }\n\
         delete element inet shoal ports { tcp . 8080 }\n\
         delete element inet shoal published { tcp . 8080 }\n"
    );
}

#[test]
fn another_layout_is_replaced_in_one_transaction() {
    let ports = [web(TrafficPolicy::Cluster, &[], &["10.0.0.9:80"])];
    let change = plan(
        &Observed::OtherLayout,
        &desired_elements(&ports).expect("plan"),
    );
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
    let error = desired_elements(&twice).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "port 8080/tcp is published twice on one node: a published port belongs to one service; \
         remove it from the other"
    );
}

/// nft 1.0.6's JSON listing of the layout holding one prefer-local port: read back, it is the
/// elements that made it, so a restarted daemon changes nothing.
#[test]
fn a_listing_reads_back_as_the_elements_that_made_it() {
    let listing = include_str!("listing.json");
    let ports = [web(
        TrafficPolicy::PreferLocal,
        &["10.0.0.5:80"],
        &["10.0.0.5:80", "10.0.0.9:80"],
    )];
    let observed = observe(listing).expect("nft JSON");
    assert_eq!(
        observed,
        Observed::Layout(desired_elements(&ports).expect("plan"))
    );
    assert!(plan(&observed, &desired_elements(&ports).expect("plan")).is_empty());

    // A table of another layout (here the VIP table's) is replaced, not patched.
    let vip_table = r#"{"nftables": [{"table": {"family": "inet", "name": "shoal", "handle": 1}}, {"set": {"family": "inet", "name": "vips", "table": "shoal", "type": "ipv4_addr", "handle": 6}}]}"#;
    assert_eq!(observe(vip_table), Some(Observed::OtherLayout));
    assert_eq!(observe("Error: not JSON"), None);
}
