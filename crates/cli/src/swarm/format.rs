//! Pure halves of `swarm`, `info` and `node`: the requests built from flags, the node and cluster
//! spec changes, and docker's `info` text and JSON, `node ls` rows and `node inspect --pretty`
//! text. The API documents inside them are `docker_api::shape`'s.

use std::collections::BTreeMap;

use anyhow::bail;
use docker_api::shape::node::{availability_name, node_state_name, reachability_name};
use docker_api::shape::swarm::{
    cluster_shown, data_path_port, local_node_state_name, remote_managers,
};
use serde_json::{Value, json};
use shoal_proto::api;
use spec::enums::TextForm as _;

use crate::service::format::{
    ListRow, capitalize, cpus_text, duration_nanos, go_time_string, human_duration, natural_cmp,
    std_duration,
};
use crate::service::spec::parse_flag_duration;

/// `swarm init`'s flags, already parsed by clap.
#[derive(Debug, Default)]
pub(crate) struct InitOptions {
    pub(crate) advertise_addr: Option<String>,
    pub(crate) listen_addr: Option<String>,
    pub(crate) default_addr_pool: Vec<String>,
    pub(crate) default_addr_pool_mask_length: Option<u32>,
    pub(crate) task_history_limit: Option<i64>,
    pub(crate) dispatcher_heartbeat: Option<String>,
    pub(crate) force_new_cluster: bool,
    pub(crate) autolock: bool,
}

/// The `Swarm.Init` request for `swarm init`'s flags; unset flags stay at the server's defaults.
pub(crate) fn init_request(options: &InitOptions) -> anyhow::Result<api::InitRequest> {
    // docker accepts comma-separated pools as well as repeated flags.
    let pools: Vec<String> = options
        .default_addr_pool
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    spec::validate::address_pools(&pools, options.default_addr_pool_mask_length.unwrap_or(0))?;
    if options.autolock && options.force_new_cluster {
        bail!(
            "--autolock with --force-new-cluster: the recovered swarm keeps its autolock setting; change it afterwards with 'shoal swarm update --autolock=true|false'"
        );
    }
    if options.default_addr_pool_mask_length.is_some() && pools.is_empty() {
        bail!(
            "--default-addr-pool-mask-length needs --default-addr-pool: give the pool it divides"
        );
    }
    Ok(api::InitRequest {
        advertise_addr: options.advertise_addr.clone().unwrap_or_default(),
        listen_addr: options.listen_addr.clone().unwrap_or_default(),
        default_addr_pool: pools,
        subnet_size: options.default_addr_pool_mask_length.unwrap_or(0),
        task_history_limit: options.task_history_limit,
        dispatcher_heartbeat: options
            .dispatcher_heartbeat
            .as_deref()
            .map(|d| parse_flag_duration("dispatcher-heartbeat", d))
            .transpose()?,
        force_new_cluster: options.force_new_cluster,
        autolock: options.autolock,
    })
}

/// How far a root rotation has come, as `swarm ca --rotate` shows it while it waits.
pub(crate) fn rotation_progress(progress: &spec::root_rotation::RotationProgress) -> String {
    format!(
        "{} of {} nodes have certificates from the new root",
        progress.moved.len(),
        progress.moved.len() + progress.left.len()
    )
}

/// The role `swarm join-token` names: worker or manager.
pub(crate) fn token_role(role: &str) -> anyhow::Result<api::NodeRole> {
    Ok(api::NodeRole::parse(role)?)
}

/// What `swarm join-token` prints, as docker prints it: the whole join command, or with `-q`
/// the token alone.
pub(crate) fn join_token_text(
    role: api::NodeRole,
    token: &str,
    manager_addr: &str,
    quiet: bool,
) -> String {
    if quiet {
        return format!("{token}\n");
    }
    let role = role.text();
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {manager_addr}\n\n"
    )
}

