//! `/_ping`, `/version`, `/info` and the swarm membership calls' request bodies: Docker's shapes
//! for what a node says about itself, and Docker's init and join requests as shoal's. Pure,
//! except [`HostFacts::read`], which reads the few host facts `/info` reports.

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_proto::api;
use shoal_proto::engine as pb;

use crate::error::ApiError;
use crate::version::{API_VERSION, MIN_API_VERSION};

/// shoal's version, reported where Docker reports the engine's.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Go's name for this machine's architecture, as `/version` spells it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The `Swarm` header of `/_ping`: how this node stands in a swarm.
pub fn swarm_header(info: &api::InfoResponse) -> &'static str {
    use api::info_response::LocalNodeState as State;
    match State::try_from(info.local_node_state).unwrap_or(State::Inactive) {
        State::Inactive => "inactive",
        State::Pending => "pending",
        State::Error => "error",
        State::Locked => "locked",
        State::Active if info.control_available => "active/manager",
        State::Active => "active/worker",
    }
}

/// `GET /version`.
pub fn version_json(kernel_version: &str) -> Value {
    let details = json!({
        "ApiVersion": API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version,
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
        "Experimental": "false",
    });
    json!({
        "Platform": { "Name": "shoal" },
        "Components": [{ "Name": "Engine", "Version": SERVER_VERSION, "Details": details }],
        "Version": SERVER_VERSION,
        "ApiVersion": API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version,
        "BuildTime": "",
    })
}

/// What `/info` says about the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub kernel_version: String,
    pub operating_system: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub data_root: String,
}

impl HostFacts {
    /// Reads them from `/proc` and `/etc/os-release`; what can't be read is left empty.
    pub fn read(data_root: &std::path::Path) -> HostFacts {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let memory_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let operating_system = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|name| name.trim_matches('"').to_owned())
            .unwrap_or_default();
        HostFacts {
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            operating_system,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes: memory_kib * 1024,
            data_root: data_root.display().to_string(),
        }
    }
}

/// The node's containers by state, as `/info` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerCounts {
    pub running: usize,
    pub stopped: usize,
}

impl ContainerCounts {
    pub fn of(containers: &[pb::Container]) -> ContainerCounts {
        let running = containers.iter().filter(|c| c.status == "running").count();
        ContainerCounts {
            running,
            stopped: containers.len() - running,
        }
    }
}

/// `GET /info`: the node, its engine and its Swarm section.
pub fn info_json(
    info: &api::InfoResponse,
    cluster: Option<&api::Cluster>,
    containers: ContainerCounts,
    images: usize,
    host: &HostFacts,
    now: std::time::SystemTime,
) -> Value {
    let mut engine = json!({
        "ID": info.node_id,
        "Containers": containers.running + containers.stopped,
        "ContainersRunning": containers.running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.stopped,
        "Images": images,
        "Driver": "overlayfs",
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": ["bridge", "overlay"], "Authorization": null, "Log": ["json-file"] },
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
    });
    let more = json!({
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": spec::time::rfc3339_nano(now),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "NEventsListener": 0,
        "KernelVersion": host.kernel_version,
        "OperatingSystem": host.operating_system,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "",
        "NCPU": host.cpus,
        "MemTotal": host.memory_bytes,
        "DockerRootDir": host.data_root,
        "Name": info.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": info.engine_version,
        "Runtimes": { "shoal": { "path": "shoal" } },
        "DefaultRuntime": "shoal",
        "Swarm": crate::shape::swarm::swarm_info_json(info, cluster),
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "shoal",
        "SecurityOptions": [],
        "Warnings": null,
    });
    // Two literals: one would pass json!'s recursion limit.
    if let (Value::Object(info), Value::Object(more)) = (&mut engine, more) {
        info.extend(more);
    }
    engine
}

