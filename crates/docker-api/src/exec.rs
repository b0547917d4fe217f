//! `docker exec`: `POST /containers/{id}/exec` makes an exec instance, `POST /exec/{id}/start`
//! runs it (over the connection the client upgrades, as Docker's attach does, or in the answer's
//! body), `POST /exec/{id}/resize` sizes its terminal and `GET /exec/{id}/json` tells its state.
//! The command runs through the engine API's `ExecStream`, the path `shoal container exec`
//! takes: its output is written as it comes, raw with a terminal and in the multiplexed stream's
//! frames without one, and with `AttachStdin` the client's bytes are its stdin, ended when the
//! client half-closes. What the request means (a bad directory, an unknown user) is the
//! engine's to judge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_proto::engine as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{ApiError, Reply};
use crate::logs::push_frame;
use crate::server::{Backend, Body, Call, json, no_content};

/// How many exec instances are remembered; past it, finished ones are forgotten first.
const REMEMBERED_EXECS: usize = 256;

/// How many chunks of output or input wait between the client's connection and the engine's
/// stream before the faster side waits.
const CHANNEL_DEPTH: usize = 32;

/// The most read from the client at once as stdin.
const STDIN_READ_BYTES: usize = 32 * 1024;

/// Docker's exit code for a command that could not be run.
const NOT_RUN: i32 = 126;

/// A terminal size as Docker's API gives it: (height, width).
pub type ConsoleSize = (u32, u32);

/// One exec instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecInstance {
    pub container: String,
    pub args: Vec<String>,
    pub tty: bool,
    pub attach_stdin: bool,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    /// The terminal's size from the start, as create (or start, or a resize before it) said.
    pub console_size: Option<ConsoleSize>,
    pub running: bool,
    pub exit_code: Option<i32>,
    /// The command's host pid, once the engine has said it.
    pub pid: Option<i32>,
}

/// An instance and, while it runs, the way to its engine stream's input (for resizes).
#[derive(Debug)]
struct Exec {
    instance: ExecInstance,
    input: Option<mpsc::Sender<pb::ExecInput>>,
}

/// The node's exec instances, by id.
#[derive(Debug, Clone, Default)]
pub struct Execs(Arc<Mutex<HashMap<String, Exec>>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exec>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: String, instance: ExecInstance) {
        let mut execs = self.lock();
        if execs.len() >= REMEMBERED_EXECS {
            execs.retain(|_, exec| exec.instance.running);
        }
        execs.insert(
            id,
            Exec {
                instance,
                input: None,
            },
        );
    }

    fn get(&self, id: &str) -> Result<ExecInstance, ApiError> {
        self.lock()
            .get(id)
            .map(|exec| exec.instance.clone())
            .ok_or_else(|| no_such_exec(id))
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut ExecInstance)) {
        if let Some(exec) = self.lock().get_mut(id) {
            change(&mut exec.instance);
        }
    }

    /// Marks `id` started, with `input` as the way to its stream; refuses one started before.
    fn start(&self, id: &str, input: mpsc::Sender<pb::ExecInput>) -> Result<(), ApiError> {
        let mut execs = self.lock();
        let exec = execs.get_mut(id).ok_or_else(|| no_such_exec(id))?;
        if exec.instance.running || exec.instance.exit_code.is_some() || exec.input.is_some() {
            return Err(already_started(id));
        }
        exec.instance.running = true;
        exec.input = Some(input);
        Ok(())
    }

    /// Records how `id` ended (`None`: its client went away and it was stopped).
    fn finish(&self, id: &str, exit_code: Option<i32>) {
        if let Some(exec) = self.lock().get_mut(id) {
            exec.instance.running = false;
            exec.instance.exit_code = exit_code;
            exec.input = None;
        }
    }

    fn input(&self, id: &str) -> Option<mpsc::Sender<pb::ExecInput>> {
        self.lock().get(id).and_then(|exec| exec.input.clone())
    }
}

fn no_such_exec(id: &str) -> ApiError {
    ApiError::not_found(format!("No such exec instance: {id}"))
}

fn already_started(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("exec instance {id} has already been started: create another with docker exec"),
    )
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
    console_size: Option<Vec<u32>>,
}

/// What an exec create asks that shoal's exec can't do, worded as what to change.
fn unsupported(body: &CreateBody) -> Option<&'static str> {
    body.privileged.then_some(
        "shoal's exec runs with its container's own capabilities and can't raise them: leave \
         out --privileged (give the service what it needs with --cap-add instead)",
    )
}