/// What `swarm init --autolock`, `swarm update --autolock=true` and `swarm unlock-key` print
/// around the unlock key, as docker prints it.
pub(crate) fn unlock_key_text(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

/// Whether the cluster's managers lock when they restart.
pub(crate) fn autolock_of(spec: Option<&api::ClusterSpec>) -> bool {
    spec.and_then(|spec| spec.encryption_config.as_ref())
        .is_some_and(|encryption| encryption.auto_lock_managers)
}

/// `swarm update`'s flags.
#[derive(Debug, Default)]
pub(crate) struct ClusterUpdate {
    pub(crate) task_history_limit: Option<i64>,
    pub(crate) dispatcher_heartbeat: Option<String>,
    pub(crate) cert_expiry: Option<String>,
    pub(crate) autolock: Option<bool>,
}

/// Applies `swarm update`'s flags to the cluster spec read.
pub(crate) fn update_cluster_spec(
    mut spec: api::ClusterSpec,
    update: &ClusterUpdate,
) -> anyhow::Result<api::ClusterSpec> {
    if let Some(limit) = update.task_history_limit {
        spec.orchestration
            .get_or_insert_default()
            .task_history_retention_limit = limit;
    }
    if let Some(heartbeat) = &update.dispatcher_heartbeat {
        let period = parse_flag_duration("dispatcher-heartbeat", heartbeat)?;
        if duration_nanos(&period) <= 0 {
            bail!("--dispatcher-heartbeat: the period must be longer than 0, e.g. 1s");
        }
        spec.dispatcher.get_or_insert_default().heartbeat_period = Some(period);
    }
    if let Some(expiry) = &update.cert_expiry {
        let expiry = parse_flag_duration("cert-expiry", expiry)?;
        if duration_nanos(&expiry) < 3_600_000_000_000 {
            bail!("--cert-expiry: certificates must last at least 1h, e.g. 2160h (90 days)");
        }
        spec.ca_config.get_or_insert_default().node_cert_expiry = Some(expiry);
    }
    if let Some(autolock) = update.autolock {
        spec.encryption_config
            .get_or_insert_default()
            .auto_lock_managers = autolock;
    }
    Ok(spec)
}

/// `node update`'s flags.
#[derive(Debug, Default)]
pub(crate) struct NodeUpdate {
    pub(crate) availability: Option<String>,
    pub(crate) label_add: Vec<String>,
    pub(crate) label_rm: Vec<String>,
}

/// Applies `node update`'s flags to the node spec read, as docker's `mergeNodeUpdate` does.
pub(crate) fn update_node_spec(
    mut spec: api::NodeSpec,
    update: &NodeUpdate,
) -> anyhow::Result<api::NodeSpec> {
    if let Some(availability) = &update.availability {
        spec.availability = api::node_spec::Availability::parse(&availability.to_ascii_lowercase())
            .map_err(|error| error.in_field("--availability"))? as i32;
    }
    let labels = &mut spec.annotations.get_or_insert_default().labels;
    for label in &update.label_add {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        if key.is_empty() {
            bail!("--label-add: invalid label {label:?}: use key=value");
        }
        labels.insert(key.to_owned(), value.to_owned());
    }
    for key in &update.label_rm {
        if labels.remove(key).is_none() {
            bail!(
                "key {key} doesn't exist in node's labels: see them with 'shoal node inspect --pretty'"
            );
        }
    }
    Ok(spec)
}

/// `shoal info`'s text: docker's "Swarm:" section, with the cluster's settings when this node is
/// a manager and they could be read.
pub(crate) fn info_text(info: &api::InfoResponse, cluster: Option<&api::Cluster>) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if !info.engine_version.is_empty() {
        line(format!("Server Version: {}", info.engine_version));
    }
    let state = local_node_state_name(info.local_node_state);
    line(format!("Swarm: {state}"));
    if state != "inactive" && state != "locked" {
        line(format!(" NodeID: {}", info.node_id));
        if !info.error.is_empty() {
            line(format!(" Error: {}", info.error));
        }
        line(format!(" Is Manager: {}", info.control_available));
        if cluster_shown(info) {
            line(format!(" ClusterID: {}", info.cluster_id));
            line(format!(" Managers: {}", info.managers));
            line(format!(" Nodes: {}", info.nodes));
            if let Some(cluster) = cluster {
                let spec = cluster.spec.clone().unwrap_or_default();
                if !cluster.default_address_pool.is_empty() {
                    let pools: String = cluster
                        .default_address_pool
                        .iter()
                        .map(|p| format!("{p}  "))
                        .collect();
                    line(format!(" Default Address Pool: {pools}"));
                    line(format!(" SubnetSize: {}", cluster.subnet_size));
                }
                line(format!(" Data Path Port: {}", data_path_port(cluster)));
                line(" Orchestration:".into());
                line(format!(
                    "  Task History Retention Limit: {}",
                    spec.orchestration
                        .unwrap_or_default()
                        .task_history_retention_limit
                ));
                let raft = spec.raft.unwrap_or_default();
                line(" Raft:".into());
                line(format!("  Snapshot Interval: {}", raft.snapshot_interval));
                line(format!(
                    "  Number of Old Snapshots to Retain: {}",
                    raft.keep_old_snapshots
                ));
                line(format!("  Heartbeat Tick: {}", raft.heartbeat_tick));
                line(format!("  Election Tick: {}", raft.election_tick));
                let heartbeat = spec
                    .dispatcher
                    .and_then(|d| d.heartbeat_period)
                    .map(|d| std_duration(&d))
                    .unwrap_or_default();
                line(" Dispatcher:".into());
                line(format!("  Heartbeat Period: {}", human_duration(heartbeat)));
                let ca = spec.ca_config.unwrap_or_default();
                let expiry = ca
                    .node_cert_expiry
                    .map(|d| std_duration(&d))
                    .unwrap_or_default();
                line(" CA Configuration:".into());
                line(format!("  Expiry Duration: {}", human_duration(expiry)));
                line(format!("  Force Rotate: {}", ca.force_rotate));
                line(format!(
                    " Autolock Managers: {}",
                    spec.encryption_config
                        .unwrap_or_default()
                        .auto_lock_managers
                ));
            }
        }
        line(format!(" Node Address: {}", info.node_addr));
        let managers = remote_managers(info);
        if !managers.is_empty() {
            line(" Manager Addresses:".into());
            for (_, address) in managers {
                line(format!("  {address}"));
            }
        }
    }
    if !info.routing_mesh.is_empty() {
        line(format!("Routing Mesh: {}", info.routing_mesh));
    }
    if !info.hostname.is_empty() {
        line(format!("Name: {}", info.hostname));
    }
    out
}

