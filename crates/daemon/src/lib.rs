//! What `shoal daemon` runs, composed in one place: the local engine API on a unix socket, the
//! node's swarm roles behind it (`roles`: the worker agent, the manager role, and the role
//! follower whose decisions are the pure [`follower`] core), the metrics on `--metrics-addr`
//! (`metrics_server`, the families `shoal_metrics` defines, the agent's engine counted by
//! `metered_engine`), and the listener's lifecycle (a stale socket replaced, SIGTERM and SIGINT,
//! a manager whose Raft store failed for good).

mod engine_service;
mod engine_wire;
mod error;
pub mod fleet;
pub mod follower;
mod metered_engine;
mod metrics_server;
pub mod networking;
mod roles;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::{EngineConfig, LocalEngine};
use shoal_metrics::Metrics;
use shoal_proto::api::control_server::ControlServer;
use shoal_proto::api::swarm_server::SwarmServer;
use shoal_proto::engine::engine_server::EngineServer;

use crate::engine_service::EngineService;
pub use crate::error::DaemonError;
use crate::roles::NodeRoles;

/// How often the daemon checks whether its manager role's Raft store has stopped for good.
const MANAGER_FAILURE_POLL: Duration = Duration::from_secs(1);

/// The path in a `unix:///PATH` host, the one form of `-H` the daemon listens on and the
/// client connects to.
pub fn socket_path(host: &str) -> Result<PathBuf, DaemonError> {
    match host.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => Err(DaemonError::UnsupportedHost(host.to_owned())),
    }
}

/// Where the Docker Engine API listens unless `--docker-api` says otherwise.
pub const DEFAULT_DOCKER_API: &str = "unix:///run/shoal/docker.sock";

/// Connects a gRPC channel to the daemon's socket at `socket`: the shoal CLI's connection, which
/// fails at once when no daemon answers.
pub async fn connect_local(
    socket: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(unix_connector(socket))
        .await
}

/// A channel to the daemon's socket at `socket` that connects on first use, and again after a
/// lost connection: the daemon's own Docker API, which starts before anything answers.
pub fn local_channel(socket: &Path) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector_lazy(unix_connector(socket))
}

fn unix_connector(
    socket: &Path,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let socket = socket.to_path_buf();
    tower::service_fn(move |_: tonic::transport::Uri| {
        let socket = socket.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(socket).await?,
            ))
        }
    })
}

/// What the Docker API listens on: `unix:///PATH`, or nothing for `none`.
pub fn docker_api_socket(address: &str) -> Result<Option<PathBuf>, DaemonError> {
    if address == "none" {
        return Ok(None);
    }
    match address.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
        _ => Err(DaemonError::UnsupportedDockerApi(address.to_owned())),
    }
}

/// `shoal daemon`: logs to stderr (`RUST_LOG`, `info` by default), builds the daemon's runtime
/// and serves until SIGTERM or SIGINT (see [`serve`]).
pub fn run(
    data_root: PathBuf,
    host: &str,
    docker_api: &str,
    metrics_addr: Option<&str>,
) -> Result<(), DaemonError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    daemon_runtime()?.block_on(serve(data_root, host, docker_api, metrics_addr))
}

/// The daemon's runtime, also the one the simulated fleet's managers and agents run on, so
/// that their figures are a daemon's. Engine calls run on blocking threads; capping them, and
/// glibc's per-thread malloc arenas with them, keeps a burst of container starts from leaving
/// tens of megabytes of fragmented heap behind (measured in BENCHMARKS.md). Call it before the
/// process starts any other thread.
pub fn daemon_runtime() -> Result<tokio::runtime::Runtime, DaemonError> {
    // SAFETY: mallopt only changes allocator settings; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .map_err(DaemonError::io("starting the daemon's runtime"))
}

