//! Prints a [`ComposeProject`] as YAML in the shape of `docker stack config`: long-form ports,
//! volumes and secrets, Go-style durations, and keys in the order docker's types print them
//! (alphabetical for services, struct order inside `deploy`, sorted map keys).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::*;
use super::yaml::{Node, Value};
use spec::enums::TextForm;
use spec::units::format_duration;

/// An output YAML value. Mappings keep insertion order; callers insert in docker's order.
enum Out {
    Str(String),
    /// Numbers and booleans, printed without quotes.
    Raw(String),
    Seq(Vec<Out>),
    Map(Vec<(String, Out)>),
}

#[derive(Default)]
struct MapBuilder(Vec<(String, Out)>);

impl MapBuilder {
    fn put(&mut self, key: &str, value: Out) -> &mut Self {
        self.0.push((key.to_owned(), value));
        self
    }
    fn str(&mut self, key: &str, value: &Option<String>) -> &mut Self {
        if let Some(value) = value {
            self.put(key, Out::Str(value.clone()));
        }
        self
    }
    fn raw(&mut self, key: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(value) = value {
            self.put(key, Out::Raw(value.to_string()));
        }
        self
    }
    /// An enum's Docker word (`spec::enums`), unquoted as docker prints it.
    fn word(&mut self, key: &str, value: Option<impl TextForm>) -> &mut Self {
        self.raw(key, value.map(TextForm::text))
    }
    fn flag(&mut self, key: &str, value: bool) -> &mut Self {
        if value {
            self.put(key, Out::Raw("true".into()));
        }
        self
    }
    fn duration(&mut self, key: &str, value: Option<std::time::Duration>) -> &mut Self {
        if let Some(value) = value {
            self.put(key, Out::Str(format_duration(value)));
        }
        self
    }
    fn list(&mut self, key: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.put(
                key,
                Out::Seq(values.iter().cloned().map(Out::Str).collect()),
            );
        }
        self
    }
    fn strings(&mut self, key: &str, values: &BTreeMap<String, String>) -> &mut Self {
        if !values.is_empty() {
            self.put(
                key,
                Out::Map(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), Out::Str(v.clone())))
                        .collect(),
                ),
            );
        }
        self
    }
    fn sub(&mut self, key: &str, value: MapBuilder) -> &mut Self {
        if !value.0.is_empty() {
            self.put(key, Out::Map(value.0));
        }
        self
    }
    fn finish(&mut self) -> MapBuilder {
        MapBuilder(std::mem::take(&mut self.0))
    }
}

pub fn to_yaml(project: &ComposeProject) -> String {
    let mut root = MapBuilder::default();
    let services: Vec<(String, Out)> = project
        .services
        .iter()
        .map(|(name, service)| (name.clone(), Out::Map(service_out(service).0)))
        .collect();
    root.put("services", Out::Map(services));
    let named = |objects: Vec<(String, MapBuilder)>| {
        Out::Map(
            objects
                .into_iter()
                .map(|(k, v)| (k, Out::Map(v.0)))
                .collect(),
        )
    };
    if !project.networks.is_empty() {
        root.put(
            "networks",
            named(
                project
                    .networks
                    .iter()
                    .map(|(k, v)| (k.clone(), network_out(v)))
                    .collect(),
            ),
        );
    }
    if !project.volumes.is_empty() {
        root.put(
            "volumes",
            named(
                project
                    .volumes
                    .iter()
                    .map(|(k, v)| (k.clone(), volume_out(v)))
                    .collect(),
            ),
        );
    }
    if !project.secrets.is_empty() {
        root.put(
            "secrets",
            named(
                project
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), file_object_out(v)))
                    .collect(),
            ),
        );
    }
    if !project.configs.is_empty() {
        root.put(
            "configs",
            named(
                project
                    .configs
                    .iter()
                    .map(|(k, v)| (k.clone(), file_object_out(v)))
                    .collect(),
            ),
        );
    }
    for (key, value) in &project.extensions {
        root.put(key, node_out(value));
    }
    let mut text = String::new();
    write_map(&mut text, &root.0, 0);
    text
}

