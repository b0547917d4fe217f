//! Reads what a VIP table holds from `nft -j list table` (pure: the apply shell runs nft), so a
//! restarted daemon reconciles the table it finds instead of starting over.
//!
//! The table counts as this layout only when its sets, maps and chains are exactly the layout's
//! (names, key types, hooks, rule counts, the numgen modulus) and every element reads back;
//! anything else is [`Observed::OtherLayout`], replaced whole.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::plan::{Elements, Observed, Protocol, SLOTS};

/// Reads nft's JSON listing of one VIP table. `None` when it is not JSON of nft's shape at all.
pub fn observe(listing: &str) -> Option<Observed> {
    crate::table::observe(listing)
}

/// The VIP layout's elements, when `objects` are exactly its sets, maps and chains.
pub(super) fn read_layout(objects: &[Value]) -> Option<Elements> {
    let mut elements = Elements::default();
    let mut sets = BTreeSet::new();
    let mut chains = BTreeSet::new();
    let mut nat_rules = 0;
    let mut filter_rules = 0;
    for object in objects {
        let (kind, body) = object.as_object().and_then(|o| o.iter().next())?;
        let name = body.get("name").and_then(Value::as_str);
        match kind.as_str() {
            "metainfo" | "table" => {}
            "map" | "set" => {
                let name = name?;
                read_set(kind, name, body, &mut elements)?;
                sets.insert(name.to_owned());
            }
            "chain" => {
                let expected = match name? {
                    "nat_output" => ("nat", -100),
                    "filter_output" => ("filter", 0),
                    _ => return None,
                };
                let hook = body.get("hook").and_then(Value::as_str);
                let kind = body.get("type").and_then(Value::as_str);
                let priority = body.get("prio").and_then(Value::as_i64);
                if hook != Some("output") || (kind?, priority?) != expected {
                    return None;
                }
                chains.insert(name?.to_owned());
            }
            "rule" => match body.get("chain").and_then(Value::as_str)? {
                "nat_output" => {
                    // The modulus is the one thing of a rule a new layout would likely change.
                    if !body.to_string().contains(&format!("\"mod\":{SLOTS}")) {
                        return None;
                    }
                    nat_rules += 1;
                }
                "filter_output" => filter_rules += 1,
                _ => return None,
            },
            _ => return None,
        }
    }
    let all_sets: BTreeSet<String> = ["backends", "vip_ports", "vip_any", "vips"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let all_chains: BTreeSet<String> = ["nat_output", "filter_output"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    (sets == all_sets && chains == all_chains && nat_rules == 2 && filter_rules == 2)
        .then_some(elements)
}

fn types(body: &Value) -> Option<Vec<&str>> {
    match body.get("type")? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => many.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn read_set(kind: &str, name: &str, body: &Value, elements: &mut Elements) -> Option<()> {
    let items: &[Value] = match body.get("elem") {
        None => &[],
        Some(items) => items.as_array()?,
    };
    let types = types(body)?;
    match (kind, name) {
        ("map", "backends") => {
            let interval = body
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|flags| flags.iter().any(|f| f == "interval"));
            if types != ["ipv4_addr", "integer"] || body.get("map")? != "ipv4_addr" || !interval {
                return None;
            }
            for item in items {
                let [key, backend] = item.as_array()?.as_slice() else {
                    return None;
                };
                let [vip, slots] = concat(key)? else {
                    return None;
                };
                let (first, last) = slot_run(slots)?;
                elements
                    .backends
                    .insert((address(vip)?, first, last), address(backend)?);
            }
        }
        ("set", "vip_ports") => {
            if types != ["ipv4_addr", "inet_proto", "inet_service"] {
                return None;
            }
            for item in items {
                let [vip, protocol, port] = concat(item)? else {
                    return None;
                };
                let protocol = match protocol {
                    Value::String(name) => Protocol::from_nft(name)?,
                    Value::Number(number) => Protocol::from_nft(&number.to_string())?,
                    _ => return None,
                };
                let port = u16::try_from(port.as_u64()?).ok()?;
                elements.vip_ports.insert((address(vip)?, protocol, port));
            }
        }
        ("set", "vip_any" | "vips") => {
            if types != ["ipv4_addr"] {
                return None;
            }
            let set = if name == "vips" {
                &mut elements.vips
            } else {
                &mut elements.vip_any
            };
            for item in items {
                set.insert(address(item)?);
            }
        }
        _ => return None,
    }
    Some(())
}

fn concat(value: &Value) -> Option<&[Value]> {
    Some(value.get("concat")?.as_array()?.as_slice())
}

fn address(value: &Value) -> Option<Ipv4Addr> {
    value.as_str()?.parse().ok()
}

/// A run of slots: `{"range": [first, last]}`, or a bare number for a run of one.
fn slot_run(value: &Value) -> Option<(u32, u32)> {
    let slot = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    if let Some([first, last]) = value
        .get("range")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return Some((slot(first)?, slot(last)?));
    }
    let only = slot(value)?;
    Some((only, only))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nft 1.0.6 lists for the layout with two backends, one port and an any-port VIP.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "t", "handle": 1}}, {"map": {"family": "inet", "name": "backends", "table": "t", "type": ["ipv4_addr", "integer"], "handle": 3, "map": "ipv4_addr", "flags": ["interval"], "elem": [[{"concat": ["10.0.1.2", {"range": [0, 360359]}]}, "10.0.1.5"], [{"concat": ["10.0.1.2", {"range": [360360, 720719]}]}, "10.0.1.6"], [{"concat": ["10.0.2.2", 7]}, "10.0.2.9"]]}}, {"set": {"family": "inet", "name": "vip_ports", "table": "t", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 4, "elem": [{"concat": ["10.0.1.2", "tcp", 80]}]}}, {"set": {"family": "inet", "name": "vip_any", "table": "t", "type": "ipv4_addr", "handle": 5, "elem": ["10.0.2.2"]}}, {"set": {"family": "inet", "name": "vips", "table": "t", "type": "ipv4_addr", "handle": 6, "elem": ["10.0.1.2", "10.0.2.2"]}}, {"chain": {"family": "inet", "table": "t", "name": "nat_output", "handle": 1, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}}, {"chain": {"family": "inet", "table": "t", "name": "filter_output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": "inet", "table": "t", "chain": "nat_output", "handle": 7, "expr": [{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@vip_ports"}}, {"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"numgen": {"mode": "random", "mod": 720720, "offset": 0}}]}, "data": "@backends"}}}}]}}, {"rule": {"family": "inet", "table": "t", "chain": "nat_output", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@vip_any"}}, {"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"numgen": {"mode": "random", "mod": 720720, "offset": 0}}]}, "data": "@backends"}}}}]}}, {"rule": {"family": "inet", "table": "t", "chain": "filter_output", "handle": 9, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@vips"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"reject": {"type": "tcp reset"}}]}}, {"rule": {"family": "inet", "table": "t", "chain": "filter_output", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@vips"}}, {"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}}]}"#;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("test address")
    }

    #[test]
    fn the_layout_reads_back_with_its_elements() {
        let Some(Observed::Layout(elements)) = observe(LISTING) else {
            panic!("not read as the layout");
        };
        assert_eq!(
            elements,
            Elements {
                vips: [ip("10.0.1.2"), ip("10.0.2.2")].into_iter().collect(),
                vip_any: [ip("10.0.2.2")].into_iter().collect(),
                vip_ports: [(ip("10.0.1.2"), Protocol::Tcp, 80)].into_iter().collect(),
                backends: [
                    ((ip("10.0.1.2"), 0, 360_359), ip("10.0.1.5")),
                    ((ip("10.0.1.2"), 360_360, 720_719), ip("10.0.1.6")),
                    ((ip("10.0.2.2"), 7, 7), ip("10.0.2.9")),
                ]
                .into_iter()
                .collect(),
            }
        );
    }

    #[test]
    fn anything_else_is_another_layout() {
        for (what, edited) in [
            ("another modulus", LISTING.replace("720720", "65536")),
            (
                "a rule added",
                LISTING.replace(
                    r#"{"rule": {"family": "inet", "table": "t", "chain": "filter_output", "handle": 10"#,
                    r#"{"rule": {"family": "inet", "table": "t", "chain": "filter_output", "handle": 11, "expr": []}}, {"rule": {"family": "inet", "table": "t", "chain": "filter_output", "handle": 10"#,
                ),
            ),
            ("a set missing", LISTING.replace(r#""name": "vip_any""#, r#""name": "other""#)),
            ("another hook", LISTING.replace(r#""hook": "output", "prio": -100"#, r#""hook": "prerouting", "prio": -100"#)),
            ("an element unread", LISTING.replace(r#""10.0.2.9""#, r#""nine""#)),
        ] {
            assert_eq!(observe(&edited), Some(Observed::OtherLayout), "{what}");
        }
        assert_eq!(observe("not json"), None);
    }
}
