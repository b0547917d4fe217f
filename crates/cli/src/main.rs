//! `shoal`: one binary for the node daemon (`shoal daemon`), the client verbs (`shoal image`,
//! `shoal container`, `shoal swarm`, `shoal service`, …) and the hidden helpers the engine
//! re-executes (`shim`, `init`, `runtime-exec`). The only crate that knows clap.

mod client;
mod network;
mod payload;
mod service;
mod stack;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shoal_proto::engine as pb;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A Docker-Swarm-like cluster orchestrator in one binary"
)]
struct Cli {
    /// Daemon socket to talk to (or, for `daemon`, to listen on).
    #[arg(
        short = 'H',
        long = "host",
        global = true,
        env = "SHOAL_HOST",
        default_value = "unix:///run/shoal/shoal.sock"
    )]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the node daemon in the foreground.
    Daemon {
        /// Where images, containers and volumes are kept.
        #[arg(long, default_value = "/var/lib/shoal")]
        data_root: PathBuf,
    },
    /// Manages images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manages containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manages stacks (compose files).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manages the swarm.
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Manages swarm nodes.
    #[command(subcommand)]
    Node(swarm::NodeCommand),
    /// Manages swarm services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manages swarm secrets.
    #[command(subcommand)]
    Secret(payload::PayloadCommand),
    /// Manages swarm configs.
    #[command(subcommand)]
    Config(payload::PayloadCommand),
    /// Manages swarm networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Shows this daemon's place in a swarm.
    Info {
        /// `json` prints docker's info object; `{{json .Swarm}}` only its Swarm part.
        #[arg(short = 'f', long)]
        format: Option<String>,
    },
    /// The per-container shim (started by the daemon).
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        data_root: PathBuf,
        #[arg(long)]
        id: String,
        /// Tidies up after a container whose shim died instead of starting one.
        #[arg(long)]
        cleanup: bool,
    },
    /// PID 1 for `--init` containers.
    #[command(hide = true)]
    Init {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs a command in a container with the built-in runtime (healthchecks).
    #[command(hide = true)]
    RuntimeExec {
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Imports a root filesystem tarball (or - for stdin) as a one-layer image.
    Import { file: String, reference: String },
    /// Loads images from a docker-save or OCI archive.
    Load {
        #[arg(short = 'i', long = "input")]
        input: String,
    },
    /// Pulls an image from a registry.
    Pull {
        reference: String,
        /// Uses plain HTTP.
        #[arg(long)]
        insecure: bool,
    },
    /// Lists images.
    #[command(alias = "list")]
    Ls {
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Shows images in detail.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes images.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Creates and starts a container.
    Run(Box<RunArgs>),
    /// Lists containers.
    #[command(alias = "list", alias = "ps")]
    Ls {
        /// Shows all containers, not only running ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Prints a container's logs.
    Logs {
        container: String,
        /// Keeps following new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        tail: Option<String>,
    },
    /// Stops containers: stop signal, grace period, SIGKILL.
    Stop {
        #[arg(required = true)]
        containers: Vec<String>,
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time")]
        time: Option<u64>,
    },
    /// Removes containers.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        containers: Vec<String>,
        /// Kills running containers first.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Shows containers in detail.
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Starts created or exited containers again.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Waits for containers to stop and prints their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Runs in the background and prints the ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Removes the container when it exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// KEY=value (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Memory limit, e.g. 16m.
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPU limit, e.g. 1.5.
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Runs an init as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    #[arg(long)]
    entrypoint: Option<String>,
    /// uid[:gid] or name[:group].
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Mounts the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// SRC:DST[:ro] where SRC is an absolute host path or a volume name (repeatable).
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// A tmpfs at this path (repeatable).
    #[arg(long)]
    tmpfs: Vec<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Shell command run in the container as a healthcheck.
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long, default_value = "30s")]
    health_interval: String,
    #[arg(long, default_value = "30s")]
    health_timeout: String,
    #[arg(long, default_value_t = 3)]
    health_retries: u32,
    #[arg(long, default_value = "0s")]
    health_start_period: String,
    /// An external OCI runtime binary (e.g. /usr/sbin/runc) instead of the built-in one.
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Rotates the log file past this size, e.g. 10m.
    #[arg(long)]
    log_max_size: Option<String>,
    /// Log files kept.
    #[arg(long)]
    log_max_files: Option<u32>,
    /// KEY=value (repeatable).
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    /// Adds a Linux capability to the default set, e.g. NET_ADMIN, or ALL (repeatable).
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drops a Linux capability from the default set, or ALL (repeatable).
    #[arg(long)]
    cap_drop: Vec<String>,
    /// A namespaced kernel parameter, e.g. net.core.somaxconn=1024 (repeatable).
    #[arg(long = "sysctl")]
    sysctls: Vec<String>,
    /// A resource limit, NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable).
    #[arg(long = "ulimit")]
    ulimits: Vec<String>,
    /// A supplementary group, by name or number (repeatable).
    #[arg(long = "group-add")]
    groups: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// A Go duration flag (`30s`, `1m30s`), as `spec` parses every duration.
fn duration_flag(flag: &str, text: &str) -> anyhow::Result<pb::Duration> {
    let duration =
        spec::units::parse_duration(text).map_err(|error| error.in_field(format!("--{flag}")))?;
    Ok(spec::time::proto_duration(duration))
}

/// A size flag with binary units (`16m`, `1g`, `1t`), as go-units' `RAMInBytes` parses it.
fn size_flag(flag: &str, text: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = text else { return Ok(0) };
    Ok(spec::units::parse_ram_bytes(text).map_err(|error| error.in_field(format!("--{flag}")))?)
}

fn run_spec(args: RunArgs) -> anyhow::Result<client::RunOptions> {
    let mut mounts = Vec::new();
    for volume in &args.volumes {
        let parts: Vec<&str> = volume.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => anyhow::bail!("invalid volume {volume:?}: use SRC:DST[:ro]"),
        };
        let kind = if source.starts_with('/') {
            pb::mount::Type::Bind
        } else {
            pb::mount::Type::Volume
        };
        mounts.push(pb::Mount {
            r#type: kind as i32,
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
            ..Default::default()
        });
    }
    for target in &args.tmpfs {
        mounts.push(pb::Mount {
            r#type: pb::mount::Type::Tmpfs as i32,
            target: target.clone(),
            ..Default::default()
        });
    }
    let healthcheck = match &args.health_cmd {
        Some(cmd) => Some(pb::Healthcheck {
            test: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            interval: Some(duration_flag("health-interval", &args.health_interval)?),
            timeout: Some(duration_flag("health-timeout", &args.health_timeout)?),
            retries: args.health_retries,
            start_period: Some(duration_flag(
                "health-start-period",
                &args.health_start_period,
            )?),
        }),
        None => None,
    };
    let mut labels = std::collections::HashMap::new();
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    if let Some(cpus) = args.cpus
        && cpus <= 0.0
    {
        anyhow::bail!("--cpus must be positive");
    }
    let spec = pb::ContainerSpec {
        name: args.name.unwrap_or_default(),
        image: args.image,
        entrypoint_set: args.entrypoint.is_some(),
        entrypoint: args.entrypoint.map(|e| vec![e]).unwrap_or_default(),
        command: args.command,
        env: args.env,
        user: args.user.unwrap_or_default(),
        workdir: args.workdir.unwrap_or_default(),
        hostname: args.hostname.unwrap_or_default(),
        read_only_rootfs: args.read_only,
        mounts,
        memory_bytes: size_flag("memory", args.memory.as_deref())?,
        nano_cpus: args.cpus.map(|c| (c * 1e9) as u64).unwrap_or(0),
        pids_limit: args.pids_limit.unwrap_or(0),
        stop_signal: args.stop_signal.unwrap_or_default(),
        stop_timeout: args
            .stop_timeout
            .map(|s| spec::time::proto_duration(std::time::Duration::from_secs(s))),
        healthcheck,
        init: args.init,
        auto_remove: args.rm,
        runtime: args
            .runtime
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        log_max_size_bytes: size_flag("log-max-size", args.log_max_size.as_deref())?,
        log_max_files: args.log_max_files.unwrap_or(0),
        labels,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        ulimits: service::spec::parse_ulimits("ulimit", &args.ulimits)?
            .into_iter()
            .map(|ulimit| pb::Ulimit {
                name: ulimit.name,
                soft: u64::try_from(ulimit.soft).unwrap_or(u64::MAX),
                hard: u64::try_from(ulimit.hard).unwrap_or(u64::MAX),
            })
            .collect(),
        sysctls: service::spec::parse_sysctls("sysctl", &args.sysctls)?,
        groups: args.groups,
    };
    Ok(client::RunOptions {
        detach: args.detach,
        spec,
    })
}

pub(crate) fn json_format(format: Option<String>) -> anyhow::Result<bool> {
    match format.as_deref() {
        None | Some("table") => Ok(false),
        Some("json") | Some("{{json .}}") => Ok(true),
        Some(other) => anyhow::bail!("unsupported --format {other:?}: use 'json' or 'table'"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = cli.host;
    // The helpers run synchronously in a fresh process: they fork, so no runtime threads may exist.
    let result: anyhow::Result<i32> = match cli.command {
        Command::Shim {
            data_root,
            id,
            cleanup,
        } => {
            return exit(if cleanup {
                engine::shim::cleanup_main(&data_root, &id)
            } else {
                engine::shim::shim_main(&data_root, &id)
            });
        }
        Command::Init { args } => return exit(engine::init::init_main(&args)),
        Command::RuntimeExec {
            state_root,
            id,
            args,
        } => engine::runtime::libcontainer_exec(&state_root, &id, args).map_err(Into::into),
        Command::Daemon { data_root } => daemon::run(data_root, &host)
            .map(|()| 0)
            .map_err(Into::into),
        Command::Stack(command) => runtime()
            .and_then(|rt| rt.block_on(stack::run(&host, command)))
            .map(|()| 0),
        Command::Swarm(command) => runtime()
            .and_then(|rt| rt.block_on(swarm::swarm(&host, command)))
            .map(|()| 0),
        Command::Node(command) => runtime()
            .and_then(|rt| rt.block_on(swarm::node(&host, command)))
            .map(|()| 0),
        Command::Service(command) => runtime()
            .and_then(|rt| rt.block_on(service::run(&host, command)))
            .map(|()| 0),
        Command::Secret(command) => runtime()
            .and_then(|rt| rt.block_on(payload::run(&host, payload::Kind::Secret, command)))
            .map(|()| 0),
        Command::Config(command) => runtime()
            .and_then(|rt| rt.block_on(payload::run(&host, payload::Kind::Config, command)))
            .map(|()| 0),
        Command::Network(command) => runtime()
            .and_then(|rt| rt.block_on(network::run(&host, command)))
            .map(|()| 0),
        Command::Info { format } => runtime()
            .and_then(|rt| rt.block_on(swarm::info(&host, format)))
            .map(|()| 0),
        Command::Image(command) => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    ImageCommand::Import { file, reference } => {
                        client::image_import(&host, file, reference).await
                    }
                    ImageCommand::Load { input } => client::image_load(&host, input).await,
                    ImageCommand::Pull {
                        reference,
                        insecure,
                    } => client::image_pull(&host, reference, insecure).await,
                    ImageCommand::Ls { format } => {
                        client::image_ls(&host, json_format(format)?).await
                    }
                    ImageCommand::Inspect { names } => client::image_inspect(&host, names).await,
                    ImageCommand::Rm { names } => client::image_rm(&host, names).await,
                }
                .map(|()| 0)
            })
        }),
        Command::Container(command) => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    ContainerCommand::Run(args) => {
                        client::container_run(&host, run_spec(*args)?).await
                    }
                    ContainerCommand::Ls { all, quiet, format } => {
                        client::container_ls(&host, all, json_format(format)?, quiet)
                            .await
                            .map(|()| 0)
                    }
                    ContainerCommand::Logs {
                        container,
                        follow,
                        tail,
                    } => {
                        let tail =
                            match tail.as_deref() {
                                None | Some("all") => None,
                                Some(n) => Some(n.parse().map_err(|_| {
                                    anyhow::anyhow!("--tail takes a number or 'all'")
                                })?),
                            };
                        client::container_logs(&host, container, follow, tail)
                            .await
                            .map(|()| 0)
                    }
                    ContainerCommand::Stop { containers, time } => {
                        client::container_stop(&host, containers, time)
                            .await
                            .map(|()| 0)
                    }
                    ContainerCommand::Rm { containers, force } => {
                        client::container_rm(&host, containers, force)
                            .await
                            .map(|()| 0)
                    }
                    ContainerCommand::Inspect { containers } => {
                        client::container_inspect(&host, containers)
                            .await
                            .map(|()| 0)
                    }
                    ContainerCommand::Start { containers } => {
                        client::container_start(&host, containers).await.map(|()| 0)
                    }
                    ContainerCommand::Wait { containers } => {
                        client::container_wait(&host, containers).await.map(|()| 0)
                    }
                }
            })
        }),
    };
    match result {
        Ok(code) => exit(code),
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flags: &[&str]) -> anyhow::Result<client::RunOptions> {
        let argv = ["shoal", "container", "run"]
            .iter()
            .chain(flags)
            .chain(&["busybox"]);
        let Cli { command, .. } = Cli::try_parse_from(argv)?;
        let Command::Container(ContainerCommand::Run(args)) = command else {
            anyhow::bail!("not container run");
        };
        run_spec(*args)
    }

    /// `container run` reads durations and sizes as `service create` does (issue 13: `2` meant
    /// 2 s here and was refused there; `1t` was refused here and accepted there).
    #[test]
    fn durations_and_sizes_read_as_service_create_reads_them() -> anyhow::Result<()> {
        let refused = run(&["--health-cmd", "true", "--health-interval", "2"])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        let service = service::spec::parse_flag_duration("health-interval", "2")
            .expect_err("a duration without a unit")
            .to_string();
        assert_eq!(refused, service);
        assert!(
            refused.starts_with("--health-interval: invalid duration \"2\""),
            "{refused}"
        );

        let options = run(&["--memory", "1t", "--log-max-size", "1.5k"])?;
        assert_eq!(options.spec.memory_bytes, 1 << 40);
        assert_eq!(options.spec.log_max_size_bytes, 1536);
        let options = run(&["--health-cmd", "true", "--health-interval", "1m30s"])?;
        let interval = options.spec.healthcheck.and_then(|health| health.interval);
        assert_eq!(interval.map(|d| d.seconds), Some(90));
        Ok(())
    }
}