fn service_out(service: &Service) -> MapBuilder {
    // docker's ServiceConfig fields are in alphabetical order of their YAML keys.
    let mut m = MapBuilder::default();
    m.list("cap_add", &service.cap_add)
        .list("cap_drop", &service.cap_drop);
    if let Some(command) = &service.command {
        m.put(
            "command",
            Out::Seq(command.iter().cloned().map(Out::Str).collect()),
        );
    }
    if !service.configs.is_empty() {
        m.put(
            "configs",
            Out::Seq(service.configs.iter().map(file_reference_out).collect()),
        );
    }
    put_depends_on(&mut m, &service.depends_on);
    m.sub("deploy", deploy_out(&service.deploy));
    m.list("dns", &service.dns)
        .list("dns_opt", &service.dns_opt)
        .list("dns_search", &service.dns_search);
    if let Some(entrypoint) = &service.entrypoint {
        m.put(
            "entrypoint",
            Out::Seq(entrypoint.iter().cloned().map(Out::Str).collect()),
        );
    }
    if !service.environment.is_empty() {
        m.put("environment", environment_out(&service.environment));
    }
    m.list("env_file", &service.env_file);
    if !service.extra_hosts.is_empty() {
        let hosts = service
            .extra_hosts
            .iter()
            .map(|(h, ip)| Out::Str(format!("{h}:{ip}")))
            .collect();
        m.put("extra_hosts", Out::Seq(hosts));
    }
    if let Some(check) = &service.healthcheck {
        m.put("healthcheck", healthcheck_out(check));
    }
    m.str("hostname", &service.hostname)
        .str("image", &Some(service.image.clone()))
        .raw("init", service.init)
        .strings("labels", &service.labels);
    if let Some(logging) = &service.logging {
        let mut l = MapBuilder::default();
        l.str("driver", &logging.driver)
            .strings("options", &logging.options);
        m.put("logging", Out::Map(l.0));
    }
    if !service.networks.is_empty() {
        m.put("networks", networks_out(&service.networks));
    }
    if !service.ports.is_empty() {
        m.put(
            "ports",
            Out::Seq(service.ports.iter().map(port_out).collect()),
        );
    }
    m.flag("read_only", service.read_only);
    if !service.secrets.is_empty() {
        m.put(
            "secrets",
            Out::Seq(service.secrets.iter().map(file_reference_out).collect()),
        );
    }
    m.flag("stdin_open", service.stdin_open)
        .duration("stop_grace_period", service.stop_grace_period)
        .str("stop_signal", &service.stop_signal)
        .strings("sysctls", &service.sysctls)
        .list("tmpfs", &service.tmpfs)
        .flag("tty", service.tty);
    if !service.ulimits.is_empty() {
        m.put("ulimits", ulimits_out(&service.ulimits));
    }
    m.str("user", &service.user);
    if !service.volumes.is_empty() {
        m.put(
            "volumes",
            Out::Seq(service.volumes.iter().map(mount_out).collect()),
        );
    }
    m.str("working_dir", &service.working_dir);
    for (key, value) in &service.extensions {
        m.put(key, node_out(value));
    }
    m.finish()
}

/// `depends_on` in docker's short shape (a list of names) unless a condition or `required: false`
/// says more.
fn put_depends_on(m: &mut MapBuilder, depends_on: &BTreeMap<String, DependsOn>) {
    let plain_dependencies = depends_on
        .values()
        .all(|d| d.condition == DependsOnCondition::Started && d.required);
    if plain_dependencies {
        // docker's own shape; the long form appears only when it says more.
        let names: Vec<String> = depends_on.keys().cloned().collect();
        m.list("depends_on", &names);
    } else {
        let mut deps = MapBuilder::default();
        for (name, dependency) in depends_on {
            let mut d = MapBuilder::default();
            d.put("condition", Out::Str(dependency.condition.text().into()));
            if !dependency.required {
                d.put("required", Out::Raw("false".into()));
            }
            deps.put(name, Out::Map(d.0));
        }
        m.sub("depends_on", deps);
    }
}

/// A variable without a value (taken from the environment at deploy) prints as `null`.
fn environment_out(environment: &BTreeMap<String, Option<String>>) -> Out {
    let environment = environment
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Some(v) => Out::Str(v.clone()),
                None => Out::Raw("null".into()),
            };
            (k.clone(), value)
        })
        .collect();
    Out::Map(environment)
}

