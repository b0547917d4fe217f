//! Networks: Docker's `NetworkResource`, and the create request Docker's CLI sends.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::shape::network::{network_json, network_spec_from_json};

fn allocated_network() -> api::Network {
    api::Network {
        id: "0123456789abcdef0123".into(),
        meta: Some(api::Meta {
            created_at: Some(ts(1_700_000_000)),
            ..Default::default()
        }),
        spec: Some(api::NetworkSpec {
            annotations: Some(api::Annotations {
                name: "backend".into(),
                labels: HashMap::from([("tier".to_owned(), "db".to_owned())]),
                ..Default::default()
            }),
            driver_config: Some(api::Driver {
                name: "overlay".into(),
                options: HashMap::from([
                    ("encrypted".to_owned(), String::new()),
                    (
                        "com.docker.network.driver.mtu".to_owned(),
                        "1400".to_owned(),
                    ),
                ]),
            }),
            ipam: Some(api::IpamOptions {
                driver: None,
                configs: vec![api::IpamConfig {
                    subnet: "10.1.0.0/24".into(),
                    range: "10.1.0.128/25".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        driver_state: Some(api::Driver {
            name: "overlay".into(),
            options: [(
                "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
                "4097".to_owned(),
            )]
            .into(),
        }),
        ipam: Some(api::IpamOptions {
            driver: None,
            configs: vec![api::IpamConfig {
                subnet: "10.1.0.0/24".into(),
                gateway: "10.1.0.1".into(),
                range: "10.1.0.128/25".into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

#[test]
fn inspect_follows_dockers_network_resource() {
    let known = api::NetworkAttachmentsResponse {
        endpoints: vec![api::network_attachments_response::Endpoint {
            container_id: "c0ffee".into(),
            name: "web.1.t1".into(),
            endpoint_id: "t1".into(),
            mac_address: "02:42:0a:01:00:05".into(),
            ipv4_address: "10.1.0.5/24".into(),
        }],
        peers: vec![api::network_attachments_response::Peer {
            name: "node1".into(),
            ip: "192.0.2.1".into(),
        }],
    };
    let document = network_json(&allocated_network(), Some(&known));
    assert_eq!(document["Name"], "backend");
    assert_eq!(document["Id"], "0123456789abcdef0123");
    assert_eq!(document["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(document["Scope"], "swarm");
    assert_eq!(document["Driver"], "overlay");
    assert_eq!(
        document["IPAM"],
        json!({
            "Driver": "default",
            "Options": null,
            "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1", "IPRange": "10.1.0.128/25"}],
        })
    );
    assert_eq!(
        document["Options"],
        json!({
            "com.docker.network.driver.mtu": "1400",
            "com.docker.network.driver.overlay.vxlanid_list": "4097",
            "encrypted": "",
        })
    );
    assert_eq!(document["Labels"], json!({"tier": "db"}));
    assert_eq!(
        document["Containers"],
        json!({"c0ffee": {
            "Name": "web.1.t1",
            "EndpointID": "t1",
            "MacAddress": "02:42:0a:01:00:05",
            "IPv4Address": "10.1.0.5/24",
            "IPv6Address": "",
        }})
    );
    assert_eq!(
        document["Peers"],
        json!([{"Name": "node1", "IP": "192.0.2.1"}])
    );
    // Before allocation, IPAM shows what was asked for; a list knows no attachments.
    let mut unallocated = allocated_network();
    unallocated.ipam = None;
    let listed = network_json(&unallocated, None);
    assert_eq!(
        listed["IPAM"]["Config"],
        json!([{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25"}])
    );
    assert_eq!(listed["Containers"], json!({}));
}

#[test]
fn create_requests_read_as_shoal_network_create_builds_them() {
    // `docker network create -d overlay --subnet 10.1.0.0/24 --ip-range 10.1.0.128/25
    // -o encrypted -o com.docker.network.driver.mtu=1400 --label tier=db backend`.
    let body = json!({
        "Name": "backend",
        "Driver": "overlay",
        "Scope": "",
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25"}]},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigOnly": false,
        "Options": {"encrypted": "", "com.docker.network.driver.mtu": "1400"},
        "Labels": {"tier": "db"},
    });
    assert_eq!(
        network_spec_from_json(&body),
        Ok(allocated_network().spec.unwrap())
    );
    // Without a subnet, Docker's CLI still sends the default IPAM: shoal's has none.
    let plain = json!({"Name": "front", "Driver": "overlay", "IPAM": {"Driver": "default", "Options": {}, "Config": []}, "Attachable": true, "ConfigFrom": {"Network": "tmpl"}});
    let spec = network_spec_from_json(&plain).unwrap();
    assert_eq!(spec.ipam, None);
    assert!(spec.attachable);
    assert_eq!(
        spec.config_from,
        Some(api::network_spec::ConfigFrom::Network("tmpl".into()))
    );
    // Another IPAM driver is kept, for the manager to refuse with spec's words.
    let other = json!({"Name": "x", "IPAM": {"Driver": "dhcp"}});
    assert_eq!(
        network_spec_from_json(&other).unwrap().ipam,
        Some(api::IpamOptions {
            driver: Some(api::Driver {
                name: "dhcp".into(),
                options: HashMap::new(),
            }),
            configs: Vec::new(),
        })
    );
    assert_eq!(
        refusal(network_spec_from_json(
            &json!({"Name": "x", "Internal": "yes"})
        )),
        "json: cannot unmarshal string into Go struct field CreateRequest.Internal of type bool"
    );
}