/// docker's `info --format json` object, holding what shoal knows: the server version, the name
/// and the Swarm section.
pub(crate) fn info_json(info: &api::InfoResponse, cluster: Option<&api::Cluster>) -> Value {
    json!({
        "ServerVersion": info.engine_version,
        "Name": info.hostname,
        "RoutingMesh": info.routing_mesh,
        "Swarm": docker_api::shape::swarm::swarm_info_json(info, cluster),
    })
}

fn hostname(node: &api::Node) -> &str {
    node.description
        .as_ref()
        .map_or("", |d| d.hostname.as_str())
}

/// One line of `node ls`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NodeRow {
    pub(crate) id: String,
    pub(crate) is_self: bool,
    pub(crate) hostname: String,
    pub(crate) status: String,
    pub(crate) availability: String,
    pub(crate) manager_status: String,
    pub(crate) engine_version: String,
    /// Shown in JSON only, as by the docker CLI.
    pub(crate) tls_status: &'static str,
}

pub(crate) const NODE_HEADER: [&str; 6] = [
    "ID",
    "HOSTNAME",
    "STATUS",
    "AVAILABILITY",
    "MANAGER STATUS",
    "ENGINE VERSION",
];

impl ListRow for NodeRow {
    fn id(&self) -> &str {
        &self.id
    }

    /// Table cells; the ID column carries docker's ` *` for this node.
    fn cells(&self) -> Vec<String> {
        vec![
            format!("{} {}", self.id, if self.is_self { "*" } else { " " }),
            self.hostname.clone(),
            self.status.clone(),
            self.availability.clone(),
            self.manager_status.clone(),
            self.engine_version.clone(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "ID": self.id, "Self": self.is_self, "Hostname": self.hostname, "Status": self.status,
            "Availability": self.availability, "ManagerStatus": self.manager_status,
            "EngineVersion": self.engine_version, "TLSStatus": self.tls_status,
        })
    }
}