fn healthcheck_out(check: &Healthcheck) -> Out {
    let mut h = MapBuilder::default();
    h.list("test", &check.test)
        .duration("timeout", check.timeout)
        .duration("interval", check.interval)
        .raw("retries", check.retries)
        .duration("start_period", check.start_period)
        .duration("start_interval", check.start_interval)
        .flag("disable", check.disable);
    Out::Map(h.0)
}

fn networks_out(networks: &BTreeMap<String, ServiceNetwork>) -> Out {
    let networks = networks
        .iter()
        .map(|(name, network)| {
            let mut n = MapBuilder::default();
            n.list("aliases", &network.aliases)
                .str("ipv4_address", &network.ipv4_address)
                .str("ipv6_address", &network.ipv6_address);
            // docker prints a network without options as `name: null`.
            let value = if n.0.is_empty() {
                Out::Raw("null".into())
            } else {
                Out::Map(n.0)
            };
            (name.clone(), value)
        })
        .collect();
    Out::Map(networks)
}

fn port_out(port: &Port) -> Out {
    let mut p = MapBuilder::default();
    p.put("mode", Out::Str(port.mode.text().into()))
        .raw("target", Some(port.target))
        .raw("published", port.published)
        .put("protocol", Out::Str(port.protocol.text().into()));
    if port.traffic_policy != TrafficPolicy::PreferLocal {
        p.put(
            "x-traffic-policy",
            Out::Str(port.traffic_policy.text().into()),
        );
    }
    Out::Map(p.0)
}

/// A limit whose soft and hard values are equal prints as one number.
fn ulimits_out(ulimits: &BTreeMap<String, Ulimit>) -> Out {
    let ulimits = ulimits
        .iter()
        .map(|(name, limit)| {
            let value = if limit.soft == limit.hard {
                Out::Raw(limit.soft.to_string())
            } else {
                let mut u = MapBuilder::default();
                u.raw("soft", Some(limit.soft))
                    .raw("hard", Some(limit.hard));
                Out::Map(u.0)
            };
            (name.clone(), value)
        })
        .collect();
    Out::Map(ulimits)
}

fn deploy_out(deploy: &Deploy) -> MapBuilder {
    let mut m = MapBuilder::default();
    m.word("mode", deploy.mode)
        .raw("replicas", deploy.replicas)
        .strings("labels", &deploy.labels);
    if let Some(update) = &deploy.update_config {
        m.put("update_config", Out::Map(update_out(update).0));
    }
    if let Some(rollback) = &deploy.rollback_config {
        m.put("rollback_config", Out::Map(update_out(rollback).0));
    }
    let mut resources = MapBuilder::default();
    for (key, limits) in [
        ("limits", &deploy.resources.limits),
        ("reservations", &deploy.resources.reservations),
    ] {
        if let Some(limits) = limits {
            let mut l = MapBuilder::default();
            l.str("cpus", &limits.cpus)
                .raw("memory", limits.memory_bytes)
                .raw("pids", limits.pids);
            resources.put(key, Out::Map(l.0));
        }
    }
    m.sub("resources", resources);
    if let Some(policy) = &deploy.restart_policy {
        let mut r = MapBuilder::default();
        r.word("condition", policy.condition)
            .duration("delay", policy.delay)
            .raw("max_attempts", policy.max_attempts)
            .duration("window", policy.window);
        m.put("restart_policy", Out::Map(r.0));
    }
    let mut placement = MapBuilder::default();
    placement.list("constraints", &deploy.placement.constraints);
    if !deploy.placement.preferences.is_empty() {
        let preferences = deploy
            .placement
            .preferences
            .iter()
            .map(|spread| Out::Map(vec![("spread".into(), Out::Str(spread.clone()))]))
            .collect();
        placement.put("preferences", Out::Seq(preferences));
    }
    placement.raw(
        "max_replicas_per_node",
        deploy.placement.max_replicas_per_node,
    );
    m.sub("placement", placement);
    m.word("endpoint_mode", deploy.endpoint_mode);
    m.finish()
}

