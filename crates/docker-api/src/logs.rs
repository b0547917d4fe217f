//! `GET /services/{id}/logs` and `GET /tasks/{id}/logs`: the control API's log stream in
//! Docker's framing. Each line is one frame of the multiplexed stream (a header naming stdout or
//! stderr and the length), or bare bytes for a TTY service; `timestamps` and `details` put the
//! time and the `com.docker.swarm.*` attributes before each line, as dockerd does.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use shoal_proto::api;
use tokio_stream::StreamExt;

use crate::error::{ApiError, Reply};
use crate::server::{Backend, Body, Call};

/// How lines are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Framing {
    /// Bare bytes (a TTY service) rather than the multiplexed stream.
    pub raw: bool,
    pub timestamps: bool,
    pub details: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The bytes a service's log message becomes: one frame per line, or nothing when its stream
/// wasn't asked for. Its details are the swarm's ids.
pub fn frames(message: &api::LogMessage, framing: &Framing) -> Vec<u8> {
    let time = message
        .timestamp
        .as_ref()
        .map_or(std::time::UNIX_EPOCH, |t| {
            std::time::UNIX_EPOCH + spec::time::since_unix_epoch(t)
        });
    let details = format!(
        "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
        message.node_id, message.service_id, message.task_id
    );
    let stderr = message.stream == api::log_message::Stream::Stderr as i32;
    frame_lines(stderr, time, &details, &message.data, framing)
}

/// `data`'s lines, each with the time and `details` before it as `framing` asks, each in a
/// frame of its own unless raw.
pub fn frame_lines(
    stderr: bool,
    time: std::time::SystemTime,
    details: &str,
    data: &[u8],
    framing: &Framing,
) -> Vec<u8> {
    if (stderr && !framing.stderr) || (!stderr && !framing.stdout) {
        return Vec::new();
    }
    let mut head = String::new();
    if framing.timestamps {
        head.push_str(&spec::time::rfc3339_nano(time));
        head.push(' ');
    }
    if framing.details && !details.is_empty() {
        head.push_str(details);
        head.push(' ');
    }
    let mut out = Vec::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        let mut payload = Vec::with_capacity(head.len() + line.len() + 1);
        payload.extend_from_slice(head.as_bytes());
        payload.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            payload.push(b'\n');
        }
        if framing.raw {
            out.extend_from_slice(&payload);
        } else {
            push_frame(&mut out, stderr, &payload);
        }
    }
    out
}

/// Appends `payload` to `out` as one frame of Docker's multiplexed stream: a header naming
/// stdout (1) or stderr (2) and the payload's length, then the payload.
pub fn push_frame(out: &mut Vec<u8>, stderr: bool, payload: &[u8]) {
    out.push(if stderr { 2 } else { 1 });
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

/// `tail`: `all` (or absent) is every line, a number the last that many per task.
fn tail(call: &Call) -> Result<Option<u64>, ApiError> {
    match call.param("tail").unwrap_or("all") {
        "all" | "" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid tail {text:?}: give a number of lines or \"all\""
            ))
        }),
    }
}

/// `since`: Unix seconds, with an optional fraction, as the docker CLI sends it.
fn since(call: &Call) -> Result<Option<std::time::SystemTime>, ApiError> {
    let Some(text) = call.param("since").filter(|t| !t.is_empty() && *t != "0") else {
        return Ok(None);
    };
    let seconds: f64 = text
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid since {text:?}: give Unix seconds")))?;
    Ok(Some(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds.max(0.0)),
    ))
}

/// The streams and decorations a logs call asks for; neither stream is Docker's 400.
fn framing(call: &Call, raw: bool) -> Result<Framing, ApiError> {
    let stdout = call.flag("stdout");
    let stderr = call.flag("stderr");
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    Ok(Framing {
        raw,
        timestamps: call.flag("timestamps"),
        details: call.flag("details"),
        stdout,
        stderr,
    })
}

