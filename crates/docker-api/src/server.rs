//! The HTTP shell: accepts connections on the node's Docker socket, reads each request, asks
//! [`route`](crate::route) which call it is and [`calls`](crate::calls) to answer it, and writes
//! Docker's headers and error bodies. No decisions live here.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_proto::api::control_client::ControlClient;
use shoal_proto::api::swarm_client::SwarmClient;
use shoal_proto::engine::engine_client::EngineClient;
use tonic::transport::Channel;

use crate::error::ApiError;
use crate::version::{API_VERSION_TEXT, ApiVersion, split_version};

/// The largest request body read: a service spec or a secret is far smaller.
const MAX_BODY_BYTES: usize = 16 << 20;

/// The body of an answer: whole, or a stream (logs).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What every call goes through: the control, swarm and engine APIs the shoal CLI uses, on the
/// daemon's own socket, and the daemon's data root (which `/info` reports).
#[derive(Clone)]
pub struct Backend {
    pub control: ControlClient<Channel>,
    pub swarm: SwarmClient<Channel>,
    pub engine: EngineClient<Channel>,
    pub data_root: PathBuf,
    /// The exec instances `docker exec` made on this node.
    pub execs: crate::exec::Execs,
}

impl Backend {
    pub fn new(channel: Channel, data_root: PathBuf) -> Backend {
        Backend {
            control: ControlClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            swarm: SwarmClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            engine: EngineClient::new(channel).max_decoding_message_size(64 << 20),
            data_root,
            execs: crate::exec::Execs::default(),
        }
    }
}

/// One request, read: what the call handlers take.
pub struct Call {
    pub method: Method,
    pub version: ApiVersion,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

impl Call {
    /// The query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A boolean query parameter as Docker reads them: `1`, `true` or `True` is true, absent or
    /// anything else false.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("1" | "true" | "True" | "TRUE"))
    }

    /// The body as JSON; an empty body is `null`. Malformed JSON is Docker's 400.
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
    }
}

/// Serves the Docker Engine API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::UnixListener,
    backend: Backend,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Docker API: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(answer(backend, request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%error, "Docker API connection ended");
            }
        });
    }
}

async fn answer(backend: Backend, request: Request<Incoming>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let mut response = match read_and_call(backend, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION_TEXT));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert("Server", HeaderValue::from_static(SERVER));
    if head {
        *response.body_mut() = empty();
    }
    response
}

const SERVER: &str = concat!("Docker/shoal-", env!("CARGO_PKG_VERSION"), " (linux)");

async fn read_and_call(
    mut backend: Backend,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    // `docker exec` upgrades its connection to carry the command's output.
    let upgrade = request
        .headers()
        .contains_key(hyper::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let (version, path) = split_version(parts.uri.path())?;
    let route = crate::route::route(&parts.method, path)?;
    if route == crate::route::Route::ImageLoad {
        // An image archive can be far larger than any other body: it streams to the engine.
        return crate::calls::image_load(backend, body).await;
    }
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    let call = Call {
        method: parts.method,
        version,
        query,
        body,
    };
    if let crate::route::Route::ExecStart(id) = route {
        return crate::exec::start(&mut backend, &call, id, upgrade).await;
    }
    crate::calls::call(backend, route, call).await
}

/// An empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `value` as a JSON answer with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A bodyless answer: 200 or 204 as Docker gives for the call.
pub fn no_content(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = Response::new(full(error.body()));
    *response.status_mut() = error.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