fn update_out(config: &UpdateConfig) -> MapBuilder {
    let mut m = MapBuilder::default();
    m.raw("parallelism", config.parallelism)
        .duration("delay", config.delay)
        .word("failure_action", config.failure_action)
        .duration("monitor", config.monitor)
        .raw("max_failure_ratio", config.max_failure_ratio)
        .word("order", config.order);
    m.finish()
}

fn mount_out(mount: &Mount) -> Out {
    let mut m = MapBuilder::default();
    m.put("type", Out::Str(mount.kind.text().into()))
        .str("source", &mount.source)
        .put("target", Out::Str(mount.target.clone()))
        .flag("read_only", mount.read_only);
    let mut bind = MapBuilder::default();
    if let Some(propagation) = mount.bind_propagation {
        bind.put("propagation", Out::Str(propagation.text().into()));
    }
    m.sub("bind", bind);
    let mut volume = MapBuilder::default();
    volume.flag("nocopy", mount.volume_nocopy);
    m.sub("volume", volume);
    let mut tmpfs = MapBuilder::default();
    tmpfs.raw("size", mount.tmpfs_size_bytes);
    m.sub("tmpfs", tmpfs);
    Out::Map(m.0)
}

fn file_reference_out(reference: &FileReference) -> Out {
    let mut m = MapBuilder::default();
    m.put("source", Out::Str(reference.source.clone()))
        .str("target", &reference.target)
        .str("uid", &reference.uid)
        .str("gid", &reference.gid)
        // Decimal, as docker prints it: unambiguous to YAML 1.1 and 1.2 readers alike.
        .raw("mode", reference.mode);
    Out::Map(m.0)
}

fn network_out(network: &Network) -> MapBuilder {
    let mut m = MapBuilder::default();
    m.str("name", &network.name)
        .str("driver", &network.driver)
        .strings("driver_opts", &network.driver_opts);
    if let Some(ipam) = &network.ipam {
        let mut i = MapBuilder::default();
        i.str("driver", &ipam.driver);
        if !ipam.config.is_empty() {
            let pools = ipam
                .config
                .iter()
                .map(|pool| {
                    let mut p = MapBuilder::default();
                    p.str("subnet", &pool.subnet)
                        .str("ip_range", &pool.ip_range)
                        .str("gateway", &pool.gateway);
                    Out::Map(p.0)
                })
                .collect();
            i.put("config", Out::Seq(pools));
        }
        m.put("ipam", Out::Map(i.0));
    }
    if network.external {
        m.put("external", Out::Raw("true".into()));
    }
    m.flag("internal", network.internal)
        .flag("attachable", network.attachable)
        .flag("enable_ipv6", network.enable_ipv6)
        .strings("labels", &network.labels);
    m.finish()
}

fn volume_out(volume: &Volume) -> MapBuilder {
    let mut m = MapBuilder::default();
    m.str("name", &volume.name)
        .str("driver", &volume.driver)
        .strings("driver_opts", &volume.driver_opts)
        .flag("external", volume.external)
        .strings("labels", &volume.labels);
    m.finish()
}

fn file_object_out(object: &FileObject) -> MapBuilder {
    let mut m = MapBuilder::default();
    m.str("name", &object.name)
        .str("file", &object.file)
        .flag("external", object.external)
        .strings("labels", &object.labels)
        .str("template_driver", &object.template_driver);
    m.finish()
}

/// Extension fields are printed as written, with plain scalars left unquoted where safe.
fn node_out(node: &Node) -> Out {
    match &node.value {
        Value::Null => Out::Raw("null".into()),
        Value::Scalar(scalar) if !scalar.quoted && !needs_quotes(&scalar.text) => {
            Out::Raw(scalar.text.clone())
        }
        Value::Scalar(scalar) => Out::Str(scalar.text.clone()),
        Value::Seq(items) => Out::Seq(items.iter().map(node_out).collect()),
        Value::Map(entries) => {
            let mut sorted: Vec<_> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            Out::Map(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.name.clone(), node_out(v)))
                    .collect(),
            )
        }
    }
}

fn write_map(out: &mut String, entries: &[(String, Out)], indent: usize) {
    for (key, value) in entries {
        let key = scalar_text(key);
        pad(out, indent);
        write_value(out, &key, value, indent);
    }
}