/// The rows of `node ls`, sorted by hostname as docker sorts them; `cluster_tls` is the
/// cluster's TLS information, which each node's is compared with.
pub(crate) fn node_rows(
    nodes: &[api::Node],
    local_node_id: &str,
    cluster_tls: Option<&api::NodeTlsInfo>,
) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = nodes
        .iter()
        .map(|node| {
            let manager_status = match &node.manager_status {
                Some(status) if status.leader => "Leader".to_owned(),
                Some(status) => capitalize(reachability_name(status.reachability)),
                None => String::new(),
            };
            NodeRow {
                id: node.id.clone(),
                is_self: !local_node_id.is_empty() && node.id == local_node_id,
                hostname: hostname(node).to_owned(),
                status: capitalize(node_state_name(node.status.as_ref().map_or(0, |s| s.state))),
                availability: capitalize(availability_name(
                    node.spec.as_ref().map_or(0, |s| s.availability),
                )),
                manager_status,
                engine_version: node
                    .description
                    .as_ref()
                    .and_then(|d| d.engine.as_ref())
                    .map(|e| e.engine_version.clone())
                    .unwrap_or_default(),
                tls_status: spec::tls_info::status(
                    node.description.as_ref().and_then(|d| d.tls_info.as_ref()),
                    cluster_tls,
                ),
            }
        })
        .collect();
    rows.sort_by(|a, b| natural_cmp(&a.hostname, &b.hostname));
    rows
}

