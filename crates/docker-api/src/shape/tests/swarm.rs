//! The swarm: `GET /swarm`, `Info.Swarm`, and the spec `POST /swarm/update` merges.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::shape::swarm::{cluster_spec_from_json, swarm_info_json, swarm_inspect_json};

#[test]
fn an_inactive_or_locked_node_shows_only_where_it_stands() {
    let inactive = api::InfoResponse::default();
    assert_eq!(
        swarm_info_json(&inactive, None).to_string(),
        r#"{"ControlAvailable":false,"Error":"","LocalNodeState":"inactive","NodeAddr":"","NodeID":"","RemoteManagers":null}"#
    );
    let locked = api::InfoResponse {
        local_node_state: api::info_response::LocalNodeState::Locked as i32,
        node_id: "node1".into(),
        ..Default::default()
    };
    assert_eq!(swarm_info_json(&locked, None)["LocalNodeState"], "locked");
}

fn active() -> api::InfoResponse {
    api::InfoResponse {
        local_node_state: api::info_response::LocalNodeState::Active as i32,
        node_id: "node1".into(),
        node_addr: "10.0.0.1".into(),
        control_available: true,
        cluster_id: "cluster1".into(),
        managers: 2,
        nodes: 3,
        remote_managers: HashMap::from([
            ("node2".to_owned(), "10.0.0.2:2377".to_owned()),
            ("node1".to_owned(), "10.0.0.1:2377".to_owned()),
        ]),
        ..Default::default()
    }
}

fn cluster() -> api::Cluster {
    api::Cluster {
        id: "cluster1".into(),
        meta: Some(api::Meta {
            version: Some(api::Version { index: 4 }),
            created_at: Some(ts(1_700_000_000)),
            updated_at: Some(ts(1_700_000_100)),
        }),
        spec: Some(api::ClusterSpec {
            annotations: Some(api::Annotations {
                name: "default".into(),
                ..Default::default()
            }),
            orchestration: Some(api::OrchestrationConfig {
                task_history_retention_limit: 5,
            }),
            raft: Some(api::RaftConfig {
                snapshot_interval: 10_000,
                keep_old_snapshots: 0,
                log_entries_for_slow_followers: 500,
                heartbeat_tick: 1,
                election_tick: 10,
            }),
            dispatcher: Some(api::DispatcherConfig {
                heartbeat_period: seconds(5),
            }),
            ca_config: Some(api::CaConfig {
                node_cert_expiry: seconds(90 * 24 * 3600),
                ..Default::default()
            }),
            task_defaults: None,
            encryption_config: Some(api::EncryptionConfig {
                auto_lock_managers: false,
            }),
        }),
        root_ca: Some(api::RootCa {
            ca_cert: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            join_tokens: Some(api::JoinTokens {
                worker: "SWMTKN-1-w".into(),
                manager: "SWMTKN-1-m".into(),
            }),
            ..Default::default()
        }),
        default_address_pool: vec!["10.0.0.0/8".into()],
        subnet_size: 24,
        ..Default::default()
    }
}