/// Writes `key: value` (the key already indented) and any nested block.
fn write_value(out: &mut String, key: &str, value: &Out, indent: usize) {
    match value {
        Out::Str(text) => {
            let _ = writeln!(out, "{key}: {}", scalar_text(text));
        }
        Out::Raw(text) => {
            let _ = writeln!(out, "{key}: {text}");
        }
        Out::Map(entries) if entries.is_empty() => {
            let _ = writeln!(out, "{key}: {{}}");
        }
        Out::Seq(items) if items.is_empty() => {
            let _ = writeln!(out, "{key}: []");
        }
        Out::Map(entries) => {
            let _ = writeln!(out, "{key}:");
            write_map(out, entries, indent + 2);
        }
        Out::Seq(items) => {
            let _ = writeln!(out, "{key}:");
            // Sequence items sit at the parent key's indentation, as go-yaml prints them.
            write_seq(out, items, indent);
        }
    }
}

fn write_seq(out: &mut String, items: &[Out], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Out::Str(text) => {
                let _ = writeln!(out, "{}", scalar_text(text));
            }
            Out::Raw(text) => {
                let _ = writeln!(out, "{text}");
            }
            Out::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
            Out::Seq(items) if items.is_empty() => out.push_str("[]\n"),
            Out::Map(entries) => {
                // The first entry shares the dash's line; the rest line up under it.
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        pad(out, indent + 2);
                    }
                    write_value(out, &scalar_text(key), value, indent + 2);
                }
            }
            Out::Seq(inner) => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Anything a YAML 1.1 or 1.2 reader could take for a number: `123`, `-1`, `1.5`, `1e3`, `0x1f`,
/// `0o17`, octal-looking `0400` and YAML 1.1's base-60 `12:30`.
fn looks_like_number(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if let Some(hex) = unsigned.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    if let Some(octal) = unsigned.strip_prefix("0o") {
        return !octal.is_empty() && octal.chars().all(|c| matches!(c, '0'..='7' | '_'));
    }
    unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | 'e' | 'E' | '-' | '+'))
}

/// Quotes a string only when a YAML reader would otherwise see something else in it.
fn scalar_text(text: &str) -> String {
    if needs_quotes(text) {
        let mut quoted = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                '\n' => quoted.push_str("\\n"),
                '\t' => quoted.push_str("\\t"),
                '\r' => quoted.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(quoted, "\\u{:04x}", c as u32);
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    } else {
        text.to_owned()
    }
}

fn needs_quotes(text: &str) -> bool {
    if text.is_empty() || text.trim() != text {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "<<"
    ) {
        return true;
    }
    if looks_like_number(text) {
        return true;
    }
    if matches!(lower.as_str(), ".inf" | "-.inf" | "+.inf" | ".nan") {
        return true;
    }
    if text.starts_with([
        ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
    ]) {
        return true;
    }
    // `-f` and `:x` are plain scalars; `- x` or a lone `-` would start a sequence or a key.
    if text.starts_with(['-', '?', ':']) && text.chars().nth(1).is_none_or(char::is_whitespace) {
        return true;
    }
    text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for plain in [
            "-c",
            "local/web:1",
            "http://api:7000",
            "node.role == manager",
            "sh",
            "1m30s",
            "a b",
        ] {
            assert_eq!(scalar_text(plain), plain);
        }
        for quoted in [
            "",
            "true",
            "no",
            "123",
            "0400",
            "1.5",
            "-",
            "- c",
            "-1",
            "a: b",
            "x #y",
            "{{.Task.Slot}}",
            "*",
            "costs $3\n",
        ] {
            assert!(scalar_text(quoted).starts_with('"'), "{quoted}");
        }
    }

    #[test]
    fn block_layout() {
        let value = Out::Map(vec![
            (
                "a".into(),
                Out::Seq(vec![
                    Out::Str("x".into()),
                    Out::Map(vec![
                        ("k".into(), Out::Raw("1".into())),
                        ("l".into(), Out::Seq(vec![Out::Str("z".into())])),
                    ]),
                ]),
            ),
            ("b".into(), Out::Map(vec![])),
        ]);
        let Out::Map(entries) = value else {
            unreachable!()
        };
        let mut text = String::new();
        write_map(&mut text, &entries, 0);
        assert_eq!(text, "a:\n- x\n- k: 1\n  l:\n  - z\nb: {}\n");
    }
}
