//! Docker's JSON for a node's own containers and images (`docker ps`, `docker inspect`,
//! `docker images`), from the engine API's messages, and the status words every container list
//! says ("Up 2 minutes (healthy)"), shared with `shoal container ls`.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_proto::engine as pb;

/// How long before `now` an engine timestamp (RFC 3339) was: "2 weeks ago", "N/A" when unknown.
pub fn ago(rfc3339: &str, now: SystemTime) -> String {
    match spec::time::parse_rfc3339(rfc3339).and_then(|t| now.duration_since(t).ok()) {
        Some(elapsed) => spec::human::ago(elapsed),
        None => "N/A".to_owned(),
    }
}

/// A container's STATUS as Docker's lists say it: `Up 5 minutes (healthy)`,
/// `Exited (0) 2 seconds ago`, `Created`.
pub fn status_text(container: &pb::Container, now: SystemTime) -> String {
    match container.status.as_str() {
        "running" => {
            let mut text = format!(
                "Up {}",
                ago(&container.started_at, now).trim_end_matches(" ago")
            );
            match container.health.as_str() {
                "" => {}
                "starting" => text.push_str(" (health: starting)"),
                other => text.push_str(&format!(" ({other})")),
            }
            text
        }
        "exited" => format!(
            "Exited ({}) {}",
            container.exit_code,
            ago(&container.finished_at, now)
        ),
        _ => "Created".to_owned(),
    }
}

