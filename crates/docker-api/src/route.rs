//! Which call a request is: its method and its path (after the version) to a [`Route`]. Pure;
//! the server turns each route into control API calls.

use hyper::Method;

use crate::error::ApiError;

/// One call of the Docker Engine API that shoal answers. Ids are as the client gave them: names,
/// full ids or unique prefixes, which the control API resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    SwarmInspect,
    SwarmInit,
    SwarmJoin,
    SwarmLeave,
    SwarmUpdate,
    SwarmUnlockKey,
    SwarmUnlock,
    NodeList,
    NodeInspect(String),
    NodeUpdate(String),
    NodeDelete(String),
    ServiceList,
    ServiceCreate,
    ServiceInspect(String),
    ServiceUpdate(String),
    ServiceDelete(String),
    ServiceLogs(String),
    TaskList,
    TaskInspect(String),
    TaskLogs(String),
    SecretList,
    SecretCreate,
    SecretInspect(String),
    SecretUpdate(String),
    SecretDelete(String),
    ConfigList,
    ConfigCreate,
    ConfigInspect(String),
    ConfigUpdate(String),
    ConfigDelete(String),
    NetworkList,
    NetworkCreate,
    NetworkPrune,
    NetworkInspect(String),
    NetworkDelete(String),
    DistributionInspect(String),
    ContainerList,
    ContainerInspect(String),
    ContainerLogs(String),
    ImageList,
    ImageInspect(String),
    ImageLoad,
    ExecCreate(String),
    ExecStart(String),
    ExecResize(String),
    ExecInspect(String),
}

/// The route of `method` on `path` (the path without its version prefix). A path no route has
/// is Docker's 404 "page not found"; a known path with another method is its 405.
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    if let Some(route) = find(method, path) {
        return Ok(route);
    }
    if [Method::GET, Method::POST, Method::DELETE]
        .iter()
        .any(|other| find(other, path).is_some())
    {
        return Err(ApiError::new(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ));
    }
    Err(ApiError::page_not_found())
}