/// `node inspect --pretty`: docker's template, for the fields shoal has.
pub(crate) fn node_pretty(node: &api::Node) -> String {
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let description = node.description.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("ID:\t\t\t{}", node.id));
    if !annotations.name.is_empty() {
        line(format!("Name:\t\t\t{}", annotations.name));
    }
    if !annotations.labels.is_empty() {
        line("Labels:".into());
        let sorted: BTreeMap<_, _> = annotations.labels.iter().collect();
        for (key, value) in sorted {
            if value.is_empty() {
                line(format!(" - {key}"));
            } else {
                line(format!(" - {key}={value}"));
            }
        }
    }
    line(format!("Hostname:              \t{}", description.hostname));
    line(format!(
        "Joined at:             \t{}",
        go_time_string(node.meta.as_ref().and_then(|m| m.created_at.as_ref()))
    ));
    line("Status:".into());
    line(format!(
        " State:\t\t\t{}",
        capitalize(node_state_name(status.state))
    ));
    if !status.message.is_empty() {
        line(format!(" Message:              \t{}", status.message));
    }
    line(format!(
        " Availability:         \t{}",
        capitalize(availability_name(spec.availability))
    ));
    if !status.addr.is_empty() {
        line(format!(" Address:\t\t{}", status.addr));
    }
    if let Some(manager) = &node.manager_status {
        line("Manager Status:".into());
        line(format!(" Address:\t\t{}", manager.addr));
        line(format!(
            " Raft Status:\t\t{}",
            capitalize(reachability_name(manager.reachability))
        ));
        line(format!(
            " Leader:\t\t{}",
            if manager.leader { "Yes" } else { "No" }
        ));
    }
    let platform = description.platform.clone().unwrap_or_default();
    line("Platform:".into());
    line(format!(" Operating System:\t{}", platform.os));
    line(format!(" Architecture:\t\t{}", platform.architecture));
    let resources = description.resources.clone().unwrap_or_default();
    line("Resources:".into());
    line(format!(" CPUs:\t\t\t{}", cpus_text(resources.nano_cpus)));
    line(format!(
        " Memory:\t\t{}",
        spec::units::bytes_size(u64::try_from(resources.memory_bytes).unwrap_or(0))
    ));
    let engine = description.engine.clone().unwrap_or_default();
    if !engine.plugins.is_empty() {
        let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for plugin in &engine.plugins {
            by_type
                .entry(&plugin.r#type)
                .or_default()
                .push(&plugin.name);
        }
        line("Plugins:".into());
        for (kind, mut names) in by_type {
            names.sort_unstable();
            line(format!(" {kind}:\t\t{}", names.join(", ")));
        }
    }
    line(format!("Engine Version:\t\t{}", engine.engine_version));
    if !engine.labels.is_empty() {
        line("Engine Labels:".into());
        let sorted: BTreeMap<_, _> = engine.labels.iter().collect();
        for (key, value) in sorted {
            if value.is_empty() {
                line(format!(" - {key}"));
            } else {
                line(format!(" - {key}={value}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn node(id: &str, host: &str, leader: Option<bool>) -> api::Node {
        api::Node {
            id: id.into(),
            meta: Some(api::Meta {
                version: Some(api::Version { index: 9 }),
                created_at: Some(api::Timestamp {
                    seconds: 1_257_894_000,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            spec: Some(api::NodeSpec {
                annotations: Some(api::Annotations {
                    labels: HashMap::from([("zone".to_owned(), "east".to_owned())]),
                    ..Default::default()
                }),
                desired_role: if leader.is_some() {
                    api::NodeRole::Manager as i32
                } else {
                    api::NodeRole::Worker as i32
                },
                availability: api::node_spec::Availability::Active as i32,
                ..Default::default()
            }),
            description: Some(api::NodeDescription {
                hostname: host.into(),
                platform: Some(api::Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                }),
                resources: Some(api::Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 20 << 20,
                    generic: Vec::new(),
                }),
                engine: Some(api::EngineDescription {
                    engine_version: "0.1.0".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(api::NodeStatus {
                state: api::node_status::State::Ready as i32,
                message: String::new(),
                addr: "127.0.0.1".into(),
            }),
            manager_status: leader.map(|leader| api::ManagerStatus {
                raft_id: 1,
                addr: "127.0.0.1:2377".into(),
                leader,
                reachability: api::raft_member_status::Reachability::Reachable as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rotation_progress_counts_the_nodes_the_manager_waits_for() {
        let progress = spec::root_rotation::RotationProgress {
            moved: vec!["a".to_owned()],
            left: vec!["b".to_owned(), "c".to_owned()],
        };
        assert_eq!(
            rotation_progress(&progress),
            "1 of 3 nodes have certificates from the new root"
        );
    }

    #[test]
    fn node_ls_matches_docker_golden() {
        let nodes = vec![
            node("nodeID1", "node-2-foo", Some(true)),
            node("nodeID2", "node-10-foo", Some(false)),
            node("nodeID3", "node-1-foo", None),
        ];
        let rows = node_rows(&nodes, "nodeID1", None);
        let cells: Vec<Vec<String>> = rows.iter().map(NodeRow::cells).collect();
        let text = crate::service::format::table(&NODE_HEADER, &cells);
        assert_eq!(
            text,
            "ID          HOSTNAME      STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
             nodeID3     node-1-foo    Ready     Active                          0.1.0\n\
             nodeID1 *   node-2-foo    Ready     Active         Leader           0.1.0\n\
             nodeID2     node-10-foo   Ready     Active         Reachable        0.1.0\n"
        );
        assert_eq!(rows[1].json()["Self"], true);
        assert_eq!(rows[1].json()["ID"], "nodeID1");
        assert_eq!(rows[0].json()["ManagerStatus"], "");
    }

    #[test]
    fn node_pretty_is_docker_shaped() {
        let leader = node("nodeID", "defaultNodeHostname", Some(true));
        let pretty = node_pretty(&leader);
        assert!(pretty.starts_with("ID:\t\t\tnodeID\nLabels:\n - zone=east\nHostname:              \tdefaultNodeHostname\nJoined at:             \t2009-11-10 23:00:00 +0000 utc\n"), "{pretty}");
        assert!(pretty.contains(" Leader:\t\tYes\n"), "{pretty}");
        assert!(
            pretty.contains(" CPUs:\t\t\t4\n Memory:\t\t20MiB\n"),
            "{pretty}"
        );
    }

    #[test]
    fn node_update_follows_docker() -> anyhow::Result<()> {
        let spec = node("n", "h", None).spec.unwrap_or_default();
        let updated = update_node_spec(
            spec.clone(),
            &NodeUpdate {
                availability: Some("drain".into()),
                label_add: vec!["rack=1".into(), "ssd".into()],
                label_rm: vec!["zone".into()],
            },
        )?;
        assert_eq!(
            updated.availability,
            api::node_spec::Availability::Drain as i32
        );
        let labels = updated.annotations.unwrap_or_default().labels;
        assert_eq!(labels.get("rack").map(String::as_str), Some("1"));
        assert_eq!(labels.get("ssd").map(String::as_str), Some(""));
        assert!(!labels.contains_key("zone"));
        let missing = update_node_spec(
            spec.clone(),
            &NodeUpdate {
                label_rm: vec!["nope".into()],
                ..Default::default()
            },
        );
        assert!(
            missing
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .starts_with("key nope doesn't exist in node's labels")
        );
        assert!(
            update_node_spec(
                spec,
                &NodeUpdate {
                    availability: Some("sleep".into()),
                    ..Default::default()
                }
            )
            .is_err()
        );
        Ok(())
    }

    /// `swarm init` refuses the pools the manager refuses, with its message (issue 13: the CLI
    /// took IPv6 pools and masks from 1 to 32, the manager IPv4 and 8 to 29).
    #[test]
    fn address_pools_are_refused_as_the_manager_refuses_them() {
        for (pool, mask) in [
            ("fd00::/8", None),
            ("10.0.0.0/8", Some(30)),
            ("10.20.0.0/16", Some(12)),
        ] {
            let error = init_request(&InitOptions {
                default_addr_pool: vec![pool.into()],
                default_addr_pool_mask_length: mask,
                ..Default::default()
            })
            .expect_err(pool)
            .to_string();
            let manager = spec::validate::address_pools(&[pool.to_owned()], mask.unwrap_or(0))
                .expect_err(pool)
                .to_string();
            assert_eq!(error, manager);
        }
    }

    #[test]
    fn swarm_requests_and_updates() -> anyhow::Result<()> {
        let request = init_request(&InitOptions {
            advertise_addr: Some("10.0.0.1".into()),
            default_addr_pool: vec!["10.20.0.0/16,10.30.0.0/16".into()],
            default_addr_pool_mask_length: Some(26),
            task_history_limit: Some(2),
            dispatcher_heartbeat: Some("2s".into()),
            ..Default::default()
        })?;
        assert_eq!(request.default_addr_pool, ["10.20.0.0/16", "10.30.0.0/16"]);
        assert_eq!(request.subnet_size, 26);
        assert_eq!(request.task_history_limit, Some(2));
        // 0 is a real limit (keep no old tasks), not "unset".
        let keep_none = init_request(&InitOptions {
            task_history_limit: Some(0),
            ..Default::default()
        })?;
        assert_eq!(keep_none.task_history_limit, Some(0));
        assert_eq!(
            init_request(&InitOptions::default())?.task_history_limit,
            None
        );
        assert_eq!(
            request.dispatcher_heartbeat,
            Some(api::Duration {
                seconds: 2,
                nanos: 0
            })
        );
        assert!(
            init_request(&InitOptions {
                default_addr_pool: vec!["10.20.0.0".into()],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            init_request(&InitOptions {
                dispatcher_heartbeat: Some("fast".into()),
                ..Default::default()
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .starts_with("--dispatcher-heartbeat:")
        );

        let spec = update_cluster_spec(
            api::ClusterSpec::default(),
            &ClusterUpdate {
                task_history_limit: Some(3),
                dispatcher_heartbeat: Some("1s".into()),
                cert_expiry: Some("720h".into()),
                autolock: Some(true),
            },
        )?;
        assert!(autolock_of(Some(&spec)));
        // Without the flag the setting stays; with it, it changes.
        let kept = update_cluster_spec(spec.clone(), &ClusterUpdate::default())?;
        assert!(autolock_of(Some(&kept)));
        let off = update_cluster_spec(
            spec.clone(),
            &ClusterUpdate {
                autolock: Some(false),
                ..Default::default()
            },
        )?;
        assert!(!autolock_of(Some(&off)));
        assert!(!autolock_of(None));
        assert_eq!(
            spec.orchestration.map(|o| o.task_history_retention_limit),
            Some(3)
        );
        assert_eq!(
            spec.dispatcher.and_then(|d| d.heartbeat_period),
            Some(api::Duration {
                seconds: 1,
                nanos: 0
            })
        );
        assert_eq!(
            spec.ca_config
                .and_then(|c| c.node_cert_expiry)
                .map(|d| d.seconds),
            Some(720 * 3600)
        );
        assert!(
            update_cluster_spec(
                api::ClusterSpec::default(),
                &ClusterUpdate {
                    cert_expiry: Some("10m".into()),
                    ..Default::default()
                }
            )
            .is_err()
        );
        Ok(())
    }

    #[test]
    fn info_prints_docker_swarm_section() {
        let inactive = api::InfoResponse::default();
        assert_eq!(info_text(&inactive, None), "Swarm: inactive\n");
        let active = api::InfoResponse {
            local_node_state: api::info_response::LocalNodeState::Active as i32,
            node_id: "node1".into(),
            node_addr: "10.0.0.1".into(),
            control_available: true,
            cluster_id: "cluster1".into(),
            managers: 1,
            nodes: 1,
            remote_managers: HashMap::from([("node1".to_owned(), "10.0.0.1:2377".to_owned())]),
            engine_version: "0.1.0".into(),
            hostname: "host-a".into(),
            ..Default::default()
        };
        assert_eq!(
            info_text(&active, None),
            "Server Version: 0.1.0\nSwarm: active\n NodeID: node1\n Is Manager: true\n ClusterID: cluster1\n Managers: 1\n Nodes: 1\n Node Address: 10.0.0.1\n Manager Addresses:\n  10.0.0.1:2377\nName: host-a\n"
        );
        let cluster = api::Cluster {
            id: "cluster1".into(),
            spec: Some(api::ClusterSpec {
                orchestration: Some(api::OrchestrationConfig {
                    task_history_retention_limit: 5,
                }),
                dispatcher: Some(api::DispatcherConfig {
                    heartbeat_period: Some(api::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = info_text(&active, Some(&cluster));
        assert!(
            text.contains(" Orchestration:\n  Task History Retention Limit: 5\n"),
            "{text}"
        );
        assert!(
            text.contains(" Dispatcher:\n  Heartbeat Period: 5 seconds\n"),
            "{text}"
        );
        let value = info_json(&active, Some(&cluster));
        assert_eq!(value["Swarm"]["LocalNodeState"], "active");
        assert_eq!(value["Swarm"]["Cluster"]["ID"], "cluster1");
        assert_eq!(value["Swarm"]["RemoteManagers"][0]["Addr"], "10.0.0.1:2377");
        assert_eq!(
            value["Swarm"]["Cluster"]["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            5_000_000_000i64
        );
    }

    #[test]
    fn roles_are_spelled_with_specs_words_both_ways() {
        assert_eq!(token_role("manager").ok(), Some(api::NodeRole::Manager));
        assert_eq!(
            token_role("leader").map_err(|error| error.to_string()),
            Err("invalid role \"leader\": use worker or manager".to_owned())
        );
        assert!(
            join_token_text(api::NodeRole::Worker, "SWMTKN-1-x", "10.0.0.1:2377", false)
                .starts_with("To add a worker to this swarm")
        );
    }

    #[test]
    fn the_unlock_key_is_printed_as_docker_prints_it() {
        assert_eq!(
            unlock_key_text("SWMKEY-1-abc"),
            "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    SWMKEY-1-abc\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
        );
        let request = init_request(&InitOptions {
            autolock: true,
            ..Default::default()
        })
        .unwrap();
        assert!(request.autolock);
        let recovering = init_request(&InitOptions {
            autolock: true,
            force_new_cluster: true,
            ..Default::default()
        });
        assert!(
            recovering
                .unwrap_err()
                .to_string()
                .contains("keeps its autolock setting")
        );
    }

    #[test]
    fn a_locked_node_shows_only_that_it_is_locked() {
        let locked = api::InfoResponse {
            local_node_state: api::info_response::LocalNodeState::Locked as i32,
            node_id: "node1".into(),
            ..Default::default()
        };
        assert_eq!(info_text(&locked, None), "Swarm: locked\n");
    }
}
