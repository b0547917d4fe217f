//! `shoal daemon`: serves the engine, control and swarm APIs on a unix socket, runs the node's
//! swarm roles ([`crate::roles`]), and maps between the engine's wire types and its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use engine::{ContainerInfo, Engine as _, EngineConfig, EngineError, LocalEngine};
use shoal_proto::api::control_server::ControlServer;
use shoal_proto::api::swarm_server::SwarmServer;
use shoal_proto::engine as pb;
use shoal_proto::engine::engine_server::{Engine, EngineServer};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::roles::NodeRoles;

/// How often the daemon checks whether its manager role's Raft store has stopped for good.
const MANAGER_FAILURE_POLL: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGTERM or SIGINT, or until its manager role's Raft store stops on a
/// fatal storage error: then it stops like on SIGTERM and fails, so that its supervisor
/// (systemd) restarts it and the member reopens its data.
pub(crate) async fn run(data_root: PathBuf, host: &str) -> anyhow::Result<()> {
    let socket = crate::client::socket_path(host)?;
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("creating the data root {}", data_root.display()))?;
    let shoal_exe = std::env::current_exe().context("finding the shoal binary")?;
    let engine = LocalEngine::open(EngineConfig {
        data_root: data_root.clone(),
        shoal_exe,
    })
    .await
    .with_context(|| format!("opening the data root {}", data_root.display()))?;
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            anyhow::bail!(
                "another daemon is already listening on {}: stop it or pick another -H",
                socket.display()
            );
        }
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .context("restricting the socket to its owner")?;
    tracing::info!(socket = %socket.display(), data_root = %data_root.display(), "shoal daemon ready");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let roles = NodeRoles::new(&data_root, engine.clone());
    roles
        .resume()
        .await
        .context("resuming this node's swarm roles (its swarm state is under <data-root>/swarm)")?;
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
    let manager_failure = tokio::select! {
        () = shutdown_signal() => None,
        failure = manager_failure(&roles) => Some(failure),
    };
    let _ = stop_serving.send(());
    roles.shutdown().await;
    // Long-lived calls (`logs -f`, `wait`) would hold a graceful shutdown open forever; they
    // get a moment to finish and are then cut off. Containers are unaffected either way.
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(result)) => result.context("serving the engine API")?,
        Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
        Err(_) => tracing::info!("closing connections that were still open"),
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("shoal daemon stopped; containers keep running under their shims");
    if let Some(failure) = manager_failure {
        anyhow::bail!(
            "this manager's Raft store stopped on a fatal storage error ({failure}); the daemon exits so that its supervisor restarts it: check the disk under the data root, then start it again if nothing does"
        );
    }
    Ok(())
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

struct EngineService {
    engine: LocalEngine,
}

fn status(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::ImageNotFound(_) | EngineError::ContainerNotFound(_) => {
            Status::not_found(message)
        }
        EngineError::InvalidInput { .. }
        | EngineError::InvalidReference { .. }
        | EngineError::DigestMismatch { .. } => Status::invalid_argument(message),
        EngineError::ImageInUse { .. }
        | EngineError::NameInUse(_)
        | EngineError::WrongState { .. } => Status::failed_precondition(message),
        EngineError::NotSupported(_) => Status::unimplemented(message),
        _ => Status::internal(message),
    }
}

fn image_to_pb(image: engine::ImageSummary) -> pb::Image {
    pb::Image {
        id: image.id.to_string(),
        manifest_digest: image.manifest_digest.to_string(),
        repo_tags: image.repo_tags,
        created: image.created.unwrap_or_default(),
        size_bytes: image.size,
    }
}

