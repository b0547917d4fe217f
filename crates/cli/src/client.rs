//! The client side: connecting to the daemon's unix socket (one channel shared by the engine,
//! control and swarm clients) and the `image` and `container` commands, with docker-like tables
//! and `--format json` lines.

use std::io::Write as _;
use std::time::SystemTime;

use anyhow::Context as _;
use shoal_proto::api::control_client::ControlClient;
use shoal_proto::api::swarm_client::SwarmClient;
use shoal_proto::engine as pb;
use shoal_proto::engine::engine_client::EngineClient;
use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Connects to the daemon at `host`.
pub(crate) async fn connect(host: &str) -> anyhow::Result<EngineClient<Channel>> {
    Ok(engine_client(channel(host).await?))
}

fn engine_client(channel: Channel) -> EngineClient<Channel> {
    EngineClient::new(channel).max_decoding_message_size(64 << 20)
}

/// The daemon's services on one connection: the local engine, the swarm control API (served by
/// managers) and node-local swarm membership.
pub(crate) struct Daemon {
    pub(crate) engine: EngineClient<Channel>,
    pub(crate) control: ControlClient<Channel>,
    pub(crate) swarm: SwarmClient<Channel>,
}

impl Daemon {
    pub(crate) async fn connect(host: &str) -> anyhow::Result<Daemon> {
        let channel = channel(host).await?;
        Ok(Daemon {
            engine: engine_client(channel.clone()),
            control: ControlClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            swarm: SwarmClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }
}

/// Turns a status from the swarm API into the daemon's own message (already user-facing), adding
/// what to do where the daemon could not say it.
pub(crate) fn api_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unimplemented => anyhow::anyhow!(
            "the daemon does not serve the swarm API ({}): upgrade it and restart 'shoal daemon'",
            status.message()
        ),
        tonic::Code::Unavailable if status.message().is_empty() => anyhow::anyhow!(
            "lost the connection to the daemon: check that 'shoal daemon' is still running"
        ),
        code if status.message().is_empty() => {
            anyhow::anyhow!(
                "the daemon failed the request ({code}) without saying why: check its log"
            )
        }
        _ => daemon_error(status),
    }
}

/// A gRPC channel to the daemon's unix socket at `host`, shared by every client.
pub(crate) async fn channel(host: &str) -> anyhow::Result<Channel> {
    let path = daemon::socket_path(host)?;
    let channel = daemon::connect_local(&path)
        .await
        .with_context(|| format!("cannot reach the shoal daemon at {host}: is 'shoal daemon' running there? (pick another with -H or SHOAL_HOST)"))?;
    Ok(channel)
}

/// Turns a gRPC status into the daemon's own message.
pub(crate) fn daemon_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Streams a file (or stdin for `-`) to the daemon as `Upload` messages.
fn upload_stream(
    source: String,
    reference: String,
) -> impl tokio_stream::Stream<Item = pb::Upload> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if source == "-" {
            Box::new(tokio::io::stdin())
        } else {
            match tokio::fs::File::open(&source).await {
                Ok(file) => Box::new(file),
                Err(error) => {
                    eprintln!("cannot open {source}: {error}");
                    return;
                }
            }
        };
        let mut reference = Some(reference);
        loop {
            let mut data = vec![0u8; 1 << 20];
            let n = match reader.read(&mut data).await {
                Ok(n) => n,
                Err(error) => {
                    eprintln!("reading {source}: {error}");
                    return;
                }
            };
            if n == 0 && reference.is_none() {
                return;
            }
            data.truncate(n);
            let message = pb::Upload {
                reference: reference.take().unwrap_or_default(),
                data,
            };
            if sender.send(message).await.is_err() || n == 0 {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

fn check_readable(source: &str) -> anyhow::Result<()> {
    if source != "-" {
        std::fs::metadata(source).with_context(|| format!("cannot read {source}"))?;
    }
    Ok(())
}

pub(crate) async fn image_import(
    host: &str,
    source: String,
    reference: String,
) -> anyhow::Result<()> {
    check_readable(&source)?;
    let mut client = connect(host).await?;
    let response = client
        .import_image(upload_stream(source, reference))
        .await
        .map_err(daemon_error)?
        .into_inner();
    if let Some(image) = response.image {
        println!("{}", image.id);
    }
    Ok(())
}

pub(crate) async fn image_load(host: &str, input: String) -> anyhow::Result<()> {
    check_readable(&input)?;
    let mut client = connect(host).await?;
    let response = client
        .load_image(upload_stream(input, String::new()))
        .await
        .map_err(daemon_error)?
        .into_inner();
    for image in response.images {
        if image.repo_tags.is_empty() {
            println!("Loaded image ID: {}", image.id);
        }
        for tag in image.repo_tags {
            println!("Loaded image: {tag}");
        }
    }
    Ok(())
}

pub(crate) async fn image_pull(
    host: &str,
    reference: String,
    insecure: bool,
) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let response = client
        .pull_image(pb::PullImageRequest {
            reference,
            insecure,
        })
        .await
        .map_err(daemon_error)?
        .into_inner();
    if let Some(image) = response.image {
        println!("Digest: {}\n{}", image.manifest_digest, image.id);
    }
    Ok(())
}

fn ago(rfc3339: &str) -> String {
    docker_api::shape::engine::ago(rfc3339, SystemTime::now())
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", crate::service::format::table(header, &rows));
}

pub(crate) async fn image_ls(host: &str, json: bool) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let images = client
        .list_images(pb::ListImagesRequest {})
        .await
        .map_err(daemon_error)?
        .into_inner()
        .images;
    let mut rows = Vec::new();
    for image in images {
        let tags = if image.repo_tags.is_empty() {
            vec!["<none>:<none>".to_owned()]
        } else {
            image.repo_tags.clone()
        };
        for tag in tags {
            let (repository, tag) = tag
                .rsplit_once(':')
                .map(|(r, t)| (r.to_owned(), t.to_owned()))
                .unwrap_or((tag, String::new()));
            if json {
                let object = serde_json::json!({
                    "Repository": repository, "Tag": tag, "ID": short_id(&image.id), "Digest": image.manifest_digest,
                    "CreatedAt": image.created, "CreatedSince": ago(&image.created), "Size": spec::units::human_size(image.size_bytes),
                });
                println!("{object}");
            } else {
                rows.push(vec![
                    repository,
                    tag,
                    short_id(&image.id).to_owned(),
                    ago(&image.created),
                    spec::units::human_size(image.size_bytes),
                ]);
            }
        }
    }
    if !json {
        print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows);
    }
    Ok(())
}