#[test]
fn a_manager_shows_the_cluster() {
    let value = swarm_info_json(&active(), Some(&cluster()));
    assert_eq!(value["Managers"], 2);
    assert_eq!(value["Nodes"], 3);
    assert_eq!(
        value["RemoteManagers"],
        json!([
            {"NodeID": "node1", "Addr": "10.0.0.1:2377"},
            {"NodeID": "node2", "Addr": "10.0.0.2:2377"},
        ])
    );
    let cluster_json = &value["Cluster"];
    assert_eq!(cluster_json["ID"], "cluster1");
    assert_eq!(cluster_json["DataPathPort"], 4789);
    assert_eq!(
        cluster_json["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        5_000_000_000i64
    );
    assert_eq!(cluster_json["Spec"]["TaskDefaults"], json!({}));
    assert!(cluster_json.get("JoinTokens").is_none());
    // A manager that could not read the cluster shows its id.
    assert_eq!(
        swarm_info_json(&active(), None)["Cluster"],
        json!({"ID": "cluster1"})
    );
}

#[test]
fn get_swarm_carries_the_join_tokens_and_the_root() {
    let value = swarm_inspect_json(&cluster());
    assert_eq!(
        value["JoinTokens"],
        json!({"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"})
    );
    // The root here is no readable certificate, so there is no issuer to show; the real
    // parsing is spec::tls_info's, tested there.
    assert_eq!(value["TLSInfo"], json!({}));
    let info = api::NodeTlsInfo {
        trust_root: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        cert_issuer_subject: vec![0x30, 0x13],
        cert_issuer_public_key: Vec::new(),
    };
    assert_eq!(
        crate::shape::common::tls_info_json(Some(&info)),
        json!({"TrustRoot": "-----BEGIN CERTIFICATE-----\n", "CertIssuerSubject": "MBM="})
    );
    assert_eq!(value["Version"]["Index"], 4);
    assert_eq!(value["Spec"]["Raft"]["ElectionTick"], 10);
}

#[test]
fn swarm_updates_merge_as_dockers_daemon_merges_them() {
    let current = cluster().spec.unwrap();
    // What a Docker client sends back after reading the swarm reads as the spec it read.
    let shown = swarm_inspect_json(&cluster());
    assert_eq!(
        cluster_spec_from_json(&shown["Spec"], Some(&current)),
        Ok(current.clone())
    );
    // Zeros and empties keep what is there; ForceRotate and autolock are always taken.
    let body = json!({
        "Name": "",
        "Orchestration": {},
        "Raft": {"SnapshotInterval": 0, "KeepOldSnapshots": 2, "ElectionTick": 0, "HeartbeatTick": 0},
        "Dispatcher": {"HeartbeatPeriod": 2000000000u64},
        "CAConfig": {"ForceRotate": 1, "ExternalCAs": [{"Protocol": "CFSSL", "URL": "https://ca.example", "CACert": "PEM"}]},
        "TaskDefaults": {"LogDriver": {"Name": "json-file"}},
        "EncryptionConfig": {"AutoLockManagers": true},
    });
    let merged = cluster_spec_from_json(&body, Some(&current)).unwrap();
    let mut expected = current.clone();
    expected.raft.as_mut().unwrap().keep_old_snapshots = 2;
    expected.dispatcher = Some(api::DispatcherConfig {
        heartbeat_period: seconds(2),
    });
    let ca = expected.ca_config.as_mut().unwrap();
    ca.force_rotate = 1;
    ca.external_cas = vec![api::ExternalCa {
        protocol: api::external_ca::CaProtocol::Cfssl as i32,
        url: "https://ca.example".into(),
        options: HashMap::new(),
        ca_cert: b"PEM".to_vec(),
    }];
    expected.task_defaults = Some(api::TaskDefaults {
        log_driver: Some(api::Driver {
            name: "json-file".into(),
            options: HashMap::new(),
        }),
    });
    expected.encryption_config = Some(api::EncryptionConfig {
        auto_lock_managers: true,
    });
    assert_eq!(merged, expected);
    // The signing CA is taken when given, and never shown.
    let signing = json!({"CAConfig": {"SigningCACert": "CERT", "SigningCAKey": "KEY"}});
    let merged = cluster_spec_from_json(&signing, Some(&current)).unwrap();
    let ca = merged.ca_config.clone().unwrap();
    assert_eq!(
        (ca.signing_ca_cert, ca.signing_ca_key),
        (b"CERT".to_vec(), b"KEY".to_vec())
    );
    let shown = swarm_inspect_json(&api::Cluster {
        spec: Some(merged),
        ..cluster()
    });
    assert!(!shown.to_string().contains("KEY"), "{shown}");
    assert_eq!(
        refusal(cluster_spec_from_json(
            &json!({"CAConfig": {"ExternalCAs": [{"Protocol": "acme"}]}}),
            Some(&current)
        )),
        "Spec.CAConfig.ExternalCAs.Protocol: invalid protocol \"acme\": use cfssl"
    );
    assert_eq!(
        refusal(cluster_spec_from_json(
            &json!({"Raft": {"ElectionTick": "ten"}}),
            None
        )),
        "json: cannot unmarshal string into Go struct field Spec.Raft.ElectionTick of type int"
    );
}