/// What Docker's JSON needs from the engine's own inspect document (`Container.inspect_json`);
/// anything else in it is not read.
#[derive(Deserialize, Default)]
#[serde(default)]
struct EngineDocument {
    spec: EngineSpec,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EngineSpec {
    env: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    hostname: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    init: bool,
    read_only_rootfs: bool,
    stop_signal: Option<String>,
}

fn engine_spec(container: &pb::Container) -> EngineSpec {
    serde_json::from_str::<EngineDocument>(&container.inspect_json)
        .map(|document| document.spec)
        .unwrap_or_default()
}

fn unix_seconds(rfc3339: &str) -> i64 {
    spec::time::parse_rfc3339(rfc3339)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `GET /containers/json`'s entry for `container` (`docker ps`).
pub fn container_summary_json(container: &pb::Container, now: SystemTime) -> Value {
    json!({
        "Id": container.id,
        "Names": [format!("/{}", container.name)],
        "Image": container.image,
        "ImageID": container.image_id,
        "Command": container.args.join(" "),
        "Created": unix_seconds(&container.created),
        "Ports": [],
        "Labels": engine_spec(container).labels,
        "State": container.status,
        "Status": status_text(container, now),
        "HostConfig": { "NetworkMode": "default" },
        "NetworkSettings": { "Networks": {} },
        "Mounts": [],
    })
}

/// `GET /containers/{id}/json` (`docker inspect`).
pub fn container_inspect_json(container: &pb::Container) -> Value {
    let spec = engine_spec(container);
    let running = container.status == "running";
    let mut state = json!({
        "Status": container.status,
        "Running": running,
        "Paused": false,
        "Restarting": false,
        "OOMKilled": container.oom_killed,
        "Dead": false,
        "Pid": container.pid,
        "ExitCode": container.exit_code,
        "Error": container.error,
        "StartedAt": or_zero_time(&container.started_at),
        "FinishedAt": or_zero_time(&container.finished_at),
    });
    if !container.health.is_empty() {
        state["Health"] = json!({ "Status": container.health });
    }
    let (path, args) = container
        .args
        .split_first()
        .map_or(("", &[][..]), |(path, args)| (path.as_str(), args));
    json!({
        "Id": container.id,
        "Created": container.created,
        "Path": path,
        "Args": args,
        "State": state,
        "Image": container.image_id,
        "Name": format!("/{}", container.name),
        "RestartCount": 0,
        "Driver": "overlayfs",
        "Platform": "linux",
        "HostConfig": { "NetworkMode": "default", "ReadonlyRootfs": spec.read_only_rootfs, "Init": spec.init },
        "Mounts": [],
        "Config": {
            "Hostname": spec.hostname.unwrap_or_default(),
            "User": spec.user.unwrap_or_default(),
            "Env": spec.env,
            "Cmd": container.args,
            "Image": container.image,
            "WorkingDir": spec.workdir.unwrap_or_default(),
            "Labels": spec.labels,
            "StopSignal": spec.stop_signal.unwrap_or_default(),
            "Tty": false,
            "OpenStdin": false,
        },
        "NetworkSettings": { "Networks": {} },
    })
}

/// Go's zero time, which Docker shows for a time that has not come.
fn or_zero_time(rfc3339: &str) -> &str {
    if rfc3339.is_empty() {
        "0001-01-01T00:00:00Z"
    } else {
        rfc3339
    }
}

/// `GET /images/json`'s entry for `image` (`docker images`).
pub fn image_summary_json(image: &pb::Image) -> Value {
    let digests: Vec<String> = if image.manifest_digest.is_empty() {
        Vec::new()
    } else {
        image
            .repo_tags
            .iter()
            .filter_map(|tag| tag.rsplit_once(':').map(|(repo, _)| repo))
            .map(|repo| format!("{repo}@{}", image.manifest_digest))
            .collect()
    };
    json!({
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.repo_tags,
        "RepoDigests": digests,
        "Created": unix_seconds(&image.created),
        "Size": image.size_bytes,
        "SharedSize": -1,
        "Labels": {},
        "Containers": -1,
    })
}

/// `GET /distribution/{name}/json`: what the registry holds under the name (Docker's
/// `registry.DistributionInspect`).
pub fn distribution_json(resolved: &pb::ResolvedImage) -> Value {
    let platforms: Vec<Value> = resolved
        .platforms
        .iter()
        .map(|platform| json!({ "architecture": platform.architecture, "os": platform.os }))
        .collect();
    json!({
        "Descriptor": {
            "mediaType": resolved.media_type,
            "digest": resolved.digest,
            "size": resolved.size,
        },
        "Platforms": platforms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_answer_has_dockers_descriptor_and_platforms() {
        let resolved = pb::ResolvedImage {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: "sha256:ab".into(),
            size: 527,
            platforms: vec![pb::Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
            }],
        };
        assert_eq!(
            distribution_json(&resolved),
            json!({
                "Descriptor": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:ab",
                    "size": 527
                },
                "Platforms": [{ "architecture": "amd64", "os": "linux" }]
            })
        );
    }

    fn container(status: &str) -> pb::Container {
        pb::Container {
            id: "abc".into(),
            name: "web.1.xyz".into(),
            image: "busybox".into(),
            args: vec!["sleep".into(), "60".into()],
            created: "2026-01-01T00:00:00Z".into(),
            status: status.into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:01:00Z".into(),
            exit_code: 137,
            has_exit_code: status == "exited",
            inspect_json: r#"{"spec":{"env":["A=1"],"labels":{"com.docker.swarm.task.id":"xyz"},"hostname":"h"}}"#.into(),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_read_as_docker_s_lists_say_them() {
        let now = spec::time::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        assert_eq!(status_text(&container("running"), now), "Up 5 minutes");
        let mut healthy = container("running");
        healthy.health = "healthy".into();
        assert_eq!(status_text(&healthy, now), "Up 5 minutes (healthy)");
        healthy.health = "starting".into();
        assert_eq!(
            status_text(&healthy, now),
            "Up 5 minutes (health: starting)"
        );
        assert_eq!(
            status_text(&container("exited"), now),
            "Exited (137) 4 minutes ago"
        );
        assert_eq!(status_text(&container("created"), now), "Created");
        assert_eq!(ago("not a time", now), "N/A");
    }

    #[test]
    fn containers_take_docker_s_shapes() {
        let now = spec::time::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let summary = container_summary_json(&container("running"), now);
        assert_eq!(summary["Names"], json!(["/web.1.xyz"]));
        assert_eq!(summary["Command"], "sleep 60");
        assert_eq!(summary["Created"], 1_767_225_600);
        assert_eq!(summary["Labels"]["com.docker.swarm.task.id"], "xyz");
        let inspected = container_inspect_json(&container("exited"));
        assert_eq!(inspected["Path"], "sleep");
        assert_eq!(inspected["Args"], json!(["60"]));
        assert_eq!(inspected["State"]["Running"], false);
        assert_eq!(inspected["State"]["ExitCode"], 137);
        assert_eq!(inspected["Config"]["Env"], json!(["A=1"]));
        assert_eq!(inspected["Config"]["Hostname"], "h");
    }

    #[test]
    fn images_name_their_digest_per_repository() {
        let image = pb::Image {
            id: "sha256:1".into(),
            manifest_digest: "sha256:2".into(),
            repo_tags: vec!["busybox:latest".into()],
            created: "2026-01-01T00:00:00Z".into(),
            size_bytes: 5,
        };
        let summary = image_summary_json(&image);
        assert_eq!(summary["RepoDigests"], json!(["busybox@sha256:2"]));
        assert_eq!(summary["Size"], 5);
    }
}
