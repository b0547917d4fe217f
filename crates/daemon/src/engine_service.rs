//! The local engine API (`shoal_proto::engine`) the daemon serves on its unix socket: images,
//! uploads and containers, over the engine's `LocalEngine`.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use engine::{Engine as _, EngineError, LocalEngine};
use shoal_proto::engine as pb;
use shoal_proto::engine::engine_server::Engine;
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::engine_wire::{
    container_to_pb, exec_event_to_pb, exec_input_from_pb, exec_spec_from_pb, image_to_pb,
    spec_from_pb,
};

/// Serves the local engine API over one engine.
pub(crate) struct EngineService {
    pub(crate) engine: LocalEngine,
}

/// The gRPC status an engine error maps to: the one place engine errors become statuses.
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
type ExecOutputStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

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

    async fn resolve_image(
        &self,
        request: Request<pb::ResolveImageRequest>,
    ) -> Result<Response<pb::ResolvedImage>, Status> {
        let resolved = self
            .engine
            .resolve_image(&request.into_inner().reference)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResolvedImage {
            media_type: resolved.media_type,
            digest: resolved.digest.to_string(),
            size: resolved.size,
            platforms: resolved
                .platforms
                .into_iter()
                .map(|platform| pb::Platform {
                    os: platform.os,
                    architecture: platform.architecture,
                })
                .collect(),
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
            .stop(
                &request.id,
                request.timeout.as_ref().map(spec::time::std_duration),
            )
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

    async fn exec_container(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResult>, Status> {
        let request = request.into_inner();
        let output = self
            .engine
            .exec(&request.id, &request.args)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ExecResult {
            exit_code: output.code,
            stdout: output.stdout,
            stderr: output.stderr,
        }))
    }

    type ExecStreamStream = ExecOutputStream;

    async fn exec_stream(
        &self,
        request: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<ExecOutputStream>, Status> {
        let mut inputs = request.into_inner();
        let start = match inputs.message().await? {
            Some(pb::ExecInput {
                input: Some(pb::exec_input::Input::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "an exec stream starts with what to run (ExecStart)",
                ));
            }
        };
        let container = start.id.clone();
        let session = self
            .engine
            .exec_session(&container, exec_spec_from_pb(start))
            .await
            .map_err(status)?;
        let (sender, events) = session.split();
        tokio::spawn(async move {
            // The caller's input until it ends (its stdin's end too); a broken stream is the
            // caller gone, which the output's end tells the session.
            while let Ok(Some(input)) = inputs.message().await {
                if let Some(input) = exec_input_from_pb(input)
                    && sender.send(input).await.is_err()
                {
                    return;
                }
            }
            let _ = sender.send(engine::ExecInput::CloseStdin).await;
        });
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(events).map(|e| Ok(exec_event_to_pb(e)));
        Ok(Response::new(Box::pin(stream)))
    }

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
