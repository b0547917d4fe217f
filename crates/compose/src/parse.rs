//! Turns the merged, interpolated tree into a [`ComposeProject`], checking types, units, modes
//! and references on the way. Errors are collected rather than returned at the first one, so a
//! user fixes a file in one pass.

use std::collections::BTreeMap;
use std::time::Duration;

use spec::enums::TextForm;

use super::ComposeError;
use super::interpolate::Environment;
use super::model::*;
use super::units::{PortSpec, narrow, parse_port_short};
use super::yaml::{Key, Node, Value};

/// Service keys shoal understands.
const SERVICE_KEYS: &[&str] = &[
    "cap_add",
    "cap_drop",
    "command",
    "configs",
    "depends_on",
    "deploy",
    "dns",
    "dns_opt",
    "dns_search",
    "entrypoint",
    "env_file",
    "environment",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "labels",
    "logging",
    "networks",
    "ports",
    "read_only",
    "secrets",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "volumes",
    "working_dir",
];

/// Compose keys that are valid but mean nothing to a swarm service; they get one warning.
const IGNORED_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "devices",
    "domainname",
    "expose",
    "external_links",
    "group_add",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "privileged",
    "profiles",
    "pull_policy",
    "restart",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "storage_opt",
    "userns_mode",
    "uts",
    "volumes_from",
];

const DEPLOY_KEYS: &[&str] = &[
    "endpoint_mode",
    "labels",
    "mode",
    "placement",
    "replicas",
    "resources",
    "restart_policy",
    "rollback_config",
    "update_config",
];

pub struct Parser<'a> {
    pub errors: Vec<ComposeError>,
    /// Key paths of keys swarm ignores, for the single warning.
    pub ignored: Vec<String>,
    pub warnings: Vec<String>,
    /// Directory relative paths are resolved against (the first file's).
    base_dir: &'a str,
    env: &'a Environment,
    sources: &'a dyn super::Sources,
}

type Entries = [(Key, Node)];

impl<'a> Parser<'a> {
    pub fn new(base_dir: &'a str, env: &'a Environment, sources: &'a dyn super::Sources) -> Self {
        Parser {
            errors: Vec::new(),
            ignored: Vec::new(),
            warnings: Vec::new(),
            base_dir,
            env,
            sources,
        }
    }

    fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.errors
            .push(ComposeError::at(&node.mark, path, &message.into()));
    }

    fn error_at_key(&mut self, key: &Key, path: &str, message: impl Into<String>) {
        self.errors
            .push(ComposeError::at(&key.mark, path, &message.into()));
    }

    // ---- typed readers: each reports a wrong type and returns None ----

    fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n Entries> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            Value::Null => Some(&[]),
            _ => {
                self.error(
                    node,
                    path,
                    format!(
                        "expected a mapping of keys to values, got {}",
                        node.kind_name()
                    ),
                );
                None
            }
        }
    }

    /// Reports keys not in `allowed` (extension `x-` keys are always allowed).
    fn check_keys(&mut self, entries: &Entries, path: &str, allowed: &[&str]) {
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) && !key.name.starts_with("x-") {
                let suggestion = closest(&key.name, allowed)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                self.error_at_key(
                    key,
                    &join(path, &key.name),
                    format!(
                        "unknown key `{}`: {suggestion}allowed here: {}",
                        key.name,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(scalar) => Some(scalar.text.clone()),
            _ => {
                self.error(
                    node,
                    path,
                    format!("expected a string, got {}", node.kind_name()),
                );
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        if let Value::Scalar(scalar) = &node.value {
            match scalar.text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => return Some(true),
                "false" | "no" | "off" => return Some(false),
                _ => {}
            }
        }
        self.error(
            node,
            path,
            format!("expected true or false, got {}", describe(node)),
        );
        None
    }

    fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        if let Value::Scalar(scalar) = &node.value
            && let Ok(value) = scalar.text.trim().parse::<i64>()
        {
            return Some(value);
        }
        self.error(
            node,
            path,
            format!("expected a whole number, got {}", describe(node)),
        );
        None
    }

    fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
        let value = self.int(node, path)?;
        match u64::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(node, path, format!("must be 0 or more, got {value}"));
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = self.string(node, path)?;
        // Compose files may pad a value with spaces; the grammar itself is spec's, as for flags.
        match spec::units::parse_duration(text.trim()) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.error(node, path, error.to_string());
                None
            }
        }
    }

    fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = self.string(node, path)?;
        match spec::units::parse_ram_bytes(text.trim()) {
            Ok(size) => Some(size),
            Err(error) => {
                self.error(node, path, error.to_string());
                None
            }
        }
    }

    /// A list of strings; a single string counts as a list of one where compose allows it.
    fn string_list(&mut self, node: &Node, path: &str, single_allowed: bool) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &join(path, &i.to_string())))
                .collect(),
            Value::Scalar(scalar) if single_allowed => vec![scalar.text.clone()],
            Value::Null => Vec::new(),
            _ => {
                self.error(
                    node,
                    path,
                    format!("expected a list of strings, got {}", node.kind_name()),
                );
                Vec::new()
            }
        }
    }

    /// A `KEY: value` mapping or a `["KEY=value"]` list. Values named without `=` or with a null
    /// value come back as `None`.
    fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    let value = match &value.value {
                        Value::Null => None,
                        _ => self.string(value, &join(path, &key.name)),
                    };
                    out.insert(key.name.clone(), value);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(text) = self.string(item, &join(path, &i.to_string())) {
                        match text.split_once('=') {
                            Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                            None => out.insert(text, None),
                        };
                    }
                }
            }
            Value::Null => {}
            Value::Scalar(_) => self.error(
                node,
                path,
                "expected a mapping (KEY: value) or a list of \"KEY=value\" strings, got a scalar",
            ),
        }
        out
    }

    fn labels(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        self.string_map(node, path)
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }

    /// A value of one of the specs' enums, by its Docker word (`spec::enums`, the one table of
    /// those words).
    fn enumeration<T: TextForm>(&mut self, node: &Node, path: &str) -> Option<T> {
        let every: Vec<T> = T::FORMS.iter().map(|(_, value)| *value).collect();
        self.enumeration_among(node, path, &every)
    }

    /// As [`Self::enumeration`], where compose takes only the `allowed` values of the enum.
    fn enumeration_among<T: TextForm>(
        &mut self,
        node: &Node,
        path: &str,
        allowed: &[T],
    ) -> Option<T> {
        let text = self.string(node, path)?;
        match T::parse_among(&text, allowed) {
            Ok(value) => Some(value),
            Err(error) => {
                let words: Vec<&str> = allowed.iter().map(|value| value.text()).collect();
                let suggestion = closest(&text, &words)
                    .map(|word| format!("; did you mean `{word}`?"))
                    .unwrap_or_default();
                self.error(node, path, format!("{error}{suggestion}"));
                None
            }
        }
    }

    fn path_value(&self, text: &str) -> String {
        resolve_path(self.base_dir, text)
    }

    fn template(&mut self, node: &Node, path: &str, text: &str) {
        if let Err(error) = spec::template::check(text) {
            self.error(node, path, error.to_string());
        }
    }

    // ---- the project ----

    pub fn project(&mut self, root: &Node) -> ComposeProject {
        let mut project = ComposeProject::default();
        let Some(entries) = self.map(root, "") else {
            return project;
        };
        self.check_keys(
            entries,
            "",
            &[
                "version", "name", "services", "networks", "volumes", "secrets", "configs",
            ],
        );
        for (key, value) in entries {
            if key.name.starts_with("x-") {
                project.extensions.insert(key.name.clone(), value.clone());
            }
        }
        if let Some(networks) = root.get("networks") {
            project.networks = self.named(networks, "networks", Self::network);
        }
        if let Some(volumes) = root.get("volumes") {
            project.volumes = self.named(volumes, "volumes", Self::volume);
        }
        if let Some(secrets) = root.get("secrets") {
            project.secrets = self.named(secrets, "secrets", |p, n, path| {
                p.file_object(n, path, "secret")
            });
        }
        if let Some(configs) = root.get("configs") {
            project.configs = self.named(configs, "configs", |p, n, path| {
                p.file_object(n, path, "config")
            });
        }
        match root.get("services") {
            Some(services) => {
                if let Some(entries) = self.map(services, "services") {
                    for (key, node) in entries {
                        let path = join("services", &key.name);
                        if !valid_name(&key.name) {
                            self.error_at_key(
                                key,
                                &path,
                                "service names use letters, digits, `_`, `.` and `-`, and start with a letter or digit",
                            );
                        }
                        if let Some(service) = self.service(node, &path, &project) {
                            project.services.insert(key.name.clone(), service);
                        }
                    }
                }
                self.check_dependencies(root, &project);
            }
            None => self.error(
                root,
                "services",
                "the file has no `services:` section: add at least one service",
            ),
        }
        project
    }

    fn named<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse_one: impl Fn(&mut Self, &Node, &str) -> T,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        if let Some(entries) = self.map(node, path) {
            for (key, value) in entries {
                if key.name.starts_with("x-") {
                    continue;
                }
                let item = parse_one(self, value, &join(path, &key.name));
                out.insert(key.name.clone(), item);
            }
        }
        out
    }

    /// `external: true`, or the legacy `external: {name: x}`.
    fn external(&mut self, node: &Node, path: &str, name: &mut Option<String>) -> bool {
        match &node.value {
            Value::Map(entries) => {
                self.check_keys(entries, path, &["name"]);
                if let Some(n) = node.get("name") {
                    *name = self.string(n, &join(path, "name"));
                }
                true
            }
            _ => self.bool(node, path).unwrap_or(false),
        }
    }

    fn network(&mut self, node: &Node, path: &str) -> Network {
        let mut network = Network::default();
        let Some(entries) = self.map(node, path) else {
            return network;
        };
        self.check_keys(
            entries,
            path,
            &[
                "attachable",
                "driver",
                "driver_opts",
                "enable_ipv6",
                "external",
                "internal",
                "ipam",
                "labels",
                "name",
            ],
        );
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "name" => network.name = self.string(value, &p),
                "driver" => network.driver = self.string(value, &p),
                "driver_opts" => network.driver_opts = self.labels(value, &p),
                "attachable" => network.attachable = self.bool(value, &p).unwrap_or(false),
                "internal" => network.internal = self.bool(value, &p).unwrap_or(false),
                "enable_ipv6" => network.enable_ipv6 = self.bool(value, &p).unwrap_or(false),
                "labels" => network.labels = self.labels(value, &p),
                "external" => {
                    let mut name = network.name.take();
                    network.external = self.external(value, &p, &mut name);
                    network.name = name;
                }
                "ipam" => network.ipam = self.ipam(value, &p),
                _ => {}
            }
        }
        if network.external && (network.driver.is_some() || network.ipam.is_some()) {
            self.error(node, path, "an external network is created outside the stack: remove `driver` and `ipam`, or `external`");
        }
        if !network.external {
            // spec's rules, on the spec the deploy would send; the stack's name is not known
            // yet, so a stand-in prefixes the key as the stack's would.
            let key = path.rsplit('.').next().unwrap_or(path);
            let name = network
                .name
                .clone()
                .unwrap_or_else(|| format!("stack_{key}"));
            let spec = crate::convert::network_spec("stack", &name, &network);
            if let Err(error) = spec::validate::network_spec(&spec) {
                self.error(node, path, error.to_string());
            }
        }
        network
    }

    fn ipam(&mut self, node: &Node, path: &str) -> Option<Ipam> {
        let entries = self.map(node, path)?;
        self.check_keys(entries, path, &["driver", "config", "options"]);
        let mut ipam = Ipam::default();
        if let Some(driver) = node.get("driver") {
            ipam.driver = self.string(driver, &join(path, "driver"));
        }
        if let Some(config) = node.get("config") {
            let config_path = join(path, "config");
            match &config.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = join(&config_path, &i.to_string());
                        let Some(entries) = self.map(item, &p) else {
                            continue;
                        };
                        self.check_keys(
                            entries,
                            &p,
                            &["subnet", "ip_range", "gateway", "aux_addresses"],
                        );
                        let mut pool = IpamPool::default();
                        for (key, value) in entries {
                            let vp = join(&p, &key.name);
                            match key.name.as_str() {
                                "subnet" => pool.subnet = self.string(value, &vp),
                                "ip_range" => pool.ip_range = self.string(value, &vp),
                                "gateway" => pool.gateway = self.string(value, &vp),
                                _ => {}
                            }
                        }
                        ipam.config.push(pool);
                    }
                }
                _ => self.error(
                    config,
                    &config_path,
                    "expected a list of pools such as `- subnet: 10.20.0.0/24`",
                ),
            }
        }
        Some(ipam)
    }

    fn volume(&mut self, node: &Node, path: &str) -> Volume {
        let mut volume = Volume::default();
        let Some(entries) = self.map(node, path) else {
            return volume;
        };
        self.check_keys(
            entries,
            path,
            &["driver", "driver_opts", "external", "labels", "name"],
        );
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "name" => volume.name = self.string(value, &p),
                "driver" => volume.driver = self.string(value, &p),
                "driver_opts" => volume.driver_opts = self.labels(value, &p),
                "labels" => volume.labels = self.labels(value, &p),
                "external" => {
                    let mut name = volume.name.take();
                    volume.external = self.external(value, &p, &mut name);
                    volume.name = name;
                }
                _ => {}
            }
        }
        volume
    }

    fn file_object(&mut self, node: &Node, path: &str, what: &str) -> FileObject {
        let mut object = FileObject::default();
        let Some(entries) = self.map(node, path) else {
            return object;
        };
        self.check_keys(
            entries,
            path,
            &["external", "file", "labels", "name", "template_driver"],
        );
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "name" => object.name = self.string(value, &p),
                "file" => object.file = self.string(value, &p).map(|f| self.path_value(&f)),
                "labels" => object.labels = self.labels(value, &p),
                "template_driver" => object.template_driver = self.string(value, &p),
                "external" => {
                    let mut name = object.name.take();
                    object.external = self.external(value, &p, &mut name);
                    object.name = name;
                }
                _ => {}
            }
        }
        match (object.external, object.file.is_some()) {
            (true, true) => self.error(
                node,
                path,
                format!(
                    "a {what} is either `external: true` or has a `file:`, not both: remove one"
                ),
            ),
            (false, false) => self.error(
                node,
                path,
                format!("the {what} has no data: add `file: ./path` or `external: true`"),
            ),
            _ => {}
        }
        object
    }

    // ---- services ----

    fn service(&mut self, node: &Node, path: &str, project: &ComposeProject) -> Option<Service> {
        let entries = self.map(node, path)?;
        let mut service = Service::default();
        for (key, value) in entries {
            let name = key.name.as_str();
            let p = join(path, name);
            if name.starts_with("x-") {
                service.extensions.insert(key.name.clone(), value.clone());
                continue;
            }
            if IGNORED_SERVICE_KEYS.contains(&name) {
                self.ignored.push(p);
                continue;
            }
            match name {
                "image" => service.image = self.string(value, &p).unwrap_or_default(),
                "command" => service.command = self.command(value, &p),
                "entrypoint" => service.entrypoint = self.command(value, &p),
                "environment" => {
                    for (k, v) in self.string_map(value, &p) {
                        // A name without a value takes the value from the environment, as docker does.
                        let v = v.or_else(|| self.env.get(&k).cloned());
                        if let Some(text) = &v {
                            self.template(value, &join(&p, &k), text);
                        }
                        service.environment.insert(k, v);
                    }
                }
                "env_file" => {
                    service.env_file = self
                        .string_list(value, &p, true)
                        .iter()
                        .map(|f| self.path_value(f))
                        .collect()
                }
                "labels" => service.labels = self.labels(value, &p),
                "deploy" => service.deploy = self.deploy(value, &p),
                "ports" => service.ports = self.ports(value, &p),
                "networks" => service.networks = self.service_networks(value, &p, project),
                "volumes" => service.volumes = self.mounts(value, &p, project),
                "secrets" => {
                    service.secrets = self.file_references(value, &p, "secret", &project.secrets)
                }
                "configs" => {
                    service.configs = self.file_references(value, &p, "config", &project.configs)
                }
                "healthcheck" => service.healthcheck = self.healthcheck(value, &p),
                "stop_grace_period" => service.stop_grace_period = self.duration(value, &p),
                "stop_signal" => service.stop_signal = self.string(value, &p),
                "user" => service.user = self.string(value, &p),
                "working_dir" => service.working_dir = self.string(value, &p),
                "hostname" => {
                    service.hostname = self.string(value, &p);
                    if let Some(text) = service.hostname.clone() {
                        self.template(value, &p, &text);
                    }
                }
                "init" => service.init = self.bool(value, &p),
                "read_only" => service.read_only = self.bool(value, &p).unwrap_or(false),
                "tty" => service.tty = self.bool(value, &p).unwrap_or(false),
                "stdin_open" => service.stdin_open = self.bool(value, &p).unwrap_or(false),
                "cap_add" => service.cap_add = self.capabilities(value, &p),
                "cap_drop" => service.cap_drop = self.capabilities(value, &p),
                "sysctls" => service.sysctls = self.sysctls(value, &p),
                "ulimits" => service.ulimits = self.ulimits(value, &p),
                "depends_on" => service.depends_on = self.depends_on(value, &p),
                "logging" => service.logging = self.logging(value, &p),
                "dns" => service.dns = self.checked_list(value, &p, spec::dns::nameserver),
                "dns_search" => {
                    service.dns_search = self.checked_list(value, &p, spec::dns::search_domain);
                }
                "dns_opt" => {
                    service.dns_opt = self.checked_list(value, &p, spec::dns::resolver_option);
                }
                "tmpfs" => service.tmpfs = self.string_list(value, &p, true),
                "extra_hosts" => {
                    service.extra_hosts = self.extra_hosts(value, &p);
                }
                _ => {
                    let hint = if DEPLOY_KEYS.contains(&name) {
                        format!("`{name}` belongs under `deploy:` (e.g. `deploy: {{{name}: ...}}`)")
                    } else {
                        let suggestion =
                            match (closest(name, SERVICE_KEYS), closest(name, DEPLOY_KEYS)) {
                                (Some(key), _) => format!("did you mean `{key}`? "),
                                (None, Some(key)) => {
                                    format!("did you mean `deploy: {{{key}: ...}}`? ")
                                }
                                (None, None) => String::new(),
                            };
                        format!("{suggestion}see the service keys in the Compose Specification")
                    };
                    self.error_at_key(key, &p, format!("unknown service key `{name}`: {hint}"));
                }
            }
        }
        if let Some(value) = node.get("env_file") {
            self.read_env_files(&mut service, value, &join(path, "env_file"));
        }
        if service.image.is_empty() {
            self.error(
                node,
                &join(path, "image"),
                "the service has no image: add `image: NAME:TAG` (swarm services cannot `build`)",
            );
        }
        if let Some(ports) = node.get("ports") {
            self.check_endpoint(&service, ports, &join(path, "ports"));
        }
        Some(service)
    }

    /// The service's ports as a whole, with `spec`'s rules (each published number once, none
    /// through the routing mesh in `dnsrr` mode, no fixed host port with several tasks a node).
    fn check_endpoint(&mut self, service: &Service, node: &Node, path: &str) {
        use shoal_proto::api;
        let spec = api::ServiceSpec {
            task: Some(api::TaskSpec {
                placement: Some(Box::new(super::convert::placement(
                    &service.deploy.placement,
                ))),
                ..Default::default()
            }),
            endpoint: Some(super::convert::endpoint_spec(
                &service.deploy,
                &service.ports,
            )),
            ..Default::default()
        };
        if let Err(error) = spec::validate::service_endpoint(&spec) {
            self.error(node, path, error.to_string());
        }
    }

    /// Adds the variables of the `env_file`s (later files win) under those set in `environment`,
    /// which win over every file, as in docker.
    fn read_env_files(&mut self, service: &mut Service, node: &Node, path: &str) {
        let mut from_files = Environment::new();
        for (index, file) in service.env_file.iter().enumerate() {
            let item = match &node.value {
                Value::Seq(items) => items.get(index).unwrap_or(node),
                _ => node,
            };
            let item_path = match &node.value {
                Value::Seq(_) => join(path, &index.to_string()),
                _ => path.to_owned(),
            };
            match self.sources.read_file(file) {
                Ok(text) => match super::interpolate::parse_dotenv(file, &text) {
                    Ok(variables) => from_files.extend(variables),
                    Err(error) => self.errors.push(error),
                },
                Err(error) => self.error(
                    item,
                    &item_path,
                    format!(
                        "cannot read env file {file}: {error}: create it or remove it from env_file"
                    ),
                ),
            }
        }
        for (name, value) in from_files {
            service.environment.entry(name).or_insert(Some(value));
        }
    }

    /// `command: [a, b]` or a string split like a shell would.
    fn command(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Scalar(scalar) => match shell_split(&scalar.text) {
                Ok(words) => Some(words),
                Err(message) => {
                    self.error(node, path, message);
                    None
                }
            },
            Value::Null => None,
            _ => Some(self.string_list(node, path, false)),
        }
    }

    /// `extra_hosts`: a list of `HOST:IP` (or `HOST=IP`) or a `HOST: IP` mapping, each checked
    /// as `--host` is.
    fn extra_hosts(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = join(path, &i.to_string());
                    let Some(text) = self.string(item, &p) else {
                        continue;
                    };
                    match spec::dns::extra_host(&text) {
                        Ok((host, ip)) => {
                            out.insert(host, ip);
                        }
                        Err(error) => self.error(item, &p, error.to_string()),
                    }
                }
            }
            _ => {
                for (host, ip) in self.labels(node, path) {
                    match spec::dns::host_mapping(&host, &ip) {
                        Ok((host, ip)) => {
                            out.insert(host, ip);
                        }
                        Err(error) => self.error(node, &join(path, &host), error.to_string()),
                    }
                }
            }
        }
        out
    }

    /// A list of strings (or one string), each checked and normalised by `check`, one of
    /// `spec`'s rules, so a file gets the answer a flag gets.
    fn checked_list(
        &mut self,
        node: &Node,
        path: &str,
        check: fn(&str) -> Result<String, spec::SpecError>,
    ) -> Vec<String> {
        let items: Vec<(&Node, String)> = match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, join(path, &i.to_string())))
                .collect(),
            Value::Scalar(_) => vec![(node, path.to_owned())],
            Value::Null => Vec::new(),
            Value::Map(_) => {
                self.error(node, path, "expected a list of strings, got a mapping");
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for (item, item_path) in items {
            let Some(text) = self.string(item, &item_path) else {
                continue;
            };
            match check(&text) {
                Ok(value) => out.push(value),
                Err(error) => self.error(item, &item_path, error.to_string()),
            }
        }
        out
    }

    fn deploy(&mut self, node: &Node, path: &str) -> Deploy {
        let mut deploy = Deploy::default();
        let Some(entries) = self.map(node, path) else {
            return deploy;
        };
        self.check_keys(entries, path, DEPLOY_KEYS);
        let mut replicas_node = None;
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "mode" => {
                    deploy.mode = self.enumeration(value, &p);
                }
                "replicas" => {
                    replicas_node = Some(value);
                    deploy.replicas = self.uint(value, &p);
                }
                "labels" => deploy.labels = self.labels(value, &p),
                "update_config" => deploy.update_config = self.update_config(value, &p, true),
                "rollback_config" => deploy.rollback_config = self.update_config(value, &p, false),
                "resources" => deploy.resources = self.resources(value, &p),
                "restart_policy" => deploy.restart_policy = self.restart_policy(value, &p),
                "placement" => deploy.placement = self.placement(value, &p),
                "endpoint_mode" => {
                    deploy.endpoint_mode = self.enumeration(value, &p);
                }
                _ => {}
            }
        }
        if let (Some(ServiceMode::Global | ServiceMode::GlobalJob), Some(replicas)) =
            (deploy.mode, replicas_node)
        {
            self.error(
                replicas,
                &join(path, "replicas"),
                "a global service runs one task per node: remove `replicas` or use mode `replicated`",
            );
        }
        deploy
    }

    fn update_config(&mut self, node: &Node, path: &str, update: bool) -> Option<UpdateConfig> {
        let entries = self.map(node, path)?;
        self.check_keys(
            entries,
            path,
            &[
                "delay",
                "failure_action",
                "max_failure_ratio",
                "monitor",
                "order",
                "parallelism",
            ],
        );
        let mut config = UpdateConfig::default();
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "parallelism" => config.parallelism = self.uint(value, &p),
                "delay" => config.delay = self.duration(value, &p),
                "monitor" => config.monitor = self.duration(value, &p),
                "failure_action" => {
                    config.failure_action = self.enumeration(value, &p);
                    if let (false, Some(action)) = (update, config.failure_action)
                        && let Err(error) = spec::validate::rollback_failure_action_rule(action)
                    {
                        self.error(value, &p, error.to_string());
                    }
                }
                "max_failure_ratio" => {
                    let text = self.string(value, &p);
                    match text.as_deref().map(spec::validate::max_failure_ratio) {
                        Some(Ok(ratio)) => config.max_failure_ratio = Some(ratio),
                        Some(Err(error)) => self.error(value, &p, error.to_string()),
                        None => {}
                    }
                }
                "order" => config.order = self.enumeration(value, &p),
                _ => {}
            }
        }
        Some(config)
    }

    fn resources(&mut self, node: &Node, path: &str) -> Resources {
        let mut resources = Resources::default();
        let Some(entries) = self.map(node, path) else {
            return resources;
        };
        self.check_keys(entries, path, &["limits", "reservations"]);
        for (key, value) in entries {
            let p = join(path, &key.name);
            let limits = self.resource_limits(value, &p, key.name == "limits");
            match key.name.as_str() {
                "limits" => resources.limits = limits,
                "reservations" => resources.reservations = limits,
                _ => {}
            }
        }
        resources
    }

    fn resource_limits(&mut self, node: &Node, path: &str, limits: bool) -> Option<ResourceLimits> {
        let entries = self.map(node, path)?;
        if limits {
            self.check_keys(entries, path, &["cpus", "memory", "pids"]);
        } else {
            self.check_keys(
                entries,
                path,
                &["cpus", "memory", "generic_resources", "devices"],
            );
        }
        let mut out = ResourceLimits::default();
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "cpus" => {
                    if let Some(text) = self.string(value, &p) {
                        match text.parse::<f64>() {
                            Ok(cpus) if cpus > 0.0 => out.cpus = Some(text),
                            _ => self.error(
                                value,
                                &p,
                                format!(
                                    "invalid cpus {text:?}: use a positive number such as 0.5 or 2"
                                ),
                            ),
                        }
                    }
                }
                "memory" => out.memory_bytes = self.size(value, &p),
                "pids" => out.pids = self.int(value, &p),
                // Not used by shoal's engine; accepted because they are valid compose.
                _ => self
                    .warnings
                    .push(format!("{p} is not supported by shoal and is ignored")),
            }
        }
        Some(out)
    }

    fn restart_policy(&mut self, node: &Node, path: &str) -> Option<RestartPolicy> {
        let entries = self.map(node, path)?;
        self.check_keys(
            entries,
            path,
            &["condition", "delay", "max_attempts", "window"],
        );
        let mut policy = RestartPolicy::default();
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "condition" => policy.condition = self.enumeration(value, &p),
                "delay" => policy.delay = self.duration(value, &p),
                "max_attempts" => policy.max_attempts = self.uint(value, &p),
                "window" => policy.window = self.duration(value, &p),
                _ => {}
            }
        }
        Some(policy)
    }

    fn placement(&mut self, node: &Node, path: &str) -> Placement {
        let mut placement = Placement::default();
        let Some(entries) = self.map(node, path) else {
            return placement;
        };
        self.check_keys(
            entries,
            path,
            &["constraints", "preferences", "max_replicas_per_node"],
        );
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "constraints" => {
                    placement.constraints = self.string_list(value, &p, false);
                    for (i, constraint) in placement.constraints.iter().enumerate() {
                        if !constraint.contains("==") && !constraint.contains("!=") {
                            let item = match &value.value {
                                Value::Seq(items) => items.get(i).unwrap_or(value),
                                _ => value,
                            };
                            self.errors.push(ComposeError::at(
                                &item.mark,
                                &join(&p, &i.to_string()),
                                &format!("constraint {constraint:?} has no operator: write e.g. \"node.role == manager\" or \"node.labels.zone != a\""),
                            ));
                        }
                    }
                }
                "preferences" => {
                    let Value::Seq(items) = &value.value else {
                        self.error(
                            value,
                            &p,
                            "expected a list such as `- spread: node.labels.zone`",
                        );
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        let ip = join(&p, &i.to_string());
                        let Some(entries) = self.map(item, &ip) else {
                            continue;
                        };
                        self.check_keys(entries, &ip, &["spread"]);
                        match item.get("spread") {
                            Some(spread) => {
                                if let Some(text) = self.string(spread, &join(&ip, "spread")) {
                                    placement.preferences.push(text);
                                }
                            }
                            None => self.error(
                                item,
                                &ip,
                                "a preference needs `spread: node.labels.NAME`",
                            ),
                        }
                    }
                }
                "max_replicas_per_node" => placement.max_replicas_per_node = self.uint(value, &p),
                _ => {}
            }
        }
        placement
    }

    fn ports(&mut self, node: &Node, path: &str) -> Vec<Port> {
        let mut ports = Vec::new();
        let Value::Seq(items) = &node.value else {
            if !matches!(node.value, Value::Null) {
                self.error(
                    node,
                    path,
                    format!("expected a list of ports, got {}", node.kind_name()),
                );
            }
            return ports;
        };
        for (i, item) in items.iter().enumerate() {
            let p = join(path, &i.to_string());
            match &item.value {
                Value::Scalar(scalar) => match parse_port_short(&scalar.text) {
                    Ok(specs) => {
                        if specs.iter().any(|s| s.host_ip.is_some()) {
                            self.warnings.push(format!(
                                "{p}: swarm publishes on every address; the host IP is ignored"
                            ));
                        }
                        ports.extend(specs.iter().map(PortSpec::to_port));
                    }
                    Err(message) => self.error(item, &p, message),
                },
                Value::Map(entries) => {
                    self.check_keys(
                        entries,
                        &p,
                        &[
                            "app_protocol",
                            "host_ip",
                            "mode",
                            "name",
                            "protocol",
                            "published",
                            "target",
                        ],
                    );
                    let mut port = Port {
                        mode: PublishMode::Ingress,
                        target: 0,
                        published: None,
                        protocol: Protocol::Tcp,
                        traffic_policy: TrafficPolicy::PreferLocal,
                    };
                    let mut published_range = None;
                    for (key, value) in entries {
                        let vp = join(&p, &key.name);
                        match key.name.as_str() {
                            "target" => {
                                if let Some(text) = self.string(value, &vp) {
                                    match spec::ports::port_number(&text, "target port") {
                                        Ok(target) => port.target = narrow(target),
                                        Err(error) => self.error(value, &vp, error.to_string()),
                                    }
                                }
                            }
                            "published" => {
                                if let Some(text) = self.string(value, &vp) {
                                    match spec::ports::port_range(&text, "published port", true) {
                                        Ok(range) => published_range = Some(range),
                                        Err(error) => self.error(value, &vp, error.to_string()),
                                    }
                                }
                            }
                            "protocol" => {
                                if let Some(protocol) = self.enumeration(value, &vp) {
                                    port.protocol = protocol;
                                }
                            }
                            "mode" => {
                                if let Some(mode) = self.enumeration(value, &vp) {
                                    port.mode = mode;
                                }
                            }
                            "x-traffic-policy" => {
                                if let Some(policy) = self.enumeration(value, &vp) {
                                    port.traffic_policy = policy;
                                }
                            }
                            _ => {}
                        }
                    }
                    if item.get("target").is_none() {
                        self.error(
                            item,
                            &join(&p, "target"),
                            "a port needs `target:`, the port inside the container",
                        );
                    }
                    if port.mode == PublishMode::Host
                        && port.traffic_policy != TrafficPolicy::PreferLocal
                    {
                        self.error(
                            item,
                            &join(&p, "x-traffic-policy"),
                            "x-traffic-policy applies to ports published through the routing mesh (mode: ingress); a mode: host port is served only by the task on its node, so leave it out",
                        );
                    }
                    match published_range {
                        Some((start, end)) => {
                            for published in start..=end {
                                ports.push(Port {
                                    published: (published != 0).then(|| narrow(published)),
                                    ..port.clone()
                                });
                            }
                        }
                        None => ports.push(port),
                    }
                }
                _ => self.error(
                    item,
                    &p,
                    "expected \"PUBLISHED:TARGET\" or a mapping with `target:`",
                ),
            }
        }
        ports
    }

    fn service_networks(
        &mut self,
        node: &Node,
        path: &str,
        project: &ComposeProject,
    ) -> BTreeMap<String, ServiceNetwork> {
        let mut out = BTreeMap::new();
        let mut add = |parser: &mut Self, name: &str, mark_node: &Node, network: ServiceNetwork| {
            // `default` is the stack's own network and needs no declaration.
            if name != "default" && !project.networks.contains_key(name) {
                parser.error(
                    mark_node,
                    &join(path, name),
                    format!("service uses network `{name}`, which is not defined: add it under the top-level `networks:`"),
                );
            }
            out.insert(name.to_owned(), network);
        };
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.string(item, &join(path, &i.to_string())) {
                        add(self, &name, item, ServiceNetwork::default());
                    }
                }
            }
            Value::Map(entries) => {
                for (key, value) in entries {
                    let p = join(path, &key.name);
                    let mut network = ServiceNetwork::default();
                    if let Some(fields) = self.map(value, &p) {
                        self.check_keys(
                            fields,
                            &p,
                            &["aliases", "ipv4_address", "ipv6_address", "priority"],
                        );
                        for (field, v) in fields {
                            let fp = join(&p, &field.name);
                            match field.name.as_str() {
                                "aliases" => network.aliases = self.string_list(v, &fp, false),
                                "ipv4_address" => network.ipv4_address = self.string(v, &fp),
                                "ipv6_address" => network.ipv6_address = self.string(v, &fp),
                                _ => {}
                            }
                        }
                    }
                    let mark_node = Node::new(Value::Null, key.mark.clone());
                    add(self, &key.name, &mark_node, network);
                }
            }
            Value::Null => {}
            Value::Scalar(_) => {
                self.error(node, path, "expected a list of network names or a mapping")
            }
        }
        out
    }

    fn mounts(&mut self, node: &Node, path: &str, project: &ComposeProject) -> Vec<Mount> {
        let mut mounts = Vec::new();
        let Value::Seq(items) = &node.value else {
            if !matches!(node.value, Value::Null) {
                self.error(
                    node,
                    path,
                    format!("expected a list of volumes, got {}", node.kind_name()),
                );
            }
            return mounts;
        };
        for (i, item) in items.iter().enumerate() {
            let p = join(path, &i.to_string());
            let mount = match &item.value {
                Value::Scalar(scalar) => self.short_mount(item, &p, &scalar.text),
                Value::Map(_) => self.long_mount(item, &p),
                _ => {
                    self.error(
                        item,
                        &p,
                        "expected \"SOURCE:TARGET[:ro]\" or a mapping with `type:` and `target:`",
                    );
                    None
                }
            };
            let Some(mount) = mount else { continue };
            if let Some(source) = &mount.source {
                self.template(item, &p, source);
                if mount.kind == MountType::Volume && !project.volumes.contains_key(source) {
                    self.error(
                        item,
                        &p,
                        format!("service uses volume `{source}`, which is not defined: add it under the top-level `volumes:` (or use an absolute path for a bind mount)"),
                    );
                }
            }
            self.template(item, &p, &mount.target);
            mounts.push(mount);
        }
        mounts
    }

    fn short_mount(&mut self, node: &Node, path: &str, text: &str) -> Option<Mount> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, options) = match parts.as_slice() {
            [target] => (None, *target, ""),
            [source, target] => (Some(*source), *target, ""),
            [source, target, options] => (Some(*source), *target, *options),
            _ => {
                self.error(
                    node,
                    path,
                    format!("invalid volume {text:?}: use SOURCE:TARGET or SOURCE:TARGET:ro"),
                );
                return None;
            }
        };
        if !target.starts_with('/') {
            self.error(
                node,
                path,
                format!("the target {target:?} must be an absolute path inside the container"),
            );
            return None;
        }
        let mut mount = Mount {
            kind: MountType::Volume,
            source: None,
            target: target.to_owned(),
            read_only: false,
            bind_propagation: None,
            volume_nocopy: false,
            tmpfs_size_bytes: None,
        };
        if let Some(source) = source {
            if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
                mount.kind = MountType::Bind;
                mount.source = Some(self.path_value(source));
            } else {
                mount.source = Some(source.to_owned());
            }
        }
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option {
                "ro" => mount.read_only = true,
                "rw" => mount.read_only = false,
                "nocopy" => mount.volume_nocopy = true,
                "z" | "Z" => {}
                other => match Propagation::parse(other) {
                    Ok(propagation) => mount.bind_propagation = Some(propagation),
                    Err(_) => self.error(node, path, format!("unknown volume option {other:?}: use ro, rw, nocopy or a bind propagation such as rprivate")),
                },
            }
        }
        Some(mount)
    }

    fn long_mount(&mut self, node: &Node, path: &str) -> Option<Mount> {
        let entries = self.map(node, path)?;
        self.check_keys(
            entries,
            path,
            &[
                "bind",
                "consistency",
                "read_only",
                "source",
                "target",
                "tmpfs",
                "type",
                "volume",
            ],
        );
        let kind = match node.get("type") {
            // Compose's `npipe`, `cluster` and `image` volumes are not swarm mounts shoal runs.
            Some(value) => self.enumeration_among(
                value,
                &join(path, "type"),
                &[MountType::Bind, MountType::Volume, MountType::Tmpfs],
            )?,
            None => {
                self.error(
                    node,
                    &join(path, "type"),
                    "a long-syntax volume needs `type: volume`, `bind` or `tmpfs`",
                );
                return None;
            }
        };
        let target = match node.get("target") {
            Some(value) => self.string(value, &join(path, "target"))?,
            None => {
                self.error(
                    node,
                    &join(path, "target"),
                    "a volume needs `target:`, the path inside the container",
                );
                return None;
            }
        };
        let mut mount = Mount {
            kind,
            source: None,
            target,
            read_only: false,
            bind_propagation: None,
            volume_nocopy: false,
            tmpfs_size_bytes: None,
        };
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "source" => {
                    mount.source = self.string(value, &p).map(|s| {
                        if kind == MountType::Bind {
                            self.path_value(&s)
                        } else {
                            s
                        }
                    })
                }
                "read_only" => mount.read_only = self.bool(value, &p).unwrap_or(false),
                "bind" => {
                    if let Some(fields) = self.map(value, &p) {
                        self.check_keys(
                            fields,
                            &p,
                            &["propagation", "create_host_path", "selinux"],
                        );
                        if let Some(v) = value.get("propagation") {
                            mount.bind_propagation = self.enumeration(v, &join(&p, "propagation"));
                        }
                    }
                }
                "volume" => {
                    if let Some(fields) = self.map(value, &p) {
                        self.check_keys(fields, &p, &["nocopy", "subpath"]);
                        if let Some(v) = value.get("nocopy") {
                            mount.volume_nocopy =
                                self.bool(v, &join(&p, "nocopy")).unwrap_or(false);
                        }
                    }
                }
                "tmpfs" => {
                    if let Some(fields) = self.map(value, &p) {
                        self.check_keys(fields, &p, &["size", "mode"]);
                        if let Some(v) = value.get("size") {
                            mount.tmpfs_size_bytes = self.size(v, &join(&p, "size"));
                        }
                    }
                }
                _ => {}
            }
        }
        match (kind, &mount.source) {
            (MountType::Tmpfs, Some(_)) => self.error(
                node,
                &join(path, "source"),
                "a tmpfs mount has no source: remove `source:`",
            ),
            (MountType::Bind, None) => self.error(
                node,
                &join(path, "source"),
                "a bind mount needs `source:`, a path on the host",
            ),
            _ => {}
        }
        Some(mount)
    }

    fn file_references(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        declared: &BTreeMap<String, FileObject>,
    ) -> Vec<FileReference> {
        let mut out = Vec::new();
        let Value::Seq(items) = &node.value else {
            if !matches!(node.value, Value::Null) {
                self.error(
                    node,
                    path,
                    format!("expected a list of {what}s, got {}", node.kind_name()),
                );
            }
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let p = join(path, &i.to_string());
            let reference = match &item.value {
                Value::Scalar(scalar) => FileReference {
                    source: scalar.text.clone(),
                    ..FileReference::default()
                },
                Value::Map(entries) => {
                    self.check_keys(entries, &p, &["gid", "mode", "source", "target", "uid"]);
                    let mut reference = FileReference::default();
                    for (key, value) in entries {
                        let vp = join(&p, &key.name);
                        match key.name.as_str() {
                            "source" => {
                                reference.source = self.string(value, &vp).unwrap_or_default()
                            }
                            "target" => reference.target = self.string(value, &vp),
                            "uid" => reference.uid = self.string(value, &vp),
                            "gid" => reference.gid = self.string(value, &vp),
                            "mode" => reference.mode = self.file_mode(value, &vp),
                            _ => {}
                        }
                    }
                    if reference.source.is_empty() {
                        self.error(
                            item,
                            &join(&p, "source"),
                            format!(
                                "a {what} reference needs `source:`, the name of a top-level {what}"
                            ),
                        );
                        continue;
                    }
                    reference
                }
                _ => {
                    self.error(
                        item,
                        &p,
                        format!("expected a {what} name or a mapping with `source:`"),
                    );
                    continue;
                }
            };
            if !declared.contains_key(&reference.source) {
                self.error(
                    item,
                    &p,
                    format!(
                        "service uses {what} `{}`, which is not defined: add it under the top-level `{what}s:` with `file:` or `external: true`",
                        reference.source
                    ),
                );
            }
            out.push(reference);
        }
        out
    }

    /// File modes are octal as in docker (`0400`, `0o400`), or decimal without a leading zero.
    fn file_mode(&mut self, node: &Node, path: &str) -> Option<u32> {
        let text = self.string(node, path)?;
        let parsed = if let Some(octal) = text.strip_prefix("0o") {
            u32::from_str_radix(octal, 8)
        } else if text.len() > 1 && text.starts_with('0') {
            u32::from_str_radix(&text[1..], 8)
        } else {
            text.parse::<u32>()
        };
        match parsed {
            Ok(mode) if mode <= 0o7777 => Some(mode),
            _ => {
                self.error(
                    node,
                    path,
                    format!("invalid file mode {text:?}: use octal such as 0400 or 0644"),
                );
                None
            }
        }
    }

    fn healthcheck(&mut self, node: &Node, path: &str) -> Option<Healthcheck> {
        let entries = self.map(node, path)?;
        self.check_keys(
            entries,
            path,
            &[
                "disable",
                "interval",
                "retries",
                "start_interval",
                "start_period",
                "test",
                "timeout",
            ],
        );
        let mut check = Healthcheck::default();
        for (key, value) in entries {
            let p = join(path, &key.name);
            match key.name.as_str() {
                "test" => {
                    check.test = match &value.value {
                        Value::Scalar(scalar) => vec!["CMD-SHELL".into(), scalar.text.clone()],
                        _ => self.string_list(value, &p, false),
                    };
                    if let Some(first) = check.test.first()
                        && !matches!(first.as_str(), "NONE" | "CMD" | "CMD-SHELL")
                    {
                        self.error(value, &p, format!("a test list starts with CMD, CMD-SHELL or NONE, not {first:?}: e.g. [\"CMD\", \"curl\", \"-f\", \"http://localhost\"]"));
                    }
                }
                "interval" => check.interval = self.duration(value, &p),
                "timeout" => check.timeout = self.duration(value, &p),
                "start_period" => check.start_period = self.duration(value, &p),
                "start_interval" => check.start_interval = self.duration(value, &p),
                "retries" => check.retries = self.uint(value, &p),
                "disable" => check.disable = self.bool(value, &p).unwrap_or(false),
                _ => {}
            }
        }
        Some(check)
    }

    /// Capability names as given, each checked against the kernel's list (or `ALL`).
    fn capabilities(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Value::Seq(items) = &node.value else {
            return self.string_list(node, path, false);
        };
        let mut names = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let p = join(path, &index.to_string());
            let Some(name) = self.string(item, &p) else {
                continue;
            };
            match spec::linux::capability_name(&name) {
                Ok(_) => names.push(name),
                Err(error) => self.error(item, &p, error.to_string()),
            }
        }
        names
    }

    /// Kernel parameters, each one the container has its own of.
    fn sysctls(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let sysctls = self.labels(node, path);
        for name in sysctls.keys() {
            if let Err(error) = spec::linux::sysctl_name(name) {
                self.error(node, &join(path, name), error.to_string());
            }
        }
        sysctls
    }

    fn ulimits(&mut self, node: &Node, path: &str) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let p = join(path, &key.name);
            let name = match spec::linux::ulimit_name(&key.name) {
                Ok(name) => name,
                Err(error) => {
                    self.error(value, &p, error.to_string());
                    continue;
                }
            };
            let limit = match &value.value {
                Value::Map(fields) => {
                    self.check_keys(fields, &p, &["soft", "hard"]);
                    let soft = value
                        .get("soft")
                        .and_then(|v| self.int(v, &join(&p, "soft")));
                    let hard = value
                        .get("hard")
                        .and_then(|v| self.int(v, &join(&p, "hard")));
                    match (soft, hard) {
                        (Some(soft), Some(hard)) => match spec::linux::ulimit_values(
                            &name,
                            spec::linux::rlimit_value(soft),
                            spec::linux::rlimit_value(hard),
                        ) {
                            Ok(()) => Some(Ulimit { soft, hard }),
                            Err(error) => {
                                self.error(value, &p, error.to_string());
                                None
                            }
                        },
                        _ => {
                            self.error(
                                value,
                                &p,
                                "a ulimit needs both `soft:` and `hard:`, or a single number",
                            );
                            None
                        }
                    }
                }
                _ => self.int(value, &p).map(|n| Ulimit { soft: n, hard: n }),
            };
            if let Some(limit) = limit {
                out.insert(name, limit);
            }
        }
        out
    }

    fn depends_on(&mut self, node: &Node, path: &str) -> BTreeMap<String, DependsOn> {
        let mut out = BTreeMap::new();
        let started = DependsOn {
            condition: DependsOnCondition::Started,
            required: true,
        };
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.string(item, &join(path, &i.to_string())) {
                        out.insert(name, started.clone());
                    }
                }
            }
            Value::Map(entries) => {
                for (key, value) in entries {
                    let p = join(path, &key.name);
                    let mut dependency = started.clone();
                    if let Some(fields) = self.map(value, &p) {
                        self.check_keys(fields, &p, &["condition", "required", "restart"]);
                        if let Some(condition) = value.get("condition")
                            && let Some(c) = self.enumeration(condition, &join(&p, "condition"))
                        {
                            dependency.condition = c;
                        }
                        if let Some(required) = value.get("required") {
                            dependency.required =
                                self.bool(required, &join(&p, "required")).unwrap_or(true);
                        }
                    }
                    out.insert(key.name.clone(), dependency);
                }
            }
            Value::Null => {}
            Value::Scalar(_) => {
                self.error(node, path, "expected a list of service names or a mapping")
            }
        }
        out
    }

    fn logging(&mut self, node: &Node, path: &str) -> Option<Logging> {
        let entries = self.map(node, path)?;
        self.check_keys(entries, path, &["driver", "options"]);
        let mut logging = Logging::default();
        if let Some(driver) = node.get("driver") {
            logging.driver = self.string(driver, &join(path, "driver"));
        }
        if let Some(options) = node.get("options") {
            logging.options = self.labels(options, &join(path, "options"));
        }
        Some(logging)
    }

    /// Checks that every `depends_on` names a service, and that there is no cycle.
    fn check_dependencies(&mut self, root: &Node, project: &ComposeProject) {
        let services_node = root.get("services");
        let node_of = |service: &str| -> Option<&Node> {
            services_node
                .and_then(|s| s.get(service))
                .and_then(|s| s.get("depends_on"))
        };
        for (name, service) in &project.services {
            for dependency in service.depends_on.keys() {
                if !project.services.contains_key(dependency)
                    && let Some(node) = node_of(name)
                {
                    self.error(
                        node,
                        &format!("services.{name}.depends_on"),
                        format!("`{name}` depends on `{dependency}`, which is not a service in this stack: fix the name or remove it"),
                    );
                }
            }
        }
        let graph: BTreeMap<&str, Vec<&str>> = project
            .services
            .iter()
            .map(|(name, s)| {
                (
                    name.as_str(),
                    s.depends_on.keys().map(String::as_str).collect(),
                )
            })
            .collect();
        if let Some(cycle) = find_cycle(&graph)
            && let Some(node) = node_of(cycle[0])
        {
            self.error(
                node,
                &format!("services.{}.depends_on", cycle[0]),
                format!(
                    "dependency cycle {}: remove one of these depends_on entries",
                    cycle.join(" -> ")
                ),
            );
        }
    }
}