pub(crate) async fn image_inspect(host: &str, names: Vec<String>) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let mut documents = Vec::new();
    for name in names {
        let json = client
            .inspect_image(pb::InspectImageRequest { name })
            .await
            .map_err(daemon_error)?
            .into_inner()
            .json;
        documents.push(
            serde_json::from_str::<serde_json::Value>(&json).context("daemon sent bad JSON")?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&documents)?);
    Ok(())
}

pub(crate) async fn image_rm(host: &str, names: Vec<String>) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    for name in names {
        let removed = client
            .remove_image(pb::RemoveImageRequest { name })
            .await
            .map_err(daemon_error)?
            .into_inner()
            .removed;
        for item in removed {
            if item.starts_with("sha256:") {
                println!("Deleted: {item}");
            } else {
                println!("Untagged: {item}");
            }
        }
    }
    Ok(())
}

/// Arguments of `container run`, already parsed.
pub(crate) struct RunOptions {
    pub(crate) detach: bool,
    pub(crate) spec: pb::ContainerSpec,
}

pub(crate) async fn container_run(host: &str, options: RunOptions) -> anyhow::Result<i32> {
    let mut client = connect(host).await?;
    let mut spec = options.spec;
    let remove_after = spec.auto_remove && !options.detach;
    if remove_after {
        // In the foreground the client removes the container itself, after reading its logs.
        spec.auto_remove = false;
    }
    let id = client
        .create_container(spec)
        .await
        .map_err(daemon_error)?
        .into_inner()
        .id;
    if let Err(status) = client
        .start_container(pb::ContainerRef { id: id.clone() })
        .await
    {
        let _ = client
            .remove_container(pb::RemoveContainerRequest {
                id: id.clone(),
                force: true,
            })
            .await;
        return Err(daemon_error(status));
    }
    if options.detach {
        println!("{id}");
        return Ok(0);
    }
    let mut logs = client
        .container_logs(pb::LogsRequest {
            id: id.clone(),
            follow: true,
            tail: None,
        })
        .await
        .map_err(daemon_error)?
        .into_inner();
    while let Some(entry) = logs.next().await {
        let entry = entry.map_err(daemon_error)?;
        if entry.stream == "stderr" {
            eprint!("{}", entry.log);
        } else {
            print!("{}", entry.log);
        }
    }
    let done = client
        .wait_container(pb::ContainerRef { id: id.clone() })
        .await
        .map_err(daemon_error)?
        .into_inner();
    if remove_after {
        client
            .remove_container(pb::RemoveContainerRequest { id, force: true })
            .await
            .map_err(daemon_error)?;
    }
    if !done.error.is_empty() {
        eprintln!("shoal: {}", done.error);
    }
    Ok(done.exit_code)
}

fn status_text(container: &pb::Container) -> String {
    docker_api::shape::engine::status_text(container, SystemTime::now())
}