fn duration_from_pb(d: Option<pb::Duration>) -> Option<Duration> {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

/// Wire spec to engine spec.
pub(crate) fn spec_from_pb(spec: pb::ContainerSpec) -> Result<engine::ContainerSpec, Status> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let mut mounts = Vec::new();
    for mount in spec.mounts {
        let kind = pb::mount::Type::try_from(mount.r#type)
            .map_err(|_| Status::invalid_argument("unknown mount type"))?;
        mounts.push(match kind {
            pb::mount::Type::Bind => engine::MountSpec::Bind {
                source: mount.source.into(),
                target: mount.target,
                read_only: mount.read_only,
            },
            pb::mount::Type::Volume => engine::MountSpec::Volume {
                name: mount.source,
                target: mount.target,
                read_only: mount.read_only,
            },
            pb::mount::Type::Tmpfs => engine::MountSpec::Tmpfs {
                target: mount.target,
                size_bytes: (mount.size_bytes > 0).then_some(mount.size_bytes),
            },
            // The local engine API names no owner: such files belong to root.
            pb::mount::Type::File => engine::MountSpec::File {
                target: mount.target,
                contents: mount.contents,
                mode: if mount.mode == 0 { 0o444 } else { mount.mode },
                uid: 0,
                gid: 0,
            },
        });
    }
    let healthcheck = match spec.healthcheck {
        Some(h) if !h.test.is_empty() => Some(engine::HealthcheckSpec {
            test: h.test,
            interval: duration_from_pb(h.interval).unwrap_or(Duration::from_secs(30)),
            timeout: duration_from_pb(h.timeout).unwrap_or(Duration::from_secs(30)),
            retries: if h.retries == 0 { 3 } else { h.retries },
            start_period: duration_from_pb(h.start_period).unwrap_or_default(),
        }),
        _ => None,
    };
    let defaults = engine::LogOptions::default();
    Ok(engine::ContainerSpec {
        name: non_empty(spec.name),
        image: spec.image,
        entrypoint: spec.entrypoint_set.then_some(spec.entrypoint),
        command: spec.command,
        env: spec.env,
        user: non_empty(spec.user),
        workdir: non_empty(spec.workdir),
        hostname: non_empty(spec.hostname),
        read_only_rootfs: spec.read_only_rootfs,
        mounts,
        resources: engine::Resources {
            memory_bytes: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
            nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
            pids_limit: (spec.pids_limit > 0).then_some(spec.pids_limit),
        },
        stop_signal: non_empty(spec.stop_signal),
        stop_timeout: duration_from_pb(spec.stop_timeout),
        healthcheck,
        init: spec.init,
        auto_remove: spec.auto_remove,
        runtime: non_empty(spec.runtime).map(PathBuf::from),
        log: engine::LogOptions {
            max_size: if spec.log_max_size_bytes == 0 {
                defaults.max_size
            } else {
                spec.log_max_size_bytes
            },
            max_files: if spec.log_max_files == 0 {
                defaults.max_files
            } else {
                spec.log_max_files
            },
        },
        labels: spec.labels.into_iter().collect(),
        cap_add: spec.cap_add,
        cap_drop: spec.cap_drop,
        ulimits: spec
            .ulimits
            .into_iter()
            .map(|ulimit| engine::Ulimit {
                name: ulimit.name,
                soft: ulimit.soft,
                hard: ulimit.hard,
            })
            .collect(),
        sysctls: spec.sysctls.into_iter().collect(),
        groups: spec.groups,
    })
}

fn container_to_pb(info: ContainerInfo) -> pb::Container {
    let inspect_json = serde_json::to_string_pretty(&info).unwrap_or_default();
    let state = info.state;
    pb::Container {
        id: info.id,
        name: info.name,
        image: info.image,
        image_id: info.image_id.to_string(),
        args: info.args,
        created: info.created,
        status: serde_json::to_value(state.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        pid: state.pid.unwrap_or(0),
        started_at: state.started_at.unwrap_or_default(),
        finished_at: state.finished_at.unwrap_or_default(),
        has_exit_code: state.exit_code.is_some(),
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed,
        error: state.error.unwrap_or_default(),
        health: info
            .health
            .map(|h| {
                serde_json::to_value(h.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        inspect_json,
    }
}

impl EngineService {
    /// Writes a client-streamed upload to a scratch file; returns it and the reference.
    async fn receive_upload(
        &self,
        mut stream: Streaming<pb::Upload>,
    ) -> Result<(PathBuf, String), Status> {
        let path = self.engine.images().upload_path().map_err(status)?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::internal(format!("creating upload file: {e}")))?;
        let mut reference = String::new();
        let result: Result<(), Status> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if reference.is_empty() {
                    reference = chunk.reference;
                }
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| Status::internal(format!("writing upload: {e}")))?;
            }
            file.flush()
                .await
                .map_err(|e| Status::internal(format!("writing upload: {e}")))
        }
        .await;
        if let Err(error) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error);
        }
        Ok((path, reference))
    }
}