/// Docker's `ConsoleSize`, `[height, width]`; absent, null, empty or zero is no size.
fn console_size(size: Option<&[u32]>) -> Option<ConsoleSize> {
    match size? {
        [0, 0] => None,
        [height, width] => Some((*height, *width)),
        _ => None,
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
            console_size: console_size(body.console_size.as_deref()),
            args: body.cmd,
            tty: body.tty,
            attach_stdin: body.attach_stdin,
            env: body.env.unwrap_or_default(),
            workdir: body.working_dir,
            user: body.user,
            ..ExecInstance::default()
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
        "ProcessConfig": {
            "tty": exec.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": false,
            "user": exec.user,
        },
        "OpenStdin": exec.attach_stdin,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": exec.container,
        "DetachKeys": "",
        "Pid": exec.pid.unwrap_or(0),
    })
}

/// `POST /exec/{id}/resize?h=H&w=W`: the running command's terminal takes the size; before
/// the start, it is the size the terminal starts with.
pub async fn resize(backend: &Backend, call: &Call, id: &str) -> Result<Response<Body>, ApiError> {
    let (height, width) = resize_size(call.param("h"), call.param("w"))?;
    let exec = backend.execs.get(id)?;
    if let Some(input) = backend.execs.input(id) {
        let resize = pb::ExecInput {
            input: Some(pb::exec_input::Input::Resize(pb::TerminalSize {
                rows: height,
                columns: width,
            })),
        };
        // A stream already gone is a command that has just exited: nothing left to size.
        let _ = input.send(resize).await;
        return Ok(no_content(StatusCode::OK));
    }
    if exec.exit_code.is_some() || exec.running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("exec instance {id} is not running: there is no terminal to resize"),
        ));
    }
    backend
        .execs
        .update(id, |exec| exec.console_size = Some((height, width)));
    Ok(no_content(StatusCode::OK))
}

/// The `h` and `w` of a resize, both needed, as numbers.
fn resize_size(height: Option<&str>, width: Option<&str>) -> Result<ConsoleSize, ApiError> {
    let number = |name: &str, value: Option<&str>| -> Result<u32, ApiError> {
        let value = value.unwrap_or_default();
        value.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resize {name} {value:?}: give the terminal's size as ?h=ROWS&w=COLUMNS"
            ))
        })
    };
    Ok((number("height", height)?, number("width", width)?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
    console_size: Option<Vec<u32>>,
}

/// The engine stream's first message for `exec`.
fn start_message(exec: &ExecInstance, size: Option<ConsoleSize>) -> pb::ExecInput {
    pb::ExecInput {
        input: Some(pb::exec_input::Input::Start(pb::ExecStart {
            id: exec.container.clone(),
            args: exec.args.clone(),
            tty: exec.tty,
            attach_stdin: exec.attach_stdin,
            env: exec.env.clone(),
            workdir: exec.workdir.clone(),
            user: exec.user.clone(),
            size: size.map(|(rows, columns)| pb::TerminalSize { rows, columns }),
        })),
    }
}

/// Output as the client reads it: raw with a terminal, else a frame of the multiplexed stream
/// naming stdout or stderr.
fn output_bytes(raw: bool, stderr: bool, data: &[u8]) -> Vec<u8> {
    if raw {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() + 8);
    push_frame(&mut out, stderr, data);
    out
}

/// `POST /exec/{id}/start`: over the upgraded connection when the client asks for one (the
/// docker CLI does), else in the body; detached, it only starts. Framing follows the start's
/// `Tty`, as Docker's does; the command's terminal follows the create's.
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
    let exec = backend.execs.get(&id)?;
    if exec.running || exec.exit_code.is_some() {
        return Err(already_started(&id));
    }
    let size = console_size(body.console_size.as_deref()).or(exec.console_size);
    let (input, inputs) = mpsc::channel(CHANNEL_DEPTH);
    let _ = input.send(start_message(&exec, size)).await;
    // Taken before the engine runs anything, so two starts can't both run it.
    backend.execs.start(&id, input.clone())?;
    // The engine answers once the command has started, or with why it could not (which leaves
    // the instance to be started again).
    let outputs = match backend
        .engine
        .exec_stream(tokio_stream::wrappers::ReceiverStream::new(inputs))
        .await
        .answer()
    {
        Ok(outputs) => outputs,
        Err(error) => {
            backend.execs.finish(&id, None);
            return Err(error);
        }
    };
    let raw = body.tty;
    let execs = backend.execs.clone();
    if body.detach {
        drop(input);
        tokio::spawn(async move { relay(outputs, None, raw, &execs, &id).await });
        return Ok(no_content(StatusCode::OK));
    }
    let content_type = HeaderValue::from_static(if raw {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    });
    let (sink, chunks) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    match upgrade {
        Some(upgrade) => {
            let stdin = exec.attach_stdin.then_some(input);
            tokio::spawn(async move {
                let relayed = relay(outputs, Some(sink), raw, &execs, &id);
                tokio::join!(relayed, attach(upgrade, chunks, stdin));
            });
            let mut response = Response::new(crate::server::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
            headers.insert(CONTENT_TYPE, content_type);
            Ok(response)
        }
        None => {
            drop(input);
            tokio::spawn(async move { relay(outputs, Some(sink), raw, &execs, &id).await });
            let frames = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::ReceiverStream::new(chunks),
                |bytes| Ok::<_, std::io::Error>(Frame::data(bytes)),
            );
            let mut response = Response::new(StreamBody::new(frames).boxed());
            response.headers_mut().insert(CONTENT_TYPE, content_type);
            Ok(response)
        }
    }
}

