//! `shoal swarm`, `shoal info` and `shoal node`: thin shells over the daemon's `Swarm` and
//! `Control` services; what they print and send is built in [`format`].

pub(crate) mod format;

use anyhow::Context as _;
use clap::Subcommand;
use shoal_proto::api;

use crate::client::{Daemon, api_error};
use crate::service::format::print_rows;

#[derive(Subcommand)]
pub(crate) enum SwarmCommand {
    /// Makes this daemon the first manager of a new swarm.
    Init {
        /// Address other nodes reach this one at: IP, or IP:PORT.
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Address the cluster port listens on (default 0.0.0.0:2377).
        #[arg(long)]
        listen_addr: Option<String>,
        /// Address pool for overlay networks, in CIDR form (repeatable).
        #[arg(long)]
        default_addr_pool: Vec<String>,
        /// Prefix length of the subnets carved out of the pools (default 24).
        #[arg(long)]
        default_addr_pool_mask_length: Option<u32>,
        /// Task history kept per slot (default 5).
        #[arg(long, allow_negative_numbers = true)]
        task_history_limit: Option<i64>,
        /// How often nodes report to the dispatcher, e.g. 5s.
        #[arg(long)]
        dispatcher_heartbeat: Option<String>,
    },
    /// Changes the swarm's settings.
    Update {
        /// Task history kept per slot.
        #[arg(long, allow_negative_numbers = true)]
        task_history_limit: Option<i64>,
        /// How often nodes report to the dispatcher, e.g. 5s.
        #[arg(long)]
        dispatcher_heartbeat: Option<String>,
        /// Validity of node certificates, e.g. 2160h.
        #[arg(long)]
        cert_expiry: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Lists the swarm's nodes.
    #[command(alias = "list")]
    Ls {
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Shows nodes in detail (`self` is this node).
    Inspect {
        /// Prints a human-readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Changes a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long)]
        availability: Option<String>,
        /// Adds or updates a label, key=value (repeatable).
        #[arg(long)]
        label_add: Vec<String>,
        /// Removes a label (repeatable).
        #[arg(long)]
        label_rm: Vec<String>,
        node: String,
    },
}

pub(crate) async fn swarm(host: &str, command: SwarmCommand) -> anyhow::Result<()> {
    match command {
        SwarmCommand::Init {
            advertise_addr,
            listen_addr,
            default_addr_pool,
            default_addr_pool_mask_length,
            task_history_limit,
            dispatcher_heartbeat,
        } => {
            let request = format::init_request(&format::InitOptions {
                advertise_addr,
                listen_addr,
                default_addr_pool,
                default_addr_pool_mask_length,
                task_history_limit,
                dispatcher_heartbeat,
            })?;
            let response = Daemon::connect(host)
                .await?
                .swarm
                .init(request)
                .await
                .map_err(api_error)?
                .into_inner();
            println!(
                "Swarm initialized: current node ({}) is now a manager.",
                response.node_id
            );
        }
        SwarmCommand::Update {
            task_history_limit,
            dispatcher_heartbeat,
            cert_expiry,
        } => {
            let update = format::ClusterUpdate {
                task_history_limit,
                dispatcher_heartbeat,
                cert_expiry,
            };
            // Durations are checked before anything is read or sent.
            format::update_cluster_spec(api::ClusterSpec::default(), &update)?;
            let mut daemon = Daemon::connect(host).await?;
            let cluster = daemon
                .control
                .get_cluster(api::GetClusterRequest {})
                .await
                .map_err(api_error)?
                .into_inner()
                .cluster
                .context(
                    "the daemon returned no cluster: is this node a manager? run 'shoal info'",
                )?;
            let version = version_of(cluster.meta.as_ref());
            let spec = format::update_cluster_spec(cluster.spec.unwrap_or_default(), &update)?;
            daemon
                .control
                .update_cluster(api::UpdateClusterRequest {
                    version,
                    spec: Some(spec),
                })
                .await
                .map_err(api_error)?;
            println!("Swarm updated.");
        }
    }
    Ok(())
}

pub(crate) fn version_of(meta: Option<&api::Meta>) -> u64 {
    meta.and_then(|m| m.version.as_ref()).map_or(0, |v| v.index)
}

/// What `--format` asks for on `info`: text, docker's whole object, or only its Swarm part.
enum InfoFormat {
    Text,
    Json,
    SwarmJson,
}

fn info_format(format: Option<&str>) -> anyhow::Result<InfoFormat> {
    match format {
        None | Some("table") => Ok(InfoFormat::Text),
        Some("json") | Some("{{json .}}") => Ok(InfoFormat::Json),
        Some("{{json .Swarm}}") => Ok(InfoFormat::SwarmJson),
        Some(other) => {
            anyhow::bail!("unsupported --format {other:?}: use 'json' or '{{{{json .Swarm}}}}'")
        }
    }
}

pub(crate) async fn info(host: &str, format: Option<String>) -> anyhow::Result<()> {
    let format = info_format(format.as_deref())?;
    let mut daemon = Daemon::connect(host).await?;
    let info = daemon
        .swarm
        .info(api::InfoRequest {})
        .await
        .map_err(api_error)?
        .into_inner();
    // The cluster's settings are extra: a manager that can't answer right now still gets its info.
    let cluster = if info.control_available {
        daemon
            .control
            .get_cluster(api::GetClusterRequest {})
            .await
            .ok()
            .and_then(|r| r.into_inner().cluster)
    } else {
        None
    };
    match format {
        InfoFormat::Text => print!("{}", format::info_text(&info, cluster.as_ref())),
        InfoFormat::Json => println!("{}", format::info_json(&info, cluster.as_ref())),
        InfoFormat::SwarmJson => {
            println!("{}", format::swarm_info_json(&info, cluster.as_ref()))
        }
    }
    Ok(())
}

/// Resolves `self` to this node's id, as docker does.
async fn node_reference(daemon: &mut Daemon, reference: String) -> anyhow::Result<String> {
    if reference != "self" {
        return Ok(reference);
    }
    let info = daemon
        .swarm
        .info(api::InfoRequest {})
        .await
        .map_err(api_error)?
        .into_inner();
    if info.node_id.is_empty() {
        anyhow::bail!("this node is not in a swarm: run 'shoal swarm init' first");
    }
    Ok(info.node_id)
}

pub(crate) async fn node(host: &str, command: NodeCommand) -> anyhow::Result<()> {
    if let NodeCommand::Ls { format, .. } = &command {
        crate::json_format(format.clone())?;
    }
    let mut daemon = Daemon::connect(host).await?;
    match command {
        NodeCommand::Ls { quiet, format } => {
            let json = crate::json_format(format)?;
            let nodes = daemon
                .control
                .list_nodes(api::ListNodesRequest {})
                .await
                .map_err(api_error)?
                .into_inner()
                .nodes;
            let local = if quiet || nodes.is_empty() {
                String::new()
            } else {
                daemon
                    .swarm
                    .info(api::InfoRequest {})
                    .await
                    .map_err(api_error)?
                    .into_inner()
                    .node_id
            };
            let rows = format::node_rows(&nodes, &local);
            print_rows(&rows, &format::NODE_HEADER, quiet, json);
        }
        NodeCommand::Inspect { pretty, nodes } => {
            let mut found = Vec::new();
            for reference in nodes {
                let reference = node_reference(&mut daemon, reference).await?;
                let node = daemon
                    .control
                    .get_node(api::GetNodeRequest {
                        node: reference.clone(),
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner()
                    .node
                    .with_context(|| format!("the daemon returned no node for {reference}"))?;
                found.push(node);
            }
            if pretty {
                let pages: Vec<String> = found.iter().map(format::node_pretty).collect();
                print!("{}", pages.join("\n"));
            } else {
                let documents: Vec<serde_json::Value> =
                    found.iter().map(format::node_inspect_json).collect();
                println!(
                    "{}",
                    crate::service::format::pretty_json(&serde_json::Value::Array(documents))?
                );
            }
        }
        NodeCommand::Update {
            availability,
            label_add,
            label_rm,
            node,
        } => {
            let update = format::NodeUpdate {
                availability,
                label_add,
                label_rm,
            };
            let reference = node_reference(&mut daemon, node.clone()).await?;
            let current = daemon
                .control
                .get_node(api::GetNodeRequest {
                    node: reference.clone(),
                })
                .await
                .map_err(api_error)?
                .into_inner()
                .node
                .with_context(|| format!("the daemon returned no node for {reference}"))?;
            let spec = format::update_node_spec(current.spec.clone().unwrap_or_default(), &update)?;
            daemon
                .control
                .update_node(api::UpdateNodeRequest {
                    node: current.id.clone(),
                    version: version_of(current.meta.as_ref()),
                    spec: Some(spec),
                })
                .await
                .map_err(api_error)?;
            println!("{node}");
        }
    }
    Ok(())
}
