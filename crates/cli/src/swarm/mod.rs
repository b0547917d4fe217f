//! `shoal swarm`, `shoal info` and `shoal node`: thin shells over the daemon's `Swarm` and
//! `Control` services; what they print and send is built in [`format`].

pub(crate) mod format;

use anyhow::Context as _;
use clap::Subcommand;
use shoal_proto::api;
use spec::enums::TextForm as _;

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
        /// On a manager of a swarm that lost its quorum: make its state a new one-manager swarm.
        #[arg(long)]
        force_new_cluster: bool,
        /// Enables manager autolocking: a restarted manager needs the unlock key to start.
        #[arg(long)]
        autolock: bool,
    },
    /// Joins a swarm as a worker or a manager, as the token says.
    Join {
        /// The join token a manager's 'swarm join-token' printed.
        #[arg(long)]
        token: String,
        /// Address other nodes reach this one at: IP, or IP:PORT.
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Address the cluster port listens on if this node manages (default 0.0.0.0:2377).
        #[arg(long)]
        listen_addr: Option<String>,
        /// A manager's address, HOST:PORT.
        remote: String,
    },
    /// Prints the command that joins a node as a worker or a manager.
    JoinToken {
        /// Prints only the token.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Replaces the token; the old one stops working at once.
        #[arg(long)]
        rotate: bool,
        /// worker or manager.
        role: String,
    },
    /// Prints the swarm's root CA certificate, or moves the swarm to a new one.
    Ca {
        /// Makes a new root CA and moves every node to it, with no downtime: nodes trust both
        /// roots until all have certificates from the new one. The join tokens change.
        #[arg(long)]
        rotate: bool,
        /// Returns once the rotation has started instead of when it is done.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Prints nothing while waiting.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Leaves the swarm.
    Leave {
        /// Leaves even when this manager's leaving breaks the managers' quorum.
        #[arg(short = 'f', long)]
        force: bool,
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
        /// Turns manager autolocking on (`--autolock` or `--autolock=true`) or off
        /// (`--autolock=false`).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        autolock: Option<bool>,
    },
    /// Unlocks a manager that restarted locked (autolock), with the unlock key read from stdin.
    Unlock,
    /// Prints the key that unlocks a restarted manager, or replaces it.
    UnlockKey {
        /// Prints only the key.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Replaces the key; managers that restart after they re-sealed with it need the new one.
        #[arg(long)]
        rotate: bool,
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
    /// Makes workers managers.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Makes managers workers; refused when the swarm would lose its quorum.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Removes nodes from the swarm; their certificates are revoked.
    #[command(alias = "remove")]
    Rm {
        /// Removes a node that is not down.
        #[arg(short = 'f', long)]
        force: bool,
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
            force_new_cluster,
            autolock,
        } => {
            let request = format::init_request(&format::InitOptions {
                advertise_addr,
                listen_addr,
                default_addr_pool,
                default_addr_pool_mask_length,
                task_history_limit,
                dispatcher_heartbeat,
                force_new_cluster,
                autolock,
            })?;
            init(host, request, autolock).await?;
        }
        SwarmCommand::Update {
            task_history_limit,
            dispatcher_heartbeat,
            cert_expiry,
            autolock,
        } => {
            let update = format::ClusterUpdate {
                task_history_limit,
                dispatcher_heartbeat,
                cert_expiry,
                autolock,
            };
            swarm_update(host, update).await?;
        }
        SwarmCommand::Unlock => unlock(host).await?,
        SwarmCommand::UnlockKey { quiet, rotate } => {
            unlock_key_command(host, quiet, rotate).await?
        }
        SwarmCommand::Join {
            token,
            advertise_addr,
            listen_addr,
            remote,
        } => {
            let response = Daemon::connect(host)
                .await?
                .swarm
                .join(api::JoinRequest {
                    remote_addr: remote,
                    token,
                    advertise_addr: advertise_addr.unwrap_or_default(),
                    listen_addr: listen_addr.unwrap_or_default(),
                })
                .await
                .map_err(api_error)?
                .into_inner();
            println!("This node joined a swarm as a {}.", response.role().text());
        }
        SwarmCommand::JoinToken {
            quiet,
            rotate,
            role,
        } => join_token(host, &role, quiet, rotate).await?,
        SwarmCommand::Ca {
            rotate,
            detach,
            quiet,
        } => ca(host, rotate, detach, quiet).await?,
        SwarmCommand::Leave { force } => {
            Daemon::connect(host)
                .await?
                .swarm
                .leave(api::LeaveRequest { force })
                .await
                .map_err(api_error)?;
            println!("Node left the swarm.");
        }
    }
    Ok(())
}