/// Carries exec `id`'s output from the engine to `sink` (the client's connection or body;
/// none when detached) as it comes, and records its pid and exit code, the code before the
/// sink closes (the docker CLI asks for it as soon as the output ends). A sink gone is the
/// client gone: dropping the stream stops the command.
async fn relay(
    mut outputs: tonic::Streaming<pb::ExecOutput>,
    sink: Option<mpsc::Sender<Bytes>>,
    raw: bool,
    execs: &Execs,
    id: &str,
) {
    use pb::exec_output::Output;
    let send = |bytes: Vec<u8>| {
        let sink = sink.clone();
        async move {
            match sink {
                Some(sink) => sink.send(Bytes::from(bytes)).await.is_ok(),
                None => true,
            }
        }
    };
    let code = loop {
        let (stderr, data) = match outputs.message().await {
            Ok(Some(pb::ExecOutput {
                output: Some(Output::ExitCode(code)),
            })) => break Some(code),
            Ok(Some(pb::ExecOutput {
                output: Some(Output::Pid(pid)),
            })) => {
                execs.update(id, |exec| exec.pid = Some(pid));
                continue;
            }
            Ok(Some(pb::ExecOutput {
                output: Some(Output::Stdout(data)),
            })) => (false, data),
            Ok(Some(pb::ExecOutput {
                output: Some(Output::Stderr(data)),
            })) => (true, data),
            Ok(Some(pb::ExecOutput { output: None })) => continue,
            Ok(None) => {
                let message =
                    "the engine's exec stream ended without an exit code: see the daemon's log\n";
                let _ = send(output_bytes(raw, true, message.as_bytes())).await;
                break Some(NOT_RUN);
            }
            Err(status) => {
                let message = format!("{}\n", status.message());
                let _ = send(output_bytes(raw, true, message.as_bytes())).await;
                break Some(NOT_RUN);
            }
        };
        if !send(output_bytes(raw, stderr, &data)).await {
            tracing::debug!(%id, "exec: the client went away; stopping its command");
            break None;
        }
    };
    execs.finish(id, code);
}