/// Runs the daemon until SIGTERM or SIGINT, or until its manager role's Raft store stops on a
/// fatal storage error: then it stops like on SIGTERM and fails, so that its supervisor
/// (systemd) restarts it and the member reopens its data. With `metrics_addr`, it serves
/// `GET /metrics` there.
pub async fn serve(
    data_root: PathBuf,
    host: &str,
    docker_api: &str,
    metrics_addr: Option<&str>,
) -> Result<(), DaemonError> {
    let socket = socket_path(host)?;
    let docker_socket = docker_api_socket(docker_api)?;
    std::fs::create_dir_all(&data_root).map_err(DaemonError::io(format!(
        "creating the data root {}",
        data_root.display()
    )))?;
    let shoal_exe = std::env::current_exe().map_err(DaemonError::io("finding the shoal binary"))?;
    let engine = LocalEngine::open(EngineConfig {
        data_root: data_root.clone(),
        shoal_exe,
    })
    .await
    .map_err(|source| DaemonError::Engine {
        data_root: data_root.clone(),
        source,
    })?;
    let listener = bind_socket(&socket).await?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(DaemonError::io("restricting the socket to its owner"))?;
    let docker_listener = match &docker_socket {
        Some(path) => Some(bind_docker_socket(path).await?),
        None => None,
    };
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(metrics_server::bind(addr).await?),
        None => None,
    };
    tracing::info!(socket = %socket.display(), data_root = %data_root.display(), "shoal daemon ready");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let metrics = Arc::new(Metrics::new());
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics ready at /metrics");
        }
        tokio::spawn(metrics_server::serve(
            listener,
            Arc::clone(&metrics),
            async {
                let _ = metrics_stopped.await;
            },
        ));
    }
    let roles = NodeRoles::new(&data_root, engine.clone(), metrics);
    roles.resume().await.map_err(DaemonError::Resume)?;
    let engine_service =
        EngineServer::new(EngineService { engine }).max_decoding_message_size(64 << 20);
    let control = ControlServer::new(roles.control_gate())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(engine_service)
            .add_service(control)
            .add_service(SwarmServer::new(roles.clone()))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let (stop_docker_api, docker_api_stopped) = tokio::sync::oneshot::channel::<()>();
    if let (Some(listener), Some(path)) = (docker_listener, &docker_socket) {
        tracing::info!(socket = %path.display(), "Docker Engine API ready");
        let backend = docker_api::Backend::new(local_channel(&socket), data_root.clone());
        tokio::spawn(docker_api::serve(listener, backend, async {
            let _ = docker_api_stopped.await;
        }));
    }
    let manager_failure = tokio::select! {
        () = shutdown_signal() => None,
        failure = manager_failure(&roles) => Some(failure),
    };
    let _ = stop_serving.send(());
    let _ = stop_docker_api.send(());
    let _ = stop_metrics.send(());
    roles.shutdown().await;
    // Long-lived calls (`logs -f`, `wait`) would hold a graceful shutdown open forever; they
    // get a moment to finish and are then cut off. Containers are unaffected either way.
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(result)) => result.map_err(DaemonError::Serve)?,
        Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
        Err(_) => tracing::info!("closing connections that were still open"),
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(path) = &docker_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("shoal daemon stopped; containers keep running under their shims");
    if let Some(failure) = manager_failure {
        return Err(DaemonError::RaftStoreStopped(failure));
    }
    Ok(())
}

/// Listens on `socket`, replacing a stale socket file that nothing answers on; a live one is
/// another daemon's.
async fn bind_socket(socket: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(DaemonError::io(format!("creating {}", parent.display())))?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(DaemonError::AlreadyListening(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(DaemonError::io(format!(
            "removing the stale socket {}",
            socket.display()
        )))?;
    }
    tokio::net::UnixListener::bind(socket).map_err(DaemonError::io(format!(
        "listening on {}",
        socket.display()
    )))
}

/// The Docker API's socket: mode 0660, and group `shoal` when that group exists, as Docker's
/// socket is for group `docker`.
async fn bind_docker_socket(socket: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    let listener = bind_socket(socket).await?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(DaemonError::io("setting the Docker API socket's mode"))?;
    if let Some(group) = nix::unistd::Group::from_name("shoal").ok().flatten() {
        nix::unistd::chown(socket, None, Some(group.gid)).map_err(|e| DaemonError::Io {
            what: format!("giving {} to group shoal", socket.display()),
            source: std::io::Error::from(e),
        })?;
    }
    Ok(listener)
}

/// Returns once the manager role's Raft store has stopped for good, with why.
async fn manager_failure(roles: &NodeRoles) -> String {
    loop {
        if let Some(failure) = roles.manager_failure() {
            tracing::error!(%failure, "the Raft store stopped on a fatal error; shutting down");
            return failure;
        }
        tokio::time::sleep(MANAGER_FAILURE_POLL).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_unix_socket_paths() {
        assert_eq!(
            socket_path("unix:///run/shoal/shoal.sock").unwrap(),
            PathBuf::from("/run/shoal/shoal.sock")
        );
        for host in [
            "tcp://127.0.0.1:2375",
            "unix://relative.sock",
            "/run/x.sock",
        ] {
            let error = socket_path(host).unwrap_err().to_string();
            assert!(error.contains("use -H unix:///"), "{host}: {error}");
        }
    }
}
