//! `shoal service`: thin shells over the daemon's `Control` service. Specs are built in [`spec`],
//! output in [`format`] and the convergence display in [`progress`], all pure; this module only
//! calls the daemon and prints.

pub(crate) mod format;
pub(crate) mod progress;
pub(crate) mod spec;

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use shoal_proto::api;
use shoal_proto::api::control_client::ControlClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::client::{Daemon, api_error, daemon_error};
use crate::swarm::version_of;

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Creates a service.
    Create(Box<spec::CreateArgs>),
    /// Updates a service.
    Update(Box<UpdateCommand>),
    /// Returns a service to its previous spec.
    Rollback {
        service: String,
        /// Exits immediately instead of waiting for the service to converge.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Suppresses progress output.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Scales one or more replicated services: SERVICE=REPLICAS...
    Scale {
        #[arg(required = true)]
        services: Vec<String>,
        /// Exits immediately instead of waiting for the services to converge.
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Lists services.
    #[command(alias = "list")]
    Ls {
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Lists the tasks of one or more services.
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        listing: TaskListArgs,
    },
    /// Shows services in detail.
    Inspect {
        /// Prints a human-readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Removes services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Prints the logs of a service's (or one task's) containers, from every node.
    Logs(LogsArgs),
}

#[derive(Args)]
pub(crate) struct UpdateCommand {
    #[command(flatten)]
    args: spec::UpdateArgs,
    /// With --image: does not check that the image exists on this node.
    #[arg(long)]
    no_resolve_image: bool,
    /// Returns to the previous spec (as `service rollback`); takes no other change.
    #[arg(long)]
    rollback: bool,
    service: String,
}

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// A service or task (name, id or unique id prefix).
    target: String,
    /// Keeps following new output.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines of each task, or `all`.
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Shows timestamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Leaves task IDs out of the prefix.
    #[arg(long)]
    no_task_ids: bool,
    /// Prints full task IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Prints the output without the name@node prefix.
    #[arg(long)]
    raw: bool,
    /// Prints IDs instead of service and node names.
    #[arg(long)]
    no_resolve: bool,
}

pub(crate) async fn run(host: &str, command: ServiceCommand) -> anyhow::Result<()> {
    // Flags are checked before connecting, so a typo is reported as such even without a daemon.
    match command {
        ServiceCommand::Create(args) => {
            let spec = spec::create_spec(&args, &lookup_env)?;
            create(&mut Daemon::connect(host).await?, *args, spec).await
        }
        ServiceCommand::Update(command) => {
            update(&mut Daemon::connect(host).await?, *command).await
        }
        ServiceCommand::Rollback {
            service,
            detach,
            quiet,
        } => rollback(&mut Daemon::connect(host).await?, &service, detach, quiet).await,
        ServiceCommand::Scale { services, detach } => {
            let mut errors = Vec::new();
            let mut parsed = Vec::new();
            for argument in &services {
                match spec::parse_scale_arg(argument) {
                    Ok(target) => parsed.push(target),
                    Err(error) => errors.push(error.to_string()),
                }
            }
            if parsed.is_empty() {
                bail!("{}", errors.join("\n"));
            }
            scale(&mut Daemon::connect(host).await?, parsed, errors, detach).await
        }
        ServiceCommand::Ls { quiet, format } => {
            let json = crate::output::json_format(format)?;
            ls(&mut Daemon::connect(host).await?, quiet, json).await
        }
        ServiceCommand::Ps { services, listing } => {
            let listing = listing.check()?;
            ps(&mut Daemon::connect(host).await?, services, listing).await
        }
        ServiceCommand::Inspect { pretty, services } => {
            inspect(&mut Daemon::connect(host).await?, services, pretty).await
        }
        ServiceCommand::Rm { services } => rm(&mut Daemon::connect(host).await?, services).await,
        ServiceCommand::Logs(args) => {
            let tail = match args.tail.as_str() {
                "all" => None,
                n => Some(n.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("invalid --tail {n:?}: use a number of lines or 'all'")
                })?),
            };
            logs(&mut Daemon::connect(host).await?, args, tail).await
        }
    }
}