/// Serves the upgraded connection: `chunks` out to the client until they end, then the write
/// side closed; with `stdin`, the client's bytes in as the command's stdin, its half-close as
/// the stdin's end.
async fn attach(
    upgrade: hyper::upgrade::OnUpgrade,
    mut chunks: mpsc::Receiver<Bytes>,
    stdin: Option<mpsc::Sender<pb::ExecInput>>,
) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            // Dropping `chunks` tells the relay the client is gone.
            tracing::debug!(%error, "exec: the client's upgrade failed");
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let forwarding = async move {
        let Some(stdin) = stdin else {
            return;
        };
        let mut buffer = vec![0u8; STDIN_READ_BYTES];
        loop {
            let input = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => pb::exec_input::Input::CloseStdin(pb::Empty {}),
                Ok(n) => pb::exec_input::Input::Stdin(buffer[..n].to_vec()),
            };
            let end = matches!(input, pb::exec_input::Input::CloseStdin(_));
            if stdin
                .send(pb::ExecInput { input: Some(input) })
                .await
                .is_err()
                || end
            {
                return;
            }
        }
    };
    let writing = async move {
        while let Some(chunk) = chunks.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    // The connection is done once the output is: input still unread no longer matters.
    tokio::select! {
        () = writing => {}
        () = async { forwarding.await; std::future::pending::<()>().await } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_body(value: Value) -> CreateBody {
        CreateBody::deserialize(&value).expect("a create body")
    }

    #[test]
    fn only_privileged_is_refused_naming_what_to_do() {
        let body = |value: Value| unsupported(&create_body(value));
        assert_eq!(body(json!({"Cmd": ["ls"]})), None);
        for asked in [
            json!({"Cmd": ["sh"], "Tty": true, "AttachStdin": true}),
            json!({"Cmd": ["sh"], "User": "1", "WorkingDir": "/tmp", "Env": ["A=b"]}),
            json!({"Cmd": ["ls"], "Env": null}),
        ] {
            assert_eq!(body(asked.clone()), None, "{asked}");
        }
        let privileged = body(json!({"Cmd": ["sh"], "Privileged": true})).expect("refused");
        assert!(
            privileged.contains("leave out --privileged"),
            "{privileged}"
        );
    }

    #[test]
    fn console_sizes_are_height_then_width_and_zero_is_none() {
        assert_eq!(console_size(Some(&[24, 80])), Some((24, 80)));
        assert_eq!(console_size(Some(&[0, 0])), None);
        assert_eq!(console_size(Some(&[])), None);
        assert_eq!(console_size(None), None);
        let body = create_body(json!({"Cmd": ["sh"], "ConsoleSize": [30, 100]}));
        assert_eq!(console_size(body.console_size.as_deref()), Some((30, 100)));
        let body = create_body(json!({"Cmd": ["sh"], "ConsoleSize": null}));
        assert_eq!(console_size(body.console_size.as_deref()), None);
    }

    #[test]
    fn a_resize_needs_both_numbers() {
        assert_eq!(resize_size(Some("40"), Some("120")).unwrap(), (40, 120));
        let missing = resize_size(Some("40"), None).unwrap_err();
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert!(
            missing.message.contains("?h=ROWS&w=COLUMNS"),
            "{}",
            missing.message
        );
        assert!(resize_size(Some("-1"), Some("80")).is_err());
    }

    #[test]
    fn output_is_raw_with_a_terminal_and_framed_without() {
        assert_eq!(output_bytes(true, false, b"a\nb"), b"a\nb");
        assert_eq!(
            output_bytes(false, false, b"a\nb"),
            b"\x01\0\0\0\0\0\0\x03a\nb"
        );
        assert_eq!(output_bytes(false, true, b"e"), b"\x02\0\0\0\0\0\0\x01e");
    }

    #[test]
    fn the_engine_is_asked_for_what_the_exec_was_created_with() {
        let exec = ExecInstance {
            container: "c1".into(),
            args: vec!["sh".into()],
            tty: true,
            attach_stdin: true,
            env: vec!["A=b".into()],
            workdir: "/tmp".into(),
            user: "nobody".into(),
            ..ExecInstance::default()
        };
        let Some(pb::exec_input::Input::Start(start)) = start_message(&exec, Some((24, 80))).input
        else {
            panic!("not a start");
        };
        assert_eq!(
            start,
            pb::ExecStart {
                id: "c1".into(),
                args: vec!["sh".into()],
                tty: true,
                attach_stdin: true,
                env: vec!["A=b".into()],
                workdir: "/tmp".into(),
                user: "nobody".into(),
                size: Some(pb::TerminalSize {
                    rows: 24,
                    columns: 80
                }),
            }
        );
    }

    #[test]
    fn inspect_tells_the_process_and_its_state() {
        let exec = ExecInstance {
            container: "c1".into(),
            args: vec!["ls".into(), "-l".into()],
            tty: true,
            attach_stdin: true,
            user: "1000".into(),
            running: true,
            pid: Some(4242),
            ..ExecInstance::default()
        };
        let value = inspect_json("e1", &exec);
        assert_eq!(value["Running"], true);
        assert_eq!(value["ExitCode"], Value::Null);
        assert_eq!(value["Pid"], 4242);
        assert_eq!(value["OpenStdin"], true);
        assert_eq!(
            value["ProcessConfig"],
            json!({"tty": true, "entrypoint": "ls", "arguments": ["-l"], "privileged": false, "user": "1000"})
        );
    }

    #[test]
    fn an_exec_starts_once() {
        let execs = Execs::default();
        execs.insert("e1".into(), ExecInstance::default());
        let (input, _inputs) = mpsc::channel(1);
        assert!(execs.start("e1", input.clone()).is_ok());
        assert_eq!(
            execs.start("e1", input.clone()).unwrap_err().status,
            StatusCode::CONFLICT
        );
        execs.finish("e1", Some(3));
        assert!(execs.input("e1").is_none());
        assert_eq!(execs.get("e1").unwrap().exit_code, Some(3));
        assert_eq!(
            execs.start("e1", input).unwrap_err().status,
            StatusCode::CONFLICT
        );
        assert_eq!(execs.get("nope").unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn ids_are_docker_s_length_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
