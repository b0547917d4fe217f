//! `shoal`: one binary for the node daemon (`shoal daemon`), the client verbs (`shoal image`,
//! `shoal container`, `shoal swarm`, `shoal service`, …) and the hidden helpers the engine
//! re-executes (`shim`, `init`, `runtime-exec`). The only crate that knows clap.

mod client;
mod container;
mod exec;
mod network;
mod output;
mod payload;
mod service;
mod stack;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A Docker-Swarm-like cluster orchestrator in one binary"
)]
struct Cli {
    /// Daemon socket to talk to (or, for `daemon`, to listen on). Given before the command, as
    /// Docker's `-H`: `service create --host` is a host mapping.
    #[arg(
        short = 'H',
        long = "host",
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
        /// The socket to listen on, when not given before `daemon`.
        #[arg(short = 'H', long = "host")]
        listen: Option<String>,
        /// Where the Docker Engine API listens (`unix:///PATH`), or `none`.
        #[arg(long, default_value = daemon::DEFAULT_DOCKER_API)]
        docker_api: String,
        /// Serves Prometheus metrics on `GET /metrics` at this address (HOST:PORT, such as
        /// 127.0.0.1:9323); off unless given.
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<String>,
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
    /// The exec helper: runs a prepared process in a container through its runtime and exits
    /// with the command's code (started by the daemon).
    #[command(hide = true)]
    RuntimeExec {
        /// An external runc-compatible runtime; the built-in one when absent.
        #[arg(long)]
        runtime: Option<PathBuf>,
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        /// The OCI process (JSON) to run.
        #[arg(long)]
        process: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
        /// Where the runtime sends the terminal's master (with a terminal).
        #[arg(long)]
        console_socket: Option<PathBuf>,
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
    Run(Box<container::RunArgs>),
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
    /// Runs a command in a running container and exits with its exit code; its output comes as
    /// it is written.
    Exec {
        /// Sends this stdin to the command, and its end.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Gives the command a terminal; with -i, this one goes raw while attached.
        #[arg(short = 't', long)]
        tty: bool,
        /// Sets an environment variable: KEY=value, or KEY for this shell's value (none
        /// removes it).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The working directory in the container (absolute).
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// The user: name|uid[:group|gid], from the container's /etc/passwd and /etc/group.
        #[arg(short = 'u', long)]
        user: Option<String>,
        container: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
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
            runtime,
            state_root,
            id,
            process,
            pid_file,
            console_socket,
        } => {
            let args = engine::runtime::ExecHelperArgs {
                runtime,
                state_root,
                id,
                process_file: process,
                pid_file,
                console_socket,
            };
            // Its stderr is the exec's: the runtime's reason, then Docker's code for a command
            // that could not run.
            return exit(engine::runtime::exec_main(&args).unwrap_or_else(|error| {
                eprintln!("shoal: {error}");
                126
            }));
        }
        Command::Daemon {
            data_root,
            listen,
            docker_api,
            metrics_addr,
        } => daemon::run(
            data_root,
            listen.as_ref().unwrap_or(&host),
            &docker_api,
            metrics_addr.as_deref(),
        )
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
                        client::image_ls(&host, output::json_format(format)?).await
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
                        client::container_run(&host, container::run_spec(*args)?).await
                    }
                    ContainerCommand::Ls { all, quiet, format } => {
                        client::container_ls(&host, all, output::json_format(format)?, quiet)
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
                    ContainerCommand::Exec {
                        interactive,
                        tty,
                        env,
                        workdir,
                        user,
                        container,
                        command,
                    } => {
                        let options = exec::ExecOptions {
                            interactive,
                            tty,
                            env,
                            workdir,
                            user,
                        };
                        exec::run(&host, container, command, options).await
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