fn stream_response(
    frames: impl tokio_stream::Stream<Item = Result<Frame<Bytes>, std::io::Error>>
    + Send
    + Sync
    + 'static,
    raw: bool,
) -> Response<Body> {
    let mut response = Response::new(StreamBody::new(frames).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if raw {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    response
}

/// Streams the logs of one of this node's containers (`docker logs`).
pub async fn container(
    backend: &mut Backend,
    call: &Call,
    id: String,
) -> Result<Response<Body>, ApiError> {
    let framing = framing(call, false)?;
    let since = since(call)?;
    let stream = backend
        .engine
        .container_logs(shoal_proto::engine::LogsRequest {
            id,
            follow: call.flag("follow"),
            tail: tail(call)?,
        })
        .await
        .answer()?;
    let frames = stream.filter_map(move |entry| match entry {
        Ok(entry) => {
            let time = spec::time::parse_rfc3339(&entry.time).unwrap_or(std::time::UNIX_EPOCH);
            if since.is_some_and(|since| time < since) {
                return None;
            }
            let bytes = frame_lines(
                entry.stream == "stderr",
                time,
                "",
                entry.log.as_bytes(),
                &framing,
            );
            Some(Ok(Frame::data(Bytes::from(bytes))))
        }
        Err(status) => Some(Err(std::io::Error::other(status.message().to_owned()))),
    });
    Ok(stream_response(frames, false))
}

/// Streams the logs of `services` or `tasks`.
pub async fn answer(
    backend: &mut Backend,
    call: &Call,
    services: Vec<String>,
    tasks: Vec<String>,
) -> Result<Response<Body>, ApiError> {
    let tty = tty_of(backend, &services, &tasks).await?;
    let framing = framing(call, tty)?;
    let since = since(call)?;
    let stream = backend
        .control
        .service_logs(api::ServiceLogsRequest {
            services,
            tasks,
            follow: call.flag("follow"),
            tail: tail(call)?,
        })
        .await
        .answer()?;
    let frames = stream
        .filter(move |message| match (message, since) {
            (Ok(message), Some(since)) => message
                .timestamp
                .as_ref()
                .is_none_or(|t| std::time::UNIX_EPOCH + spec::time::since_unix_epoch(t) >= since),
            _ => true,
        })
        .map(move |message| match message {
            Ok(message) => Ok(Frame::data(Bytes::from(frames(&message, &framing)))),
            Err(status) => Err(std::io::Error::other(status.message().to_owned())),
        });
    Ok(stream_response(frames, tty))
}

/// Whether the service (or the task's service) runs with a TTY: its logs are then bare bytes.
async fn tty_of(
    backend: &mut Backend,
    services: &[String],
    tasks: &[String],
) -> Result<bool, ApiError> {
    let task_spec = if let Some(service) = services.first() {
        backend
            .control
            .get_service(api::GetServiceRequest {
                service: service.clone(),
            })
            .await
            .answer()?
            .service
            .and_then(|s| s.spec)
            .and_then(|s| s.task)
    } else if let Some(task) = tasks.first() {
        backend
            .control
            .get_task(api::GetTaskRequest { task: task.clone() })
            .await
            .answer()?
            .task
            .and_then(|t| t.spec)
    } else {
        None
    };
    Ok(task_spec
        .and_then(|t| t.runtime)
        .is_some_and(|runtime| match runtime {
            api::task_spec::Runtime::Container(container) => container.tty,
            _ => false,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8], stream: api::log_message::Stream) -> api::LogMessage {
        api::LogMessage {
            service_id: "s".into(),
            task_id: "t".into(),
            node_id: "n".into(),
            timestamp: Some(api::Timestamp {
                seconds: 1,
                nanos: 500_000_000,
            }),
            stream: stream as i32,
            data: data.to_vec(),
        }
    }

    #[test]
    fn each_line_is_one_frame_naming_its_stream() {
        let framing = Framing {
            stdout: true,
            stderr: true,
            ..Framing::default()
        };
        let out = frames(
            &message(b"a\nbc", api::log_message::Stream::Stdout),
            &framing,
        );
        assert_eq!(out, b"\x01\0\0\0\0\0\0\x02a\n\x01\0\0\0\0\0\0\x03bc\n");
        let out = frames(&message(b"e\n", api::log_message::Stream::Stderr), &framing);
        assert_eq!(out, b"\x02\0\0\0\0\0\0\x02e\n");
    }

    #[test]
    fn timestamps_and_details_go_before_each_line_and_unasked_streams_are_left_out() {
        let framing = Framing {
            raw: true,
            timestamps: true,
            details: true,
            stdout: true,
            stderr: false,
        };
        let out = frames(
            &message(b"hi\n", api::log_message::Stream::Stdout),
            &framing,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:01.5Z com.docker.swarm.node.id=n,com.docker.swarm.service.id=s,com.docker.swarm.task.id=t hi\n"
        );
        assert!(frames(&message(b"e\n", api::log_message::Stream::Stderr), &framing).is_empty());
    }
}