async fn with_upload<T>(
    path: &Path,
    work: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, Status> {
    let result = work.await;
    let _ = tokio::fs::remove_file(path).await;
    result.map_err(status)
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl Engine for EngineService {
    async fn import_image(
        &self,
        request: Request<Streaming<pb::Upload>>,
    ) -> Result<Response<pb::ImageResponse>, Status> {
        let (path, reference) = self.receive_upload(request.into_inner()).await?;
        let image = with_upload(&path, self.engine.import_image(path.clone(), reference)).await?;
        Ok(Response::new(pb::ImageResponse {
            image: Some(image_to_pb(image)),
        }))
    }

    async fn load_image(
        &self,
        request: Request<Streaming<pb::Upload>>,
    ) -> Result<Response<pb::LoadImageResponse>, Status> {
        let (path, _) = self.receive_upload(request.into_inner()).await?;
        let images = with_upload(&path, self.engine.load_images(path.clone())).await?;
        Ok(Response::new(pb::LoadImageResponse {
            images: images.into_iter().map(image_to_pb).collect(),
        }))
    }

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::ImageResponse>, Status> {
        let request = request.into_inner();
        let image = self
            .engine
            .pull_image(request.reference, request.insecure)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ImageResponse {
            image: Some(image_to_pb(image)),
        }))
    }

    async fn list_images(
        &self,
        _: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let images = self.engine.list_images().await.map_err(status)?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.into_iter().map(image_to_pb).collect(),
        }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::JsonDocument>, Status> {
        let value = self
            .engine
            .inspect_image(request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::JsonDocument {
            json: serde_json::to_string_pretty(&value).unwrap_or_default(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let removed = self
            .engine
            .remove_image(request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveImageResponse { removed }))
    }

    async fn create_container(
        &self,
        request: Request<pb::ContainerSpec>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let spec = spec_from_pb(request.into_inner())?;
        let id = self.engine.create(spec).await.map_err(status)?;
        Ok(Response::new(pb::CreateContainerResponse { id }))
    }

    async fn start_container(
        &self,
        request: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.engine
            .start(&request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn stop_container(
        &self,
        request: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.engine
            .stop(&request.id, duration_from_pb(request.timeout))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_container(
        &self,
        request: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.engine
            .remove(&request.id, request.force)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let containers = self
            .engine
            .list(request.into_inner().all)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: containers.into_iter().map(container_to_pb).collect(),
        }))
    }

    async fn inspect_container(
        &self,
        request: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::Container>, Status> {
        let info = self
            .engine
            .inspect(&request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(container_to_pb(info)))
    }

    async fn wait_container(
        &self,
        request: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::Container>, Status> {
        let id = request.into_inner().id;
        self.engine.wait(&id).await.map_err(status)?;
        let info = self.engine.inspect(&id).await.map_err(status)?;
        Ok(Response::new(container_to_pb(info)))
    }

    type ContainerLogsStream = LogStream;

    async fn container_logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let request = request.into_inner();
        let tail = request
            .tail
            .map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        let receiver = self
            .engine
            .logs(&request.id, request.follow, tail)
            .await
            .map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| {
            item.map(|entry| pb::LogEntry {
                log: entry.log,
                stream: entry.stream,
                time: entry.time,
            })
            .map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
