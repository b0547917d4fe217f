//! `docker exec`: `POST /containers/{id}/exec` makes an exec instance, `POST /exec/{id}/start`
//! runs it (over the connection the client upgrades, as Docker's attach does, or in the answer's
//! body), and `GET /exec/{id}/json` tells its exit code. The command runs through the engine
//! API's `ExecContainer`, the same path `shoal container exec` takes; its output comes back
//! once it has exited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_proto::engine as pb;
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, Reply};
use crate::logs::push_frame;
use crate::server::{Backend, Body, Call, full, json, no_content};

/// How many exec instances are remembered; past it, finished ones are forgotten first.
const REMEMBERED_EXECS: usize = 256;

/// One exec instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInstance {
    pub container: String,
    pub args: Vec<String>,
    pub running: bool,
    pub exit_code: Option<i32>,
}

/// The node's exec instances, by id.
#[derive(Debug, Clone, Default)]
pub struct Execs(Arc<Mutex<HashMap<String, ExecInstance>>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecInstance>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: String, instance: ExecInstance) {
        let mut execs = self.lock();
        if execs.len() >= REMEMBERED_EXECS {
            execs.retain(|_, exec| exec.running);
        }
        execs.insert(id, instance);
    }

    fn get(&self, id: &str) -> Result<ExecInstance, ApiError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut ExecInstance)) {
        if let Some(exec) = self.lock().get_mut(id) {
            change(exec);
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    attach_stdin: bool,
    tty: bool,
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    privileged: bool,
}

/// What an exec create asks that shoal's exec can't do, worded as what to change.
fn unsupported(body: &CreateBody) -> Option<&'static str> {
    if body.tty {
        Some("shoal runs exec without a terminal: leave out -t")
    } else if body.attach_stdin {
        Some("shoal's exec takes no input: leave out -i")
    } else if body.env.as_ref().is_some_and(|env| !env.is_empty()) {
        Some("shoal's exec runs with the container's environment: leave out -e")
    } else if !body.working_dir.is_empty() {
        Some("shoal's exec runs in the container's working directory: leave out -w")
    } else if !body.user.is_empty() {
        Some("shoal's exec runs as the container's user: leave out -u")
    } else if body.privileged {
        Some("shoal's exec runs with the container's privileges: leave out --privileged")
    } else {
        None
    }
}

/// A fresh exec id: 64 hex characters, as Docker's.
fn new_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    backend: &mut Backend,
    call: &Call,
    container: String,
) -> Result<Response<Body>, ApiError> {
    let value = call.json()?;
    let body: CreateBody = if value.is_null() {
        CreateBody::default()
    } else {
        CreateBody::deserialize(&value)
            .map_err(|e| ApiError::bad_request(format!("invalid exec request: {e}")))?
    };
    if body.cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if let Some(why) = unsupported(&body) {
        return Err(ApiError::bad_request(why));
    }
    // The container must exist; the engine says so in its own words otherwise.
    let found = backend
        .engine
        .inspect_container(pb::ContainerRef { id: container })
        .await
        .answer()?;
    let id = new_id();
    backend.execs.insert(
        id.clone(),
        ExecInstance {
            container: found.id,
            args: body.cmd,
            running: false,
            exit_code: None,
        },
    );
    Ok(json(StatusCode::CREATED, &json!({ "Id": id })))
}

/// `GET /exec/{id}/json`.
pub fn inspect(backend: &Backend, id: &str) -> Result<Response<Body>, ApiError> {
    let exec = backend.execs.get(id)?;
    Ok(json(StatusCode::OK, &inspect_json(id, &exec)))
}