/// Checks that this node's engine has `image`, unless told not to.
pub(crate) async fn resolve_image(daemon: &mut Daemon, image: &str) -> anyhow::Result<()> {
    match daemon
        .engine
        .inspect_image(shoal_proto::engine::InspectImageRequest {
            name: image.to_owned(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => bail!(
            "image {image} not found on this node: load it with 'shoal image import|load|pull' first, or pass --no-resolve-image to let each node find it"
        ),
        Err(status) => Err(daemon_error(status)),
    }
}

async fn get_service(
    control: &mut ControlClient<Channel>,
    reference: &str,
) -> anyhow::Result<api::Service> {
    control
        .get_service(api::GetServiceRequest {
            service: reference.to_owned(),
        })
        .await
        .map_err(api_error)?
        .into_inner()
        .service
        .with_context(|| format!("the daemon returned no service for {reference}"))
}

fn lookup_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

async fn create(
    daemon: &mut Daemon,
    args: spec::CreateArgs,
    spec: api::ServiceSpec,
) -> anyhow::Result<()> {
    if !args.no_resolve_image {
        resolve_image(daemon, &args.image).await?;
    }
    let service = daemon
        .control
        .create_service(api::CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(api_error)?
        .into_inner()
        .service
        .context("the daemon created the service but did not return it: see 'shoal service ls'")?;
    println!("{}", service.id);
    if !args.detach {
        wait_for_service(
            &mut daemon.control,
            &service.id,
            args.quiet,
            progress::Expecting::Update,
        )
        .await?;
    }
    Ok(())
}

async fn update(daemon: &mut Daemon, command: UpdateCommand) -> anyhow::Result<()> {
    if command.rollback {
        let output_flags_only = spec::UpdateArgs {
            detach: command.args.detach,
            quiet: command.args.quiet,
            ..spec::UpdateArgs::default()
        };
        if command.args != output_flags_only || command.no_resolve_image {
            bail!(
                "other flags may not be combined with --rollback: roll back first, then update with the flags"
            );
        }
        return rollback(
            daemon,
            &command.service,
            command.args.detach,
            command.args.quiet,
        )
        .await;
    }
    if let Some(image) = &command.args.image
        && !command.no_resolve_image
    {
        resolve_image(daemon, image).await?;
    }
    let network_ids = network_ids(daemon, &spec::network_references(&command.args)?).await?;
    let updated = change_service(&mut daemon.control, &command.service, |current| {
        let spec = spec::update_spec(
            current.spec.clone().unwrap_or_default(),
            &command.args,
            &lookup_env,
            &network_ids,
        )?;
        Ok(api::UpdateServiceRequest {
            spec: Some(spec),
            ..Default::default()
        })
    })
    .await?;
    println!("{}", command.service);
    if !command.args.detach {
        wait_for_service(
            &mut daemon.control,
            &updated.id,
            command.args.quiet,
            progress::Expecting::Update,
        )
        .await?;
    }
    Ok(())
}

/// The id of each network `references` names (name, id or unique id prefix), as the manager
/// resolves it.
async fn network_ids(
    daemon: &mut Daemon,
    references: &[String],
) -> anyhow::Result<spec::NetworkIds> {
    let mut ids = spec::NetworkIds::new();
    for reference in references {
        let network = daemon
            .control
            .get_network(api::GetNetworkRequest {
                network: reference.clone(),
            })
            .await
            .map_err(api_error)?
            .into_inner()
            .network
            .with_context(|| format!("the daemon returned no network for {reference}"))?;
        ids.insert(reference.clone(), network.id);
    }
    Ok(ids)
}

/// The names of the swarm's networks by id, for `inspect --pretty`.
async fn network_names(daemon: &mut Daemon) -> anyhow::Result<HashMap<String, String>> {
    Ok(daemon
        .control
        .list_networks(api::ListNetworksRequest::default())
        .await
        .map_err(api_error)?
        .into_inner()
        .networks
        .into_iter()
        .map(|network| {
            let name = network
                .spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .map(|annotations| annotations.name.clone())
                .unwrap_or_default();
            (network.id, name)
        })
        .collect())
}

/// `service rollback` and `service update --rollback`: the manager swaps in the previous spec,
/// and the updater rolls the tasks back with the rollback settings.
async fn rollback(
    daemon: &mut Daemon,
    reference: &str,
    detach: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let service = change_service(&mut daemon.control, reference, |_| {
        Ok(api::UpdateServiceRequest {
            rollback: api::update_service_request::Rollback::Previous as i32,
            ..Default::default()
        })
    })
    .await?;
    println!("{reference}");
    if !detach {
        wait_for_service(
            &mut daemon.control,
            &service.id,
            quiet,
            progress::Expecting::Rollback,
        )
        .await?;
    }
    Ok(())
}

/// Version conflicts a service change retries on a fresh read before giving up.
const CONFLICT_RETRIES: usize = 5;

/// Reads the service, asks `change` for the update of what was read (its `service` and
/// `version` are filled in here), and sends it. The updater writes a service's update status
/// as it goes, so the read can be stale by the time the change arrives; such a conflict is
/// retried on a fresh read. Returns the service as read.
async fn change_service(
    control: &mut ControlClient<Channel>,
    reference: &str,
    change: impl Fn(&api::Service) -> anyhow::Result<api::UpdateServiceRequest>,
) -> anyhow::Result<api::Service> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = get_service(control, reference).await?;
        let request = api::UpdateServiceRequest {
            service: current.id.clone(),
            version: version_of(current.meta.as_ref()),
            ..change(&current)?
        };
        match control.update_service(request).await {
            Ok(_) => return Ok(current),
            Err(status) if status.code() == tonic::Code::Aborted && attempt < CONFLICT_RETRIES => {}
            Err(status) => return Err(api_error(status)),
        }
    }
}

async fn scale(
    daemon: &mut Daemon,
    targets: Vec<(String, u64)>,
    mut errors: Vec<String>,
    detach: bool,
) -> anyhow::Result<()> {
    let mut scaled = Vec::new();
    for (reference, replicas) in targets {
        let result = change_service(&mut daemon.control, &reference, |current| {
            Ok(api::UpdateServiceRequest {
                spec: Some(spec::scale_spec(
                    current.spec.clone().unwrap_or_default(),
                    replicas,
                )?),
                ..Default::default()
            })
        })
        .await
        .map(|service| service.id);
        match result {
            Ok(id) => {
                println!("{reference} scaled to {replicas}");
                scaled.push((reference, id));
            }
            Err(error) => errors.push(format!("{reference}: {error:#}")),
        }
    }
    if !detach {
        for (reference, id) in scaled {
            let waited =
                wait_for_service(&mut daemon.control, &id, false, progress::Expecting::Update)
                    .await;
            if let Err(error) = waited {
                errors.push(format!("{reference}: {error:#}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// Follows the progress the manager pushes (`ServiceProgress`) and shows docker's progress
/// display until the service converges, can't converge, is removed, or the user presses Ctrl-C.
pub(crate) async fn wait_for_service(
    control: &mut ControlClient<Channel>,
    service_id: &str,
    quiet: bool,
    expecting: progress::Expecting,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    let mut screen = progress::Screen::new(stdout.is_terminal());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut rollback_reason = None;
    let removed = || {
        anyhow::anyhow!(
            "service {service_id} was removed while waiting for it to converge: see 'shoal service ls'"
        )
    };
    let mut pushed = match control
        .service_progress(api::ServiceProgressRequest {
            service: service_id.to_owned(),
        })
        .await
    {
        Ok(pushed) => pushed.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => return Err(removed()),
        Err(status) => return Err(api_error(status)),
    };
    loop {
        let message = tokio::select! {
            message = pushed.message() => message,
            _ = &mut interrupted => {
                if !quiet {
                    println!("Operation continuing in background.");
                    println!("Use `shoal service ps {service_id}` to check progress.");
                }
                return Ok(());
            }
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => bail!(
                "the manager stopped reporting {service_id}'s progress (a leader change?); it goes on in the background: see 'shoal service ps {service_id}'"
            ),
            Err(status) if status.code() == tonic::Code::NotFound => return Err(removed()),
            Err(status) => return Err(api_error(status)),
        };
        if let Some(reason) = progress::rollback_reason(&response) {
            rollback_reason = Some(reason);
        }
        let reference = response
            .service
            .as_ref()
            .and_then(|service| service.spec.as_ref())
            .and_then(|spec| spec.annotations.as_ref())
            .map_or(service_id, |annotations| annotations.name.as_str());
        let outcome =
            progress::outcome(&response, reference, expecting, rollback_reason.as_deref());
        let mut lines = progress::render(&response);
        if let progress::Outcome::Converged(closing) = &outcome {
            lines.extend(closing.iter().cloned());
        }
        if !quiet {
            let frame = screen.frame(&lines);
            if !frame.is_empty() {
                let _ = stdout.write_all(frame.as_bytes());
                let _ = stdout.flush();
            }
        }
        match outcome {
            progress::Outcome::Waiting => {}
            progress::Outcome::Converged(_) => return Ok(()),
            progress::Outcome::Failed(message) => bail!(message),
        }
    }
}

async fn ls(daemon: &mut Daemon, quiet: bool, json: bool) -> anyhow::Result<()> {
    let response = daemon
        .control
        .list_services(api::ListServicesRequest {})
        .await
        .map_err(api_error)?
        .into_inner();
    let rows = format::service_rows(&response.services, &response.statuses);
    format::print_rows(&rows, &format::SERVICE_HEADER, quiet, json);
    Ok(())
}

async fn service_names(daemon: &mut Daemon) -> anyhow::Result<HashMap<String, String>> {
    Ok(daemon
        .control
        .list_services(api::ListServicesRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .services
        .iter()
        .map(|s| (s.id.clone(), format::service_name(s).to_owned()))
        .collect())
}

async fn node_names(daemon: &mut Daemon) -> anyhow::Result<HashMap<String, String>> {
    Ok(daemon
        .control
        .list_nodes(api::ListNodesRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| {
            let hostname = n.description.map(|d| d.hostname).unwrap_or_default();
            let name = if hostname.is_empty() {
                n.id.clone()
            } else {
                hostname
            };
            (n.id, name)
        })
        .collect())
}

/// How `service ps`, and `stack ps` which shares its flags, list tasks.
#[derive(clap::Args, Debug)]
pub(crate) struct TaskListArgs {
    /// Prints only task IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Does not truncate IDs, images and errors.
    #[arg(long)]
    no_trunc: bool,
    /// Prints IDs instead of service and node names.
    #[arg(long)]
    no_resolve: bool,
    /// `json` prints one JSON object per line.
    #[arg(long)]
    format: Option<String>,
    /// desired-state=running|shutdown|accepted, id=, name= or node= (repeatable).
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
}

/// [`TaskListArgs`] once checked, before anything is asked of the daemon.
pub(crate) struct TaskListing {
    filter: format::TaskFilter,
    quiet: bool,
    truncate: bool,
    no_resolve: bool,
    json: bool,
}

impl TaskListArgs {
    pub(crate) fn check(self) -> anyhow::Result<TaskListing> {
        Ok(TaskListing {
            filter: format::TaskFilter::parse(&self.filters)?,
            quiet: self.quiet,
            truncate: !self.no_trunc,
            no_resolve: self.no_resolve,
            json: crate::output::json_format(self.format)?,
        })
    }
}

/// Lists the tasks of `services` (names or ids).
pub(crate) async fn ps(
    daemon: &mut Daemon,
    services: Vec<String>,
    listing: TaskListing,
) -> anyhow::Result<()> {
    let TaskListing {
        filter,
        quiet,
        truncate,
        no_resolve,
        json,
    } = listing;
    let tasks = daemon
        .control
        .list_tasks(api::ListTasksRequest {
            services,
            nodes: Vec::new(),
        })
        .await
        .map_err(api_error)?
        .into_inner()
        .tasks;
    let service_names = service_names(daemon).await?;
    let node_names = node_names(daemon).await?;
    let names = format::TaskNames {
        services: &service_names,
        nodes: &node_names,
        truncate: truncate && !quiet,
        no_resolve,
    };
    let resolving = format::TaskNames {
        no_resolve: false,
        ..names
    };
    let kept: Vec<api::Task> = tasks
        .into_iter()
        .filter(|task| {
            let hostname = node_names.get(&task.node_id).map_or("", String::as_str);
            filter.keeps(task, &format::task_name(task, &resolving), hostname)
        })
        .collect();
    let rows = format::task_rows(&kept, &names, SystemTime::now());
    format::print_rows(&rows, &format::TASK_HEADER, quiet, json);
    Ok(())
}

async fn inspect(daemon: &mut Daemon, references: Vec<String>, pretty: bool) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for reference in references {
        match get_service(&mut daemon.control, &reference).await {
            Ok(mut service) => {
                // As the docker CLI asks with `insertDefaults`: the effective settings.
                if let Some(spec) = service.spec.as_mut() {
                    ::spec::defaults::insert_service_defaults(spec);
                }
                found.push(service);
            }
            Err(error) => errors.push(format!("{error:#}")),
        }
    }
    if pretty {
        let names = if found
            .iter()
            .any(|service| !format::task_networks(service).is_empty())
        {
            network_names(daemon).await?
        } else {
            HashMap::new()
        };
        let pages: Vec<String> = found
            .iter()
            .map(|service| format::service_pretty(service, &names))
            .collect();
        print!("{}", pages.join("\n"));
    } else {
        let documents: Vec<serde_json::Value> = found
            .iter()
            .map(docker_api::shape::service::service_inspect_json)
            .collect();
        println!(
            "{}",
            format::pretty_json(&serde_json::Value::Array(documents))?
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

async fn rm(daemon: &mut Daemon, references: Vec<String>) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for reference in references {
        match daemon
            .control
            .remove_service(api::RemoveServiceRequest {
                service: reference.clone(),
            })
            .await
        {
            Ok(_) => println!("{reference}"),
            Err(status) => errors.push(format!("{:#}", api_error(status))),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// What a log line's prefix needs about the tasks it names, looked up once per task.
struct LogNames {
    no_resolve: bool,
    no_trunc: bool,
    no_task_ids: bool,
    slot_width: usize,
    services: HashMap<String, String>,
    nodes: Option<HashMap<String, String>>,
    prefixes: HashMap<String, String>,
}

impl LogNames {
    async fn prefix(&mut self, daemon: &mut Daemon, message: &api::LogMessage) -> String {
        if let Some(prefix) = self.prefixes.get(&message.task_id) {
            return prefix.clone();
        }
        let service = if self.no_resolve {
            message.service_id.clone()
        } else {
            match self.services.get(&message.service_id) {
                Some(name) => name.clone(),
                None => {
                    let name = get_service(&mut daemon.control, &message.service_id)
                        .await
                        .map(|s| format::service_name(&s).to_owned())
                        .unwrap_or_else(|_| message.service_id.clone());
                    self.services
                        .insert(message.service_id.clone(), name.clone());
                    name
                }
            }
        };
        let node = if self.no_resolve {
            message.node_id.clone()
        } else {
            if self.nodes.is_none() {
                self.nodes = Some(node_names(daemon).await.unwrap_or_default());
            }
            self.nodes
                .as_ref()
                .and_then(|nodes| nodes.get(&message.node_id).cloned())
                .unwrap_or_else(|| message.node_id.clone())
        };
        let slot = daemon
            .control
            .get_task(api::GetTaskRequest {
                task: message.task_id.clone(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().task)
            .map_or(0, |t| t.slot);
        let task_id = if self.no_task_ids {
            None
        } else if self.no_trunc {
            Some(message.task_id.as_str())
        } else {
            Some(format::truncate_id(&message.task_id))
        };
        let prefix = format::log_prefix(&service, slot, task_id, &node, self.slot_width);
        self.prefixes
            .insert(message.task_id.clone(), prefix.clone());
        prefix
    }
}

async fn logs(daemon: &mut Daemon, args: LogsArgs, tail: Option<u64>) -> anyhow::Result<()> {
    let (request, slot_width, tty, services) = match daemon
        .control
        .get_service(api::GetServiceRequest {
            service: args.target.clone(),
        })
        .await
    {
        Ok(response) => {
            let service = response
                .into_inner()
                .service
                .with_context(|| format!("the daemon returned no service for {}", args.target))?;
            let spec = service.spec.clone().unwrap_or_default();
            let width = match &spec.mode {
                Some(api::service_spec::Mode::Replicated(r)) => r.replicas.to_string().len(),
                _ => 1,
            };
            let tty = format::container(spec.task.as_ref()).is_some_and(|c| c.tty);
            let names = HashMap::from([(
                service.id.clone(),
                format::service_name(&service).to_owned(),
            )]);
            let request = api::ServiceLogsRequest {
                services: vec![service.id],
                tasks: Vec::new(),
                follow: args.follow,
                tail,
            };
            (request, width, tty, names)
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            let task = match daemon
                .control
                .get_task(api::GetTaskRequest {
                    task: args.target.clone(),
                })
                .await
            {
                Ok(response) => response
                    .into_inner()
                    .task
                    .with_context(|| format!("the daemon returned no task for {}", args.target))?,
                Err(status) if status.code() == tonic::Code::NotFound => bail!(
                    "no such task or service: {}: see 'shoal service ls' and 'shoal service ps SERVICE'",
                    args.target
                ),
                Err(status) => return Err(api_error(status)),
            };
            let tty = format::container(task.spec.as_ref()).is_some_and(|c| c.tty);
            let request = api::ServiceLogsRequest {
                services: Vec::new(),
                tasks: vec![task.id],
                follow: args.follow,
                tail,
            };
            (request, task.slot.to_string().len(), tty, HashMap::new())
        }
        Err(status) => return Err(api_error(status)),
    };
    if tty && !args.raw {
        bail!("tty service logs only supported with --raw: run again with --raw");
    }
    let mut names = LogNames {
        no_resolve: args.no_resolve,
        no_trunc: args.no_trunc,
        no_task_ids: args.no_task_ids,
        slot_width,
        services,
        nodes: None,
        prefixes: HashMap::new(),
    };
    let mut stream = daemon
        .control
        .service_logs(request)
        .await
        .map_err(api_error)?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(message) = stream.next().await {
        let message = message.map_err(api_error)?;
        let mut head = String::new();
        if args.timestamps {
            let time =
                format::system_time(message.timestamp.as_ref()).unwrap_or(std::time::UNIX_EPOCH);
            head.push_str(&::spec::time::rfc3339(time));
            head.push(' ');
        }
        if !args.raw {
            head.push_str(&names.prefix(daemon, &message).await);
        }
        let mut out = Vec::new();
        for line in message.data.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        if message.stream == api::log_message::Stream::Stderr as i32 {
            let _ = stderr.write_all(&out);
        } else {
            let _ = stdout.write_all(&out);
            let _ = stdout.flush();
        }
    }
    Ok(())
}