fn command_text(args: &[String]) -> String {
    let joined = args.join(" ");
    if joined.chars().count() > 20 {
        format!("\"{}…\"", joined.chars().take(19).collect::<String>())
    } else {
        format!("\"{joined}\"")
    }
}

pub(crate) async fn container_ls(
    host: &str,
    all: bool,
    json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let containers = client
        .list_containers(pb::ListContainersRequest { all })
        .await
        .map_err(daemon_error)?
        .into_inner()
        .containers;
    if quiet {
        for c in containers {
            println!("{}", short_id(&c.id));
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for c in &containers {
        if json {
            let object = serde_json::json!({
                "ID": short_id(&c.id), "Image": c.image, "Command": command_text(&c.args), "CreatedAt": c.created,
                "RunningFor": ago(&c.created), "Status": status_text(c), "State": c.status, "Health": c.health,
                "Ports": "", "Names": c.name, "ExitCode": c.has_exit_code.then_some(c.exit_code), "OOMKilled": c.oom_killed,
            });
            println!("{object}");
        } else {
            rows.push(vec![
                short_id(&c.id).to_owned(),
                c.image.clone(),
                command_text(&c.args),
                ago(&c.created),
                status_text(c),
                String::new(),
                c.name.clone(),
            ]);
        }
    }
    if !json {
        print_table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ],
            rows,
        );
    }
    Ok(())
}

pub(crate) async fn container_logs(
    host: &str,
    id: String,
    follow: bool,
    tail: Option<u64>,
) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let mut logs = client
        .container_logs(pb::LogsRequest { id, follow, tail })
        .await
        .map_err(daemon_error)?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(entry) = logs.next().await {
        let entry = entry.map_err(daemon_error)?;
        if entry.stream == "stderr" {
            let _ = stderr.write_all(entry.log.as_bytes());
        } else {
            let _ = stdout.write_all(entry.log.as_bytes());
            let _ = stdout.flush();
        }
    }
    Ok(())
}

pub(crate) async fn container_stop(
    host: &str,
    ids: Vec<String>,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    for id in ids {
        let timeout =
            timeout.map(|s| spec::time::proto_duration(std::time::Duration::from_secs(s)));
        client
            .stop_container(pb::StopContainerRequest {
                id: id.clone(),
                timeout,
            })
            .await
            .map_err(daemon_error)?;
        println!("{id}");
    }
    Ok(())
}

pub(crate) async fn container_rm(host: &str, ids: Vec<String>, force: bool) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    for id in ids {
        client
            .remove_container(pb::RemoveContainerRequest {
                id: id.clone(),
                force,
            })
            .await
            .map_err(daemon_error)?;
        println!("{id}");
    }
    Ok(())
}

pub(crate) async fn container_inspect(host: &str, ids: Vec<String>) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    let mut documents = Vec::new();
    for id in ids {
        let container = client
            .inspect_container(pb::ContainerRef { id })
            .await
            .map_err(daemon_error)?
            .into_inner();
        documents.push(
            serde_json::from_str::<serde_json::Value>(&container.inspect_json)
                .context("daemon sent bad JSON")?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&documents)?);
    Ok(())
}

pub(crate) async fn container_start(host: &str, ids: Vec<String>) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    for id in ids {
        client
            .start_container(pb::ContainerRef { id: id.clone() })
            .await
            .map_err(daemon_error)?;
        println!("{id}");
    }
    Ok(())
}

pub(crate) async fn container_wait(host: &str, ids: Vec<String>) -> anyhow::Result<()> {
    let mut client = connect(host).await?;
    for id in ids {
        let container = client
            .wait_container(pb::ContainerRef { id })
            .await
            .map_err(daemon_error)?
            .into_inner();
        println!("{}", container.exit_code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// `image ls` and `secret ls` say the same age the same way (issue 13: "20 days" here,
    /// "2 weeks" there), and tables pad as docker's tabwriter does whichever list prints them.
    #[test]
    fn lists_say_ages_and_pad_columns_alike() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let created = now - Duration::from_secs(20 * 86_400);
        let text = spec::time::rfc3339(created);
        assert_eq!(docker_api::shape::engine::ago(&text, now), "2 weeks ago");
        let timestamp = shoal_proto::api::Timestamp {
            seconds: 1_800_000_000 - 20 * 86_400,
            nanos: 0,
        };
        assert_eq!(
            crate::payload::ago(Some(&timestamp), now),
            docker_api::shape::engine::ago(&text, now)
        );
        assert_eq!(
            crate::service::format::table(&["ID", "NAME"], &[vec!["a".into(), "b".into()]]),
            "ID        NAME\na         b\n"
        );
    }
}