/// Finds a cycle in a dependency graph, returned as `[a, b, a]`.
pub fn find_cycle<'g>(graph: &BTreeMap<&'g str, Vec<&'g str>>) -> Option<Vec<&'g str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    fn visit<'g>(
        node: &'g str,
        graph: &BTreeMap<&'g str, Vec<&'g str>>,
        state: &mut BTreeMap<&'g str, State>,
        stack: &mut Vec<&'g str>,
    ) -> Option<Vec<&'g str>> {
        match state.get(node) {
            Some(State::Done) => return None,
            Some(State::Visiting) => {
                let start = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, State::Visiting);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, State::Done);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// Splits a command string into words the way a POSIX shell would (quotes and backslashes).
pub fn shell_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!(
                                "unclosed ' in command {text:?}: close the quote or use the list form"
                            ));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in command {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!(
                                "unclosed \" in command {text:?}: close the quote or use the list form"
                            ));
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar(scalar) => format!("{:?}", scalar.text),
        _ => node.kind_name().to_owned(),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The allowed key nearest to a misspelt one, if it is close enough to be a typo.
fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|candidate| (strsim::levenshtein(key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate)
}

/// Joins a relative path onto the base directory and removes `.` and `..` parts, as docker
/// prints absolute paths.
pub fn resolve_path(base_dir: &str, path: &str) -> String {
    if path.starts_with('~') {
        return path.to_owned();
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base_dir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_named() {
        let graph: BTreeMap<&str, Vec<&str>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ]
        .into_iter()
        .collect();
        assert_eq!(find_cycle(&graph), Some(vec!["a", "b", "c", "a"]));
        let acyclic: BTreeMap<&str, Vec<&str>> =
            [("a", vec!["b", "c"]), ("b", vec!["c"]), ("c", vec![])]
                .into_iter()
                .collect();
        assert_eq!(find_cycle(&acyclic), None);
        let self_loop: BTreeMap<&str, Vec<&str>> = [("a", vec!["a"])].into_iter().collect();
        assert_eq!(find_cycle(&self_loop), Some(vec!["a", "a"]));
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split(r#"sh -c 'echo "hi there"' "a b" c\ d"#),
            Ok(vec![
                "sh".into(),
                "-c".into(),
                "echo \"hi there\"".into(),
                "a b".into(),
                "c d".into()
            ])
        );
        assert!(shell_split("echo 'oops").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(resolve_path("/srv/app", "./a.txt"), "/srv/app/a.txt");
        assert_eq!(resolve_path("/srv/app", "../b/./c"), "/srv/b/c");
        assert_eq!(resolve_path("/srv/app", "/abs"), "/abs");
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("imgae", SERVICE_KEYS), Some("image"));
        assert_eq!(closest("zzzzzz", SERVICE_KEYS), None);
    }
}