/// Docker's exec inspect document.
pub fn inspect_json(id: &str, exec: &ExecInstance) -> Value {
    let (entrypoint, arguments) = exec
        .args
        .split_first()
        .map_or(("", &[][..]), |(first, rest)| (first.as_str(), rest));
    json!({
        "ID": id,
        "Running": exec.running,
        "ExitCode": exec.exit_code,
        "ProcessConfig": { "tty": false, "entrypoint": entrypoint, "arguments": arguments, "privileged": false },
        "OpenStdin": false,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": exec.container,
        "DetachKeys": "",
        "Pid": 0,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
}

/// Runs exec `id` to its end, recording its exit code before its output is handed back (the
/// docker CLI asks for the code as soon as the output ends).
async fn run(mut backend: Backend, id: String, exec: ExecInstance) -> Vec<u8> {
    let result = backend
        .engine
        .exec_container(pb::ExecRequest {
            id: exec.container.clone(),
            args: exec.args.clone(),
        })
        .await
        .map(tonic::Response::into_inner);
    let (code, bytes) = match result {
        Ok(result) => {
            let mut bytes = raw_frames(false, &result.stdout);
            bytes.extend(raw_frames(true, &result.stderr));
            (result.exit_code, bytes)
        }
        Err(status) => {
            let message = format!("{}\n", status.message());
            (126, raw_frames(true, message.as_bytes()))
        }
    };
    backend.execs.update(&id, |exec| {
        exec.running = false;
        exec.exit_code = Some(code);
    });
    bytes
}

/// Output as frames of the multiplexed stream, one per line, kept as the command wrote it (no
/// newline added to a last line that has none).
fn raw_frames(stderr: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        push_frame(&mut out, stderr, line);
    }
    out
}

/// `POST /exec/{id}/start`: over the upgraded connection when the client asks for one (the
/// docker CLI does), else in the body; detached, it only starts.
pub async fn start(
    backend: &mut Backend,
    call: &Call,
    id: String,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, ApiError> {
    let value = call.json()?;
    let body: StartBody = if value.is_null() {
        StartBody::default()
    } else {
        StartBody::deserialize(&value)
            .map_err(|e| ApiError::bad_request(format!("invalid exec start request: {e}")))?
    };
    if body.tty {
        return Err(ApiError::bad_request(
            "shoal runs exec without a terminal: leave out -t",
        ));
    }
    let exec = backend.execs.get(&id)?;
    if exec.running || exec.exit_code.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("exec instance {id} has already been started"),
        ));
    }
    backend.execs.update(&id, |exec| exec.running = true);
    let runner = backend.clone();
    if body.detach {
        tokio::spawn(run(runner, id, exec));
        return Ok(no_content(StatusCode::OK));
    }
    match upgrade {
        Some(upgrade) => {
            tokio::spawn(async move {
                let bytes = run(runner, id, exec).await;
                match upgrade.await {
                    Ok(upgraded) => {
                        let mut io = hyper_util::rt::TokioIo::new(upgraded);
                        let _ = io.write_all(&bytes).await;
                        let _ = io.shutdown().await;
                    }
                    Err(error) => tracing::debug!(%error, "exec: the client's upgrade failed"),
                }
            });
            let mut response = Response::new(crate::server::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
            );
            Ok(response)
        }
        None => {
            let bytes = run(runner, id, exec).await;
            let mut response = Response::new(full(Bytes::from(bytes)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
            );
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_shoal_s_exec_can_t_do_is_refused_naming_the_flag() {
        let body = |value: Value| CreateBody::deserialize(&value).unwrap();
        assert_eq!(unsupported(&body(json!({"Cmd": ["ls"]}))), None);
        assert!(
            unsupported(&body(json!({"Cmd": ["sh"], "Tty": true})))
                .unwrap()
                .contains("-t")
        );
        assert!(
            unsupported(&body(json!({"Cmd": ["sh"], "AttachStdin": true})))
                .unwrap()
                .contains("-i")
        );
        assert!(
            unsupported(&body(json!({"Cmd": ["sh"], "User": "1"})))
                .unwrap()
                .contains("-u")
        );
        assert_eq!(
            unsupported(&body(json!({"Cmd": ["ls"], "Env": null}))),
            None
        );
    }

    #[test]
    fn output_keeps_its_bytes_in_frames_of_its_stream() {
        assert_eq!(
            raw_frames(false, b"a\nb"),
            b"\x01\0\0\0\0\0\0\x02a\n\x01\0\0\0\0\0\0\x01b"
        );
        assert!(raw_frames(true, b"").is_empty());
    }

    #[test]
    fn ids_are_docker_s_length_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
