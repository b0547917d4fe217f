//! `--metrics-addr HOST:PORT` (dockerd's flag, off unless given): the daemon's metric families
//! on `GET /metrics` over plain HTTP/1.1, in the Prometheus text format, or in OpenMetrics when
//! the scraper's `Accept` header asks for it. What a request gets is decided by [`answer`];
//! [`serve`] is the shell around it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_metrics::{Format, Metrics};

use crate::error::DaemonError;

/// The one path served.
const METRICS_PATH: &str = "/metrics";

/// Listens on `addr` (resolved as tokio resolves it: `127.0.0.1:9323`, `localhost:9323`).
pub(crate) async fn bind(addr: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::MetricsAddr {
            addr: addr.to_owned(),
            source,
        })
}

/// What a request for `path` with `method` gets: the families encoded by `encode` in the
/// format `accept` asks for, at `/metrics` only.
fn answer(
    method: &Method,
    path: &str,
    accept: Option<&str>,
    encode: impl FnOnce(Format) -> String,
) -> Response<String> {
    let plain = |status: StatusCode, text: &str| {
        let mut response = Response::new(format!("{text}\n"));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if path != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let format = Format::negotiate(accept);
    let body = if method == Method::HEAD {
        String::new()
    } else {
        encode(format)
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// Answers one request. Encoding reads the manager's store (every task, for tasks by state), so
/// it runs off the runtime's worker threads.
async fn respond(metrics: Arc<Metrics>, request: Request<Incoming>) -> Response<String> {
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .map(str::to_owned);
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let encoded = tokio::task::spawn_blocking(move || {
        answer(&method, &path, accept.as_deref(), |format| {
            metrics.encode(format)
        })
    })
    .await;
    encoded.unwrap_or_else(|error| {
        tracing::warn!(%error, "encoding the metrics failed");
        let mut response = Response::new("encoding the metrics failed\n".to_owned());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}

/// Serves `metrics` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(metrics, request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families(format: Format) -> String {
        match format {
            Format::PrometheusText => "text".to_owned(),
            Format::OpenMetrics => "openmetrics".to_owned(),
        }
    }

    #[test]
    fn get_metrics_answers_in_the_format_asked_for() {
        let text = answer(&Method::GET, "/metrics", None, families);
        assert_eq!(text.status(), StatusCode::OK);
        assert_eq!(text.body(), "text");
        assert_eq!(
            text.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let openmetrics = answer(
            &Method::GET,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1"),
            families,
        );
        assert_eq!(openmetrics.body(), "openmetrics");
        assert!(
            openmetrics.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let head = answer(&Method::HEAD, "/metrics", None, families);
        assert_eq!((head.status(), head.body().as_str()), (StatusCode::OK, ""));
    }

    #[test]
    fn other_paths_and_methods_are_refused_saying_what_is_served() {
        let elsewhere = answer(&Method::GET, "/", None, families);
        assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
        assert!(
            elsewhere.body().contains("/metrics"),
            "{}",
            elsewhere.body()
        );
        let post = answer(&Method::POST, "/metrics", None, families);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn an_address_that_cannot_be_listened_on_says_what_to_give() {
        let error = bind("127.0.0.1:not-a-port").await.unwrap_err().to_string();
        assert!(
            error.contains("--metrics-addr HOST:PORT") && error.contains("127.0.0.1:not-a-port"),
            "{error}"
        );
    }
}