/// Reads a JSON body into `T`, answering a body of the wrong shape with Docker's 400 and what
/// is wrong.
fn body_as<T: for<'de> Deserialize<'de> + Default>(
    body: &Value,
    what: &str,
) -> Result<T, ApiError> {
    if body.is_null() {
        return Ok(T::default());
    }
    T::deserialize(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// A string field of a JSON object; absent is empty.
pub fn string_field(body: &Value, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid {name}: {other} is not a string"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitBody {
    listen_addr: String,
    advertise_addr: String,
    data_path_addr: String,
    data_path_port: u32,
    default_addr_pool: Vec<String>,
    force_new_cluster: bool,
    subnet_size: u32,
    auto_lock_managers: bool,
    spec: InitSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitSpec {
    orchestration: InitOrchestration,
    dispatcher: InitDispatcher,
    encryption_config: InitEncryption,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitOrchestration {
    task_history_retention_limit: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitDispatcher {
    /// Nanoseconds.
    heartbeat_period: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitEncryption {
    auto_lock_managers: bool,
}

/// The data path's port: VXLAN's, the only one shoal's overlay uses.
const DATA_PATH_PORT: u32 = 4789;

/// `POST /swarm/init`'s body as the swarm service's request.
pub fn init_request(body: &Value) -> Result<api::InitRequest, ApiError> {
    let body: InitBody = body_as(body, "swarm init request")?;
    if body.data_path_port != 0 && body.data_path_port != DATA_PATH_PORT {
        return Err(ApiError::bad_request(format!(
            "data path port {} is not supported: shoal's overlay uses {DATA_PATH_PORT}; leave --data-path-port out",
            body.data_path_port
        )));
    }
    if !body.data_path_addr.is_empty() {
        return Err(ApiError::bad_request(
            "a separate data path address is not supported: shoal's overlay uses the advertise address; leave --data-path-addr out",
        ));
    }
    Ok(api::InitRequest {
        advertise_addr: body.advertise_addr,
        listen_addr: body.listen_addr,
        default_addr_pool: body.default_addr_pool,
        subnet_size: body.subnet_size,
        task_history_limit: body.spec.orchestration.task_history_retention_limit,
        dispatcher_heartbeat: (body.spec.dispatcher.heartbeat_period > 0).then(|| {
            spec::time::proto_duration(std::time::Duration::from_nanos(
                body.spec.dispatcher.heartbeat_period,
            ))
        }),
        force_new_cluster: body.force_new_cluster,
        autolock: body.auto_lock_managers || body.spec.encryption_config.auto_lock_managers,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JoinBody {
    listen_addr: String,
    advertise_addr: String,
    data_path_addr: String,
    remote_addrs: Vec<String>,
    join_token: String,
}

/// `POST /swarm/join`'s body as the swarm service's request: the first remote address is the
/// manager asked.
pub fn join_request(body: &Value) -> Result<api::JoinRequest, ApiError> {
    let body: JoinBody = body_as(body, "swarm join request")?;
    if !body.data_path_addr.is_empty() {
        return Err(ApiError::bad_request(
            "a separate data path address is not supported: shoal's overlay uses the advertise address; leave --data-path-addr out",
        ));
    }
    let Some(remote_addr) = body.remote_addrs.into_iter().next() else {
        return Err(ApiError::bad_request(
            "no remote address to join: give a manager's HOST:PORT",
        ));
    };
    Ok(api::JoinRequest {
        remote_addr,
        token: body.join_token,
        advertise_addr: body.advertise_addr,
        listen_addr: body.listen_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_header_says_how_the_node_stands() {
        use api::info_response::LocalNodeState as State;
        let info = |state: State, control_available| api::InfoResponse {
            local_node_state: state as i32,
            control_available,
            ..Default::default()
        };
        assert_eq!(swarm_header(&info(State::Inactive, false)), "inactive");
        assert_eq!(swarm_header(&info(State::Active, true)), "active/manager");
        assert_eq!(swarm_header(&info(State::Active, false)), "active/worker");
        assert_eq!(swarm_header(&info(State::Locked, false)), "locked");
    }

    #[test]
    fn init_takes_docker_s_body_and_refuses_what_shoal_can_t_honour() {
        let request = init_request(&json!({
            "ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.0.0.1", "ForceNewCluster": false,
            "DefaultAddrPool": ["10.20.0.0/16"], "SubnetSize": 26, "AutoLockManagers": true,
            "Spec": {"Orchestration": {"TaskHistoryRetentionLimit": 2}, "Dispatcher": {"HeartbeatPeriod": 5_000_000_000u64}},
            "Unknown": 1,
        }))
        .unwrap();
        assert_eq!(request.listen_addr, "0.0.0.0:2377");
        assert_eq!(request.advertise_addr, "10.0.0.1");
        assert_eq!(request.default_addr_pool, ["10.20.0.0/16"]);
        assert_eq!(request.subnet_size, 26);
        assert!(request.autolock);
        assert_eq!(request.task_history_limit, Some(2));
        assert_eq!(request.dispatcher_heartbeat.unwrap().seconds, 5);
        assert_eq!(
            init_request(&Value::Null).unwrap(),
            api::InitRequest::default()
        );
        let error = init_request(&json!({"DataPathPort": 7777})).unwrap_err();
        assert!(
            error.message.contains("data path port 7777"),
            "{}",
            error.message
        );
        let error = init_request(&json!({"ListenAddr": 3})).unwrap_err();
        assert!(
            error
                .message
                .starts_with("invalid swarm init request: invalid type"),
            "{}",
            error.message
        );
    }

    #[test]
    fn join_asks_the_first_remote_address() {
        let request = join_request(&json!({
            "ListenAddr": "0.0.0.0:2377", "RemoteAddrs": ["10.0.0.1:2377", "10.0.0.2:2377"],
            "JoinToken": "SWMTKN-1-x", "AdvertiseAddr": "10.0.0.3",
        }))
        .unwrap();
        assert_eq!(request.remote_addr, "10.0.0.1:2377");
        assert_eq!(request.token, "SWMTKN-1-x");
        assert!(
            join_request(&json!({"JoinToken": "t"}))
                .unwrap_err()
                .message
                .contains("no remote address")
        );
    }

    #[test]
    fn version_names_the_served_range() {
        let version = version_json("6.1.0");
        assert_eq!(version["ApiVersion"], "1.51");
        assert_eq!(version["MinAPIVersion"], "1.24");
        assert_eq!(version["Os"], "linux");
        assert_eq!(version["Components"][0]["Name"], "Engine");
    }
}