/// `swarm init`: founds the swarm; with autolock, prints the unlock key.
async fn init(host: &str, request: api::InitRequest, autolock: bool) -> anyhow::Result<()> {
    let mut daemon = Daemon::connect(host).await?;
    let response = daemon
        .swarm
        .init(request)
        .await
        .map_err(api_error)?
        .into_inner();
    println!(
        "Swarm initialized: current node ({}) is now a manager.",
        response.node_id
    );
    if autolock {
        println!();
        print!(
            "{}",
            format::unlock_key_text(&unlock_key(&mut daemon).await?)
        );
    }
    Ok(())
}

/// `swarm update`: changes the cluster's settings; turning autolock on prints the unlock key.
async fn swarm_update(host: &str, update: format::ClusterUpdate) -> anyhow::Result<()> {
    // Durations are checked before anything is read or sent.
    format::update_cluster_spec(api::ClusterSpec::default(), &update)?;
    let mut daemon = Daemon::connect(host).await?;
    let cluster = get_cluster(&mut daemon).await?;
    let version = version_of(cluster.meta.as_ref());
    let was_locking = format::autolock_of(cluster.spec.as_ref());
    let spec = format::update_cluster_spec(cluster.spec.unwrap_or_default(), &update)?;
    let locking = format::autolock_of(Some(&spec));
    daemon
        .control
        .update_cluster(api::UpdateClusterRequest {
            version,
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .map_err(api_error)?;
    println!("Swarm updated.");
    if locking && !was_locking {
        print!(
            "{}",
            format::unlock_key_text(&unlock_key(&mut daemon).await?)
        );
    }
    Ok(())
}

/// `swarm unlock`: gives a locked manager its unlock key.
async fn unlock(host: &str) -> anyhow::Result<()> {
    let mut daemon = Daemon::connect(host).await?;
    let info = daemon
        .swarm
        .info(api::InfoRequest {})
        .await
        .map_err(api_error)?
        .into_inner();
    use api::info_response::LocalNodeState;
    match info.local_node_state() {
        LocalNodeState::Inactive => anyhow::bail!("This node is not part of a swarm"),
        LocalNodeState::Locked => {}
        _ => anyhow::bail!("swarm is not locked"),
    }
    let unlock_key = read_unlock_key()?;
    daemon
        .swarm
        .unlock(api::UnlockRequest { unlock_key })
        .await
        .map_err(api_error)?;
    Ok(())
}

/// `swarm unlock-key`: prints the unlock key, or replaces it first.
async fn unlock_key_command(host: &str, quiet: bool, rotate: bool) -> anyhow::Result<()> {
    let mut daemon = Daemon::connect(host).await?;
    if rotate {
        let cluster = get_cluster(&mut daemon).await?;
        if !format::autolock_of(cluster.spec.as_ref()) {
            anyhow::bail!(
                "cannot rotate because autolock is not turned on: turn it on with 'shoal swarm update --autolock=true'"
            );
        }
        request_rotation(
            &mut daemon,
            &cluster,
            api::UpdateClusterRequest {
                rotate_manager_unlock_key: true,
                ..Default::default()
            },
        )
        .await?;
        if !quiet {
            println!("Successfully rotated manager unlock key.\n");
        }
    }
    let key = unlock_key(&mut daemon).await?;
    if quiet {
        println!("{key}");
    } else {
        print!("{}", format::unlock_key_text(&key));
    }
    Ok(())
}

/// `swarm join-token`: prints the join command (or token) for a role, or replaces it first.
async fn join_token(host: &str, role: &str, quiet: bool, rotate: bool) -> anyhow::Result<()> {
    let role = format::token_role(role)?;
    let mut daemon = Daemon::connect(host).await?;
    let mut cluster = get_cluster(&mut daemon).await?;
    if rotate {
        cluster = request_rotation(
            &mut daemon,
            &cluster,
            api::UpdateClusterRequest {
                rotate_worker_token: role == api::NodeRole::Worker,
                rotate_manager_token: role == api::NodeRole::Manager,
                ..Default::default()
            },
        )
        .await?
        .context("the daemon returned no cluster after rotating the token")?;
        if !quiet {
            println!("Successfully rotated {} join token.\n", role.text());
        }
    }
    let tokens = cluster
        .root_ca
        .and_then(|root| root.join_tokens)
        .context("the cluster holds no join tokens")?;
    let token = match role {
        api::NodeRole::Worker => tokens.worker,
        api::NodeRole::Manager => tokens.manager,
    };
    let info = daemon
        .swarm
        .info(api::InfoRequest {})
        .await
        .map_err(api_error)?
        .into_inner();
    let manager_addr = info
        .remote_managers
        .get(&info.node_id)
        .cloned()
        .unwrap_or_else(|| format!("{}:2377", info.node_addr));
    print!(
        "{}",
        format::join_token_text(role, &token, &manager_addr, quiet)
    );
    Ok(())
}

/// `swarm ca`: prints the root CA certificate; with `--rotate`, moves the swarm to a new root
/// first, waiting for every node unless detached.
async fn ca(host: &str, rotate: bool, detach: bool, quiet: bool) -> anyhow::Result<()> {
    let mut daemon = Daemon::connect(host).await?;
    let mut cluster = get_cluster(&mut daemon).await?;
    if rotate {
        request_rotation(
            &mut daemon,
            &cluster,
            api::UpdateClusterRequest {
                rotate_root_ca: true,
                ..Default::default()
            },
        )
        .await?;
        if detach {
            println!("Root CA rotation started; 'shoal swarm ca' shows the root in use.");
            return Ok(());
        }
        cluster = wait_for_root_rotation(&mut daemon, quiet).await?;
    }
    let root = cluster.root_ca.unwrap_or_default();
    print!("{}", String::from_utf8_lossy(&root.ca_cert));
    Ok(())
}

/// Where a root rotation stands: done (the cluster with the new root), or how far it has come.
enum RotationState {
    Done(Box<api::Cluster>),
    Progress(String),
}

async fn rotation_state(daemon: &mut Daemon) -> anyhow::Result<RotationState> {
    let cluster = get_cluster(daemon).await?;
    if cluster
        .root_ca
        .as_ref()
        .is_none_or(|root| root.root_rotation.is_none())
    {
        return Ok(RotationState::Done(Box::new(cluster)));
    }
    let nodes = daemon
        .control
        .list_nodes(api::ListNodesRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .nodes;
    Ok(
        match spec::root_rotation::root_rotation_progress(&cluster, &nodes) {
            Some(progress) => RotationState::Progress(format::rotation_progress(&progress)),
            None => RotationState::Done(Box::new(cluster)),
        },
    )
}

/// Waits until every node has moved to the new root, saying how many have as they do; returns
/// the cluster with the new root in place.
async fn wait_for_root_rotation(daemon: &mut Daemon, quiet: bool) -> anyhow::Result<api::Cluster> {
    // A call that fails (a leader election, say) is tried again for a while.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
    let mut last = None;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        match rotation_state(daemon).await {
            Ok(RotationState::Done(cluster)) => {
                if !quiet {
                    eprintln!("every node moved to the new root CA");
                }
                return Ok(*cluster);
            }
            Ok(RotationState::Progress(progress)) => {
                failing_since = None;
                if !quiet && last.as_ref() != Some(&progress) {
                    eprintln!("rotating the root CA: {progress}");
                    last = Some(progress);
                }
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(error);
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The swarm's unlock key; an error when autolock is off, as docker's.
async fn unlock_key(daemon: &mut Daemon) -> anyhow::Result<String> {
    let key = daemon
        .control
        .get_unlock_key(api::GetUnlockKeyRequest {})
        .await
        .map_err(|status| api_error(status).context("could not fetch unlock key"))?
        .into_inner()
        .unlock_key;
    if key.is_empty() {
        anyhow::bail!(
            "no unlock key is set: autolock is off; turn it on with 'shoal swarm update --autolock=true'"
        );
    }
    Ok(key)
}

/// Reads the unlock key: typed at a prompt without echo when stdin is a terminal (rpassword
/// prompts and reads on the terminal), else the first line piped in.
fn read_unlock_key() -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        rpassword::prompt_password("Enter unlock key: ")
            .context("reading the unlock key from the terminal")?
    } else {
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .context("reading the unlock key from stdin")?;
        line
    };
    Ok(line.trim().to_owned())
}

/// Asks for the rotation that `rotation` flags (a join token, the unlock key, the root CA) on
/// `cluster` as read, its spec unchanged; returns the cluster as it is afterwards.
async fn request_rotation(
    daemon: &mut Daemon,
    cluster: &api::Cluster,
    rotation: api::UpdateClusterRequest,
) -> anyhow::Result<Option<api::Cluster>> {
    Ok(daemon
        .control
        .update_cluster(api::UpdateClusterRequest {
            version: version_of(cluster.meta.as_ref()),
            spec: cluster.spec.clone(),
            ..rotation
        })
        .await
        .map_err(api_error)?
        .into_inner()
        .cluster)
}

async fn get_cluster(daemon: &mut Daemon) -> anyhow::Result<api::Cluster> {
    daemon
        .control
        .get_cluster(api::GetClusterRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .cluster
        .context("the daemon returned no cluster: is this node a manager? run 'shoal info'")
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
            println!(
                "{}",
                docker_api::shape::swarm::swarm_info_json(&info, cluster.as_ref())
            )
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
        crate::output::json_format(format.clone())?;
    }
    let mut daemon = Daemon::connect(host).await?;
    match command {
        NodeCommand::Ls { quiet, format } => {
            let json = crate::output::json_format(format)?;
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
            // Only JSON shows the TLS status, which needs the cluster's root.
            let cluster_tls = if json && !nodes.is_empty() {
                get_cluster(&mut daemon)
                    .await?
                    .root_ca
                    .as_ref()
                    .and_then(spec::tls_info::of_cluster)
            } else {
                None
            };
            let rows = format::node_rows(&nodes, &local, cluster_tls.as_ref());
            print_rows(&rows, &format::NODE_HEADER, quiet, json);
        }
        NodeCommand::Inspect { pretty, nodes } => {
            let mut found = Vec::new();
            for reference in nodes {
                let reference = node_reference(&mut daemon, reference).await?;
                found.push(get_node(&mut daemon, &reference).await?);
            }
            if pretty {
                let pages: Vec<String> = found.iter().map(format::node_pretty).collect();
                print!("{}", pages.join("\n"));
            } else {
                let documents: Vec<serde_json::Value> = found
                    .iter()
                    .map(docker_api::shape::node::node_inspect_json)
                    .collect();
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
            let current = get_node(&mut daemon, &reference).await?;
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
        NodeCommand::Promote { nodes } => {
            for node in nodes {
                let id = set_desired_role(&mut daemon, &node, api::NodeRole::Manager).await?;
                match id {
                    None => println!("Node {node} is already a manager."),
                    Some(_) => println!("Node {node} promoted to a manager in the swarm."),
                }
            }
        }
        NodeCommand::Demote { nodes } => {
            for node in nodes {
                let id = set_desired_role(&mut daemon, &node, api::NodeRole::Worker).await?;
                match id {
                    None => println!("Node {node} is already a worker."),
                    Some(_) => println!("Manager {node} demoted in the swarm."),
                }
            }
        }
        NodeCommand::Rm { force, nodes } => {
            let mut failed = Vec::new();
            for node in nodes {
                let reference = node_reference(&mut daemon, node.clone()).await?;
                match daemon
                    .control
                    .remove_node(api::RemoveNodeRequest {
                        node: reference,
                        force,
                    })
                    .await
                {
                    Ok(_) => println!("{node}"),
                    Err(status) => failed.push(format!("{node}: {}", status.message())),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("\n"));
            }
        }
    }
    Ok(())
}

async fn get_node(daemon: &mut Daemon, reference: &str) -> anyhow::Result<api::Node> {
    daemon
        .control
        .get_node(api::GetNodeRequest {
            node: reference.to_owned(),
        })
        .await
        .map_err(api_error)?
        .into_inner()
        .node
        .with_context(|| format!("the daemon returned no node for {reference}"))
}

/// Sets a node's desired role; `None` when it already has it. The node's object also changes
/// on its own (each session the node opens records its status), so a version conflict is
/// re-read and tried again.
async fn set_desired_role(
    daemon: &mut Daemon,
    node: &str,
    role: api::NodeRole,
) -> anyhow::Result<Option<String>> {
    const ATTEMPTS: usize = 5;
    let reference = node_reference(daemon, node.to_owned()).await?;
    let mut attempt = 1;
    loop {
        let current = get_node(daemon, &reference).await?;
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.desired_role() == role {
            return Ok(None);
        }
        spec.set_desired_role(role);
        let updated = daemon
            .control
            .update_node(api::UpdateNodeRequest {
                node: current.id.clone(),
                version: version_of(current.meta.as_ref()),
                spec: Some(spec),
            })
            .await;
        match updated {
            Ok(_) => return Ok(Some(current.id)),
            Err(status) if status.code() == tonic::Code::Aborted && attempt < ATTEMPTS => {
                attempt += 1;
            }
            Err(status) => return Err(api_error(status)),
        }
    }
}