fn find(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let owned = |s: &str| s.to_owned();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    match segments.as_slice() {
        ["_ping"] if get => Some(Route::Ping),
        ["version"] if get => Some(Route::Version),
        ["info"] if get => Some(Route::Info),
        ["swarm"] if get => Some(Route::SwarmInspect),
        ["swarm", "init"] if post => Some(Route::SwarmInit),
        ["swarm", "join"] if post => Some(Route::SwarmJoin),
        ["swarm", "leave"] if post => Some(Route::SwarmLeave),
        ["swarm", "update"] if post => Some(Route::SwarmUpdate),
        ["swarm", "unlockkey"] if get => Some(Route::SwarmUnlockKey),
        ["swarm", "unlock"] if post => Some(Route::SwarmUnlock),
        ["nodes"] if get => Some(Route::NodeList),
        ["nodes", id] if get => Some(Route::NodeInspect(owned(id))),
        ["nodes", id] if delete => Some(Route::NodeDelete(owned(id))),
        ["nodes", id, "update"] if post => Some(Route::NodeUpdate(owned(id))),
        ["services"] if get => Some(Route::ServiceList),
        ["services", "create"] if post => Some(Route::ServiceCreate),
        ["services", id] if get => Some(Route::ServiceInspect(owned(id))),
        ["services", id] if delete => Some(Route::ServiceDelete(owned(id))),
        ["services", id, "update"] if post => Some(Route::ServiceUpdate(owned(id))),
        ["services", id, "logs"] if get => Some(Route::ServiceLogs(owned(id))),
        ["tasks"] if get => Some(Route::TaskList),
        ["tasks", id] if get => Some(Route::TaskInspect(owned(id))),
        ["tasks", id, "logs"] if get => Some(Route::TaskLogs(owned(id))),
        ["secrets"] if get => Some(Route::SecretList),
        ["secrets", "create"] if post => Some(Route::SecretCreate),
        ["secrets", id] if get => Some(Route::SecretInspect(owned(id))),
        ["secrets", id] if delete => Some(Route::SecretDelete(owned(id))),
        ["secrets", id, "update"] if post => Some(Route::SecretUpdate(owned(id))),
        ["configs"] if get => Some(Route::ConfigList),
        ["configs", "create"] if post => Some(Route::ConfigCreate),
        ["configs", id] if get => Some(Route::ConfigInspect(owned(id))),
        ["configs", id] if delete => Some(Route::ConfigDelete(owned(id))),
        ["configs", id, "update"] if post => Some(Route::ConfigUpdate(owned(id))),
        ["networks"] if get => Some(Route::NetworkList),
        ["networks", "create"] if post => Some(Route::NetworkCreate),
        ["networks", "prune"] if post => Some(Route::NetworkPrune),
        ["networks", id] if get => Some(Route::NetworkInspect(owned(id))),
        ["networks", id] if delete => Some(Route::NetworkDelete(owned(id))),
        // Image names have slashes: everything between `distribution/` and `/json`.
        ["distribution", name @ .., "json"] if get && !name.is_empty() => {
            Some(Route::DistributionInspect(name.join("/")))
        }
        ["containers", "json"] if get => Some(Route::ContainerList),
        ["containers", id, "json"] if get => Some(Route::ContainerInspect(owned(id))),
        ["containers", id, "logs"] if get => Some(Route::ContainerLogs(owned(id))),
        ["containers", id, "exec"] if post => Some(Route::ExecCreate(owned(id))),
        ["exec", id, "start"] if post => Some(Route::ExecStart(owned(id))),
        ["exec", id, "resize"] if post => Some(Route::ExecResize(owned(id))),
        ["exec", id, "json"] if get => Some(Route::ExecInspect(owned(id))),
        ["images", "json"] if get => Some(Route::ImageList),
        ["images", "load"] if post => Some(Route::ImageLoad),
        ["images", name @ .., "json"] if get && !name.is_empty() => {
            Some(Route::ImageInspect(name.join("/")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_name_their_calls() {
        for (method, path, expected) in [
            (Method::HEAD, "/_ping", Route::Ping),
            (Method::GET, "/_ping", Route::Ping),
            (Method::GET, "/swarm", Route::SwarmInspect),
            (Method::POST, "/swarm/init", Route::SwarmInit),
            (Method::GET, "/nodes/", Route::NodeList),
            (
                Method::POST,
                "/nodes/abc/update",
                Route::NodeUpdate("abc".into()),
            ),
            (
                Method::DELETE,
                "/services/web",
                Route::ServiceDelete("web".into()),
            ),
            (Method::POST, "/services/create", Route::ServiceCreate),
            (Method::GET, "/tasks/t1/logs", Route::TaskLogs("t1".into())),
            (Method::GET, "/containers/json", Route::ContainerList),
            (
                Method::GET,
                "/containers/c1/json",
                Route::ContainerInspect("c1".into()),
            ),
            (Method::GET, "/images/json", Route::ImageList),
            (
                Method::POST,
                "/exec/e1/resize",
                Route::ExecResize("e1".into()),
            ),
            (
                Method::GET,
                "/images/localhost:5000/busybox:1/json",
                Route::ImageInspect("localhost:5000/busybox:1".into()),
            ),
            (
                Method::GET,
                "/distribution/127.0.0.1:5000/library/busybox:latest/json",
                Route::DistributionInspect("127.0.0.1:5000/library/busybox:latest".into()),
            ),
        ] {
            assert_eq!(route(&method, path), Ok(expected), "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_not_found_and_wrong_methods_not_allowed() {
        assert_eq!(
            route(&Method::GET, "/nope").unwrap_err(),
            ApiError::page_not_found()
        );
        assert_eq!(
            route(&Method::GET, "/services/a/b/c").unwrap_err(),
            ApiError::page_not_found()
        );
        assert_eq!(
            route(&Method::PUT, "/services/create").unwrap_err().status,
            hyper::StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
