//! Exact tests of the VIP table's elements, its creation script and the element-only diffs.

use super::*;
use crate::table::{TableAction, plan};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("test address")
}

fn service(vip: &str, ports: VipPorts, backends: &[&str]) -> VipService {
    VipService {
        vip: ip(vip),
        ports,
        backends: backends.iter().map(|b| ip(b)).collect(),
    }
}

fn web(backends: &[&str]) -> VipService {
    service(
        "10.0.1.2",
        VipPorts::Only([(Protocol::Tcp, 80)].into_iter().collect()),
        backends,
    )
}

fn table() -> TableName {
    TableName::new("shoal").expect("table name")
}

fn change_script(before: &[VipService], after: &[VipService]) -> (Change, String) {
    let current = desired_elements(before).expect("before");
    let wanted = desired_elements(after).expect("after");
    let change = plan(&Observed::Layout(current), &wanted);
    let script = change.script(&table());
    (change, script)
}

#[test]
fn a_new_table_is_the_fixed_layout_then_its_elements() {
    let services = [
        web(&["10.0.1.7", "10.0.1.5", "10.0.1.6"]),
        service("10.0.2.2", VipPorts::All, &["10.0.2.9"]),
    ];
    let change = plan(
        &Observed::Absent,
        &desired_elements(&services).expect("elements"),
    );
    assert_eq!(change.table, TableAction::Create);
    assert_eq!(
        change.script(&table()),
        "\
table inet shoal {
	map backends {
		typeof ip daddr . numgen random mod 720720 : ip daddr
		flags interval
	}
	set vip_ports {
		typeof ip daddr . meta l4proto . th dport
	}
	set vip_any {
		typeof ip daddr
	}
	set vips {
		typeof ip daddr
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
add element inet shoal backends { 10.0.1.2 . 0-240239 : 10.0.1.5, 10.0.1.2 . 240240-480479 : 10.0.1.6, 10.0.1.2 . 480480-720719 : 10.0.1.7, 10.0.2.2 . 0-720719 : 10.0.2.9 }
add element inet shoal vip_ports { 10.0.1.2 . tcp . 80 }
add element inet shoal vip_any { 10.0.2.2 }
add element inet shoal vips { 10.0.1.2, 10.0.2.2 }
"
    );
}

#[test]
fn a_removed_backend_is_element_commands_only() {
    let (change, script) = change_script(
        &[web(&["10.0.1.5", "10.0.1.6", "10.0.1.7"])],
        &[web(&["10.0.1.5", "10.0.1.7"])],
    );
    assert!(change.elements_only());
    assert_eq!(
        script,
        "\
delete element inet shoal backends { 10.0.1.2 . 0-240239, 10.0.1.2 . 240240-480479, 10.0.1.2 . 480480-720719 }
add element inet shoal backends { 10.0.1.2 . 0-360359 : 10.0.1.5, 10.0.1.2 . 360360-720719 : 10.0.1.7 }
"
    );
}

#[test]
fn an_added_backend_keeps_the_runs_that_stay_the_same() {
    // Four backends to five, with the new one last: the slot runs all move, but a service's
    // other VIP with the same backends is left alone.
    let (change, script) = change_script(
        &[
            service("10.0.3.2", VipPorts::All, &["10.0.3.5"]),
            web(&["10.0.1.5"]),
        ],
        &[
            service("10.0.3.2", VipPorts::All, &["10.0.3.5"]),
            web(&["10.0.1.5", "10.0.1.6"]),
        ],
    );
    assert!(change.elements_only());
    assert_eq!(
        script,
        "\
delete element inet shoal backends { 10.0.1.2 . 0-720719 }
add element inet shoal backends { 10.0.1.2 . 0-360359 : 10.0.1.5, 10.0.1.2 . 360360-720719 : 10.0.1.6 }
"
    );
}

#[test]
fn a_backend_changing_address_in_place_swaps_one_element() {
    let (change, script) = change_script(
        &[web(&["10.0.1.5", "10.0.1.6"])],
        &[web(&["10.0.1.5", "10.0.1.8"])],
    );
    assert!(change.elements_only());
    assert_eq!(
        script,
        "\
delete element inet shoal backends { 10.0.1.2 . 360360-720719 }
add element inet shoal backends { 10.0.1.2 . 360360-720719 : 10.0.1.8 }
"
    );
}

#[test]
fn zero_backends_keep_the_vip_so_it_is_rejected() {
    let (change, script) = change_script(&[web(&["10.0.1.5"])], &[web(&[])]);
    assert!(change.elements_only());
    assert_eq!(
        script,
        "delete element inet shoal backends { 10.0.1.2 . 0-720719 }\n"
    );
}

#[test]
fn services_and_ports_coming_and_going_are_elements_too() {
    let (change, script) = change_script(
        &[web(&["10.0.1.5"])],
        &[
            service(
                "10.0.1.2",
                VipPorts::Only(
                    [(Protocol::Tcp, 8080), (Protocol::Udp, 53)]
                        .into_iter()
                        .collect(),
                ),
                &["10.0.1.5"],
            ),
            service("10.0.2.2", VipPorts::All, &["10.0.2.9"]),
        ],
    );
    assert!(change.elements_only());
    assert_eq!(
        script,
        "\
delete element inet shoal vip_ports { 10.0.1.2 . tcp . 80 }
add element inet shoal backends { 10.0.2.2 . 0-720719 : 10.0.2.9 }
add element inet shoal vip_ports { 10.0.1.2 . tcp . 8080, 10.0.1.2 . udp . 53 }
add element inet shoal vip_any { 10.0.2.2 }
add element inet shoal vips { 10.0.2.2 }
"
    );

    let (change, script) = change_script(&[web(&["10.0.1.5"])], &[]);
    assert!(change.elements_only());
    assert_eq!(
        script,
        "\
delete element inet shoal backends { 10.0.1.2 . 0-720719 }
delete element inet shoal vip_ports { 10.0.1.2 . tcp . 80 }
delete element inet shoal vips { 10.0.1.2 }
"
    );
}

#[test]
fn the_same_services_change_nothing() {
    let (change, script) = change_script(
        &[web(&["10.0.1.5", "10.0.1.6"])],
        &[web(&["10.0.1.6", "10.0.1.5"])],
    );
    assert!(change.is_empty());
    assert_eq!(script, "");
}

#[test]
fn another_layout_is_replaced_in_one_transaction() {
    let change = plan(
        &Observed::OtherLayout,
        &desired_elements(&[service("10.0.2.2", VipPorts::All, &["10.0.2.9"])]).expect("elements"),
    );
    assert!(!change.elements_only());
    let script = change.script(&table());
    assert!(
        script.starts_with("add table inet shoal\ndelete table inet shoal\ntable inet shoal {\n"),
        "{script}"
    );
    assert!(
        script.ends_with(
            "}\nadd element inet shoal backends { 10.0.2.2 . 0-720719 : 10.0.2.9 }\n\
             add element inet shoal vip_any { 10.0.2.2 }\n\
             add element inet shoal vips { 10.0.2.2 }\n"
        ),
        "{script}"
    );
}

#[test]
fn shares_are_equal_to_one_slot() {
    for count in [1usize, 2, 3, 7, 16, 17, 1000] {
        let backends: Vec<String> = (0..count)
            .map(|i| Ipv4Addr::from(0x0a01_0000 + u32::try_from(i).expect("small")).to_string())
            .collect();
        let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
        let elements = desired_elements(&[web(&backends)]).expect("elements");
        assert_eq!(elements.backends.len(), count);
        let mut next = 0;
        let mut sizes = BTreeSet::new();
        for (_, first, last) in elements.backends.keys() {
            assert_eq!(*first, next, "runs are contiguous");
            sizes.insert(last - first + 1);
            next = last + 1;
        }
        assert_eq!(next, SLOTS, "every slot has a backend");
        let spread = sizes.last().expect("sizes") - sizes.first().expect("sizes");
        assert!(spread <= 1, "{count} backends: shares {sizes:?}");
        if count <= 16 {
            assert_eq!(sizes.len(), 1, "{count} backends share exactly");
        }
    }
}

#[test]
fn bad_input_is_refused() {
    assert!(matches!(
        desired_elements(&[web(&["10.0.1.5"]), web(&["10.0.1.6"])]),
        Err(VipError::DuplicateVip(vip)) if vip == ip("10.0.1.2")
    ));
    for bad in ["", "1shoal", "sho-al", "sho al", &"x".repeat(65)] {
        assert!(TableName::new(bad).is_err(), "{bad:?}");
    }
    assert!(TableName::new("shoal_test_42").is_ok());
}
