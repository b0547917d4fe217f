//! A task's container as Docker's `ContainerSpec`, both ways: image, command, environment and
//! user, mounts, healthcheck, name resolution, secrets and configs, privileges and the Linux
//! settings.

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::{TextForm, text_of};

use super::ShapeError;
use super::common::{driver_from_json, driver_json, duration_nanos, insert_nonempty, labels_json};
use super::read::Object;

/// The container a task runs; `None` for a task without one.
pub fn of_task(task: Option<&api::TaskSpec>) -> Option<&api::ContainerSpec> {
    match task?.runtime.as_ref()? {
        api::task_spec::Runtime::Container(container) => Some(container),
        _ => None,
    }
}

/// A mount's type in Docker's word.
pub fn mount_type_name(kind: i32) -> &'static str {
    text_of::<api::mount::Type>(kind)
}

/// A bind mount's propagation; empty for a number the enum does not have.
fn propagation_name(propagation: i32) -> &'static str {
    api::mount::bind_options::Propagation::try_from(propagation).map_or("", TextForm::text)
}

/// Docker's words for a container's isolation, which only Windows tells apart (spec has no
/// words for it: no flag or compose key of shoal's sets it).
fn isolation_name(isolation: i32) -> &'static str {
    use api::container_spec::Isolation;
    match Isolation::try_from(isolation) {
        Ok(Isolation::Process) => "process",
        Ok(Isolation::Hyperv) => "hyperv",
        _ => "default",
    }
}

/// The isolation Docker's word names: as Docker's daemon reads it, `process` and `hyperv` in
/// any case, and anything else the default.
fn isolation_of(text: &str) -> api::container_spec::Isolation {
    use api::container_spec::Isolation;
    if text.eq_ignore_ascii_case("process") {
        Isolation::Process
    } else if text.eq_ignore_ascii_case("hyperv") {
        Isolation::Hyperv
    } else {
        Isolation::Default
    }
}

fn mount_json(mount: &api::Mount) -> Value {
    let mut object = Map::new();
    object.insert("Type".into(), json!(mount_type_name(mount.r#type)));
    insert_nonempty(&mut object, "Source", json!(mount.source));
    object.insert("Target".into(), json!(mount.target));
    insert_nonempty(&mut object, "ReadOnly", json!(mount.readonly));
    if let Some(bind) = &mount.bind_options {
        let mut options = Map::new();
        options.insert(
            "Propagation".into(),
            json!(propagation_name(bind.propagation)),
        );
        insert_nonempty(&mut options, "NonRecursive", json!(bind.nonrecursive));
        insert_nonempty(
            &mut options,
            "CreateMountpoint",
            json!(bind.create_mountpoint),
        );
        object.insert("BindOptions".into(), Value::Object(options));
    }
    if let Some(volume) = &mount.volume_options {
        let mut options = Map::new();
        insert_nonempty(&mut options, "NoCopy", json!(volume.nocopy));
        insert_nonempty(&mut options, "Labels", labels_json(&volume.labels));
        if let Some(driver) = &volume.driver_config {
            options.insert("DriverConfig".into(), driver_json(driver));
        }
        insert_nonempty(&mut options, "Subpath", json!(volume.subpath));
        object.insert("VolumeOptions".into(), Value::Object(options));
    }
    if let Some(tmpfs) = &mount.tmpfs_options {
        let mut options = Map::new();
        insert_nonempty(&mut options, "SizeBytes", json!(tmpfs.size_bytes));
        insert_nonempty(&mut options, "Mode", json!(tmpfs.mode));
        // Stored as the JSON text of Docker's `[][]string`, as Docker's daemon stores it.
        if let Ok(extra) = serde_json::from_str::<Value>(&tmpfs.options) {
            insert_nonempty(&mut options, "Options", extra);
        }
        object.insert("TmpfsOptions".into(), Value::Object(options));
    }
    Value::Object(object)
}

fn mount_from_json(object: &Object<'_>) -> Result<api::Mount, ShapeError> {
    use api::mount::{BindOptions, TmpfsOptions, Type, VolumeOptions, bind_options::Propagation};
    let bind_options = object
        .object("BindOptions", "mount.BindOptions")?
        .map(|bind| {
            // ReadOnlyNonRecursive and ReadOnlyForceRecursive: the proto has no such fields.
            Ok::<_, ShapeError>(BindOptions {
                propagation: bind.word("Propagation", Propagation::Rprivate)? as i32,
                nonrecursive: bind.boolean("NonRecursive")?,
                create_mountpoint: bind.boolean("CreateMountpoint")?,
            })
        })
        .transpose()?;
    let volume_options = object
        .object("VolumeOptions", "mount.VolumeOptions")?
        .map(|volume| {
            Ok::<_, ShapeError>(VolumeOptions {
                nocopy: volume.boolean("NoCopy")?,
                labels: volume.string_map("Labels")?,
                driver_config: driver_from_json(&volume, "DriverConfig")?,
                subpath: volume.string("Subpath")?,
            })
        })
        .transpose()?;
    let tmpfs_options = object
        .object("TmpfsOptions", "mount.TmpfsOptions")?
        .map(|tmpfs| {
            let extra = tmpfs.string_lists("Options")?;
            Ok::<_, ShapeError>(TmpfsOptions {
                size_bytes: tmpfs.int64("SizeBytes")?,
                mode: tmpfs.uint32("Mode", "os.FileMode")?,
                options: if extra.is_empty() {
                    String::new()
                } else {
                    json!(extra).to_string()
                },
            })
        })
        .transpose()?;
    // Consistency (a no-op on Linux, which Docker's daemon drops for services too), and the
    // image and cluster volume options: the proto has no such fields.
    Ok(api::Mount {
        r#type: object.word("Type", Type::Bind)? as i32,
        source: object.string("Source")?,
        target: object.string("Target")?,
        readonly: object.boolean("ReadOnly")?,
        consistency: 0,
        bind_options,
        volume_options,
        tmpfs_options,
    })
}

fn health_json(health: &api::HealthConfig) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Test", json!(health.test));
    for (key, value) in [
        ("Interval", &health.interval),
        ("Timeout", &health.timeout),
        ("StartPeriod", &health.start_period),
        ("StartInterval", &health.start_interval),
    ] {
        if let Some(duration) = value {
            insert_nonempty(&mut object, key, json!(duration_nanos(duration)));
        }
    }
    insert_nonempty(&mut object, "Retries", json!(health.retries));
    Value::Object(object)
}

fn health_from_json(object: &Object<'_>) -> Result<api::HealthConfig, ShapeError> {
    Ok(api::HealthConfig {
        test: object.strings("Test")?,
        interval: object.nonzero_duration("Interval")?,
        timeout: object.nonzero_duration("Timeout")?,
        retries: object.int32("Retries")?,
        start_period: object.nonzero_duration("StartPeriod")?,
        start_interval: object.nonzero_duration("StartInterval")?,
    })
}

fn privileges_json(privileges: &api::PrivilegesSpec) -> Value {
    use api::privileges_spec::credential_spec::Source;
    let credential_spec = privileges.credential_spec.as_ref().map(|credential| {
        let (mut config, mut file, mut registry) = ("", "", "");
        match &credential.source {
            Some(Source::Config(name)) => config = name,
            Some(Source::File(name)) => file = name,
            Some(Source::Registry(name)) => registry = name,
            None => {}
        }
        json!({"Config": config, "File": file, "Registry": registry})
    });
    let selinux_context = privileges.selinux_context.as_ref().map(|context| {
        json!({
            "Disable": context.disable, "User": context.user, "Role": context.role,
            "Type": context.r#type, "Level": context.level,
        })
    });
    json!({
        "CredentialSpec": credential_spec,
        "SELinuxContext": selinux_context,
        "NoNewPrivileges": privileges.no_new_privileges,
    })
}

fn privileges_from_json(object: &Object<'_>) -> Result<api::PrivilegesSpec, ShapeError> {
    use api::privileges_spec::{CredentialSpec, SeLinuxContext, credential_spec::Source};
    let credential_spec = object
        .object("CredentialSpec", "swarm.CredentialSpec")?
        .map(|credential| {
            let mut given = Vec::new();
            for (key, source) in [
                ("Config", Source::Config as fn(String) -> Source),
                ("File", Source::File),
                ("Registry", Source::Registry),
            ] {
                let name = credential.string(key)?;
                if !name.is_empty() {
                    given.push(source(name));
                }
            }
            if given.len() > 1 {
                return Err(object.invalid(
                    "CredentialSpec",
                    "give one of Config, File and Registry, not several",
                ));
            }
            Ok(CredentialSpec {
                source: given.pop(),
            })
        })
        .transpose()?;
    let selinux_context = object
        .object("SELinuxContext", "swarm.SELinuxContext")?
        .map(|context| {
            Ok::<_, ShapeError>(SeLinuxContext {
                disable: context.boolean("Disable")?,
                user: context.string("User")?,
                role: context.string("Role")?,
                r#type: context.string("Type")?,
                level: context.string("Level")?,
            })
        })
        .transpose()?;
    // Seccomp and AppArmor: the proto has no such fields.
    Ok(api::PrivilegesSpec {
        credential_spec,
        selinux_context,
        no_new_privileges: object.boolean("NoNewPrivileges")?,
    })
}

/// A secret's or config's file in the container; the mode is Docker's default when unset.
fn file_json(name: &str, uid: &str, gid: &str, mode: Option<u32>) -> Value {
    json!({"Name": name, "UID": uid, "GID": gid, "Mode": mode.unwrap_or(spec::defaults::FILE_MODE)})
}

/// The parts of a `File` target. A missing `Mode` stays unset, which means Docker's default
/// (Docker's own CLI always sends one).
fn file_from_json(
    object: &Object<'_>,
) -> Result<(String, String, String, Option<u32>), ShapeError> {
    let mode = if object.has("Mode") {
        Some(object.uint32("Mode", "os.FileMode")?)
    } else {
        None
    };
    Ok((
        object.string("Name")?,
        object.string("UID")?,
        object.string("GID")?,
        mode,
    ))
}

fn secret_json(secret: &api::SecretReference) -> Value {
    let mut object = Map::new();
    if let Some(api::secret_reference::Target::File(file)) = &secret.target {
        object.insert(
            "File".into(),
            file_json(&file.name, &file.uid, &file.gid, file.mode),
        );
    }
    object.insert("SecretID".into(), json!(secret.secret_id));
    object.insert("SecretName".into(), json!(secret.secret_name));
    Value::Object(object)
}

fn secret_from_json(object: &Object<'_>) -> Result<api::SecretReference, ShapeError> {
    use api::secret_reference::{FileTarget, Target};
    let target = object
        .object("File", "swarm.SecretReferenceFileTarget")?
        .map(|file| {
            let (name, uid, gid, mode) = file_from_json(&file)?;
            Ok::<_, ShapeError>(Target::File(FileTarget {
                name,
                uid,
                gid,
                mode,
            }))
        })
        .transpose()?;
    Ok(api::SecretReference {
        secret_id: object.string("SecretID")?,
        secret_name: object.string("SecretName")?,
        target,
    })
}

fn config_json(config: &api::ConfigReference) -> Value {
    let mut object = Map::new();
    match &config.target {
        Some(api::config_reference::Target::File(file)) => {
            object.insert(
                "File".into(),
                file_json(&file.name, &file.uid, &file.gid, file.mode),
            );
        }
        Some(api::config_reference::Target::Runtime(_)) => {
            object.insert("Runtime".into(), json!({}));
        }
        None => {}
    }
    object.insert("ConfigID".into(), json!(config.config_id));
    object.insert("ConfigName".into(), json!(config.config_name));
    Value::Object(object)
}

fn config_from_json(object: &Object<'_>) -> Result<api::ConfigReference, ShapeError> {
    use api::config_reference::{FileTarget, RuntimeTarget, Target};
    let file = object.object("File", "swarm.ConfigReferenceFileTarget")?;
    let runtime = object.object("Runtime", "swarm.ConfigReferenceRuntimeTarget")?;
    // Docker's rule: a config goes to a file or to the runtime, one of the two.
    let target = match (file, runtime) {
        (Some(file), None) => {
            let (name, uid, gid, mode) = file_from_json(&file)?;
            Target::File(FileTarget {
                name,
                uid,
                gid,
                mode,
            })
        }
        (None, Some(_)) => Target::Runtime(RuntimeTarget {}),
        (Some(_), Some(_)) => {
            return Err(object.invalid("File", "give File or Runtime, not both"));
        }
        (None, None) => return Err(object.invalid("File", "give File or Runtime")),
    };
    Ok(api::ConfigReference {
        config_id: object.string("ConfigID")?,
        config_name: object.string("ConfigName")?,
        target: Some(target),
    })
}

/// Docker's `ContainerSpec`. The PIDs limit is not here: Docker shows it in the task's
/// `Resources.Limits`.
pub(crate) fn container_json(container: &api::ContainerSpec) -> Value {
    let mut object = Map::new();
    object.insert("Image".into(), json!(container.image));
    insert_nonempty(&mut object, "Labels", labels_json(&container.labels));
    insert_nonempty(&mut object, "Command", json!(container.command));
    insert_nonempty(&mut object, "Args", json!(container.args));
    insert_nonempty(&mut object, "Hostname", json!(container.hostname));
    insert_nonempty(&mut object, "Env", json!(container.env));
    insert_nonempty(&mut object, "Dir", json!(container.dir));
    insert_nonempty(&mut object, "User", json!(container.user));
    insert_nonempty(&mut object, "Groups", json!(container.groups));
    if let Some(privileges) = &container.privileges {
        object.insert("Privileges".into(), privileges_json(privileges));
    }
    if let Some(init) = container.init {
        object.insert("Init".into(), json!(init));
    }
    insert_nonempty(&mut object, "TTY", json!(container.tty));
    insert_nonempty(&mut object, "OpenStdin", json!(container.open_stdin));
    insert_nonempty(&mut object, "ReadOnly", json!(container.read_only));
    insert_nonempty(
        &mut object,
        "Mounts",
        Value::Array(container.mounts.iter().map(mount_json).collect()),
    );
    insert_nonempty(&mut object, "StopSignal", json!(container.stop_signal));
    if let Some(grace) = &container.stop_grace_period {
        object.insert("StopGracePeriod".into(), json!(duration_nanos(grace)));
    }
    if let Some(health) = &container.healthcheck {
        object.insert("Healthcheck".into(), health_json(health));
    }
    insert_nonempty(&mut object, "Hosts", json!(container.hosts));
    if let Some(dns) = &container.dns_config {
        // Docker's `DNSConfig`, each list left out when empty.
        let mut value = Map::new();
        insert_nonempty(&mut value, "Nameservers", json!(dns.nameservers));
        insert_nonempty(&mut value, "Search", json!(dns.search));
        insert_nonempty(&mut value, "Options", json!(dns.options));
        object.insert("DNSConfig".into(), Value::Object(value));
    }
    insert_nonempty(
        &mut object,
        "Secrets",
        Value::Array(container.secrets.iter().map(secret_json).collect()),
    );
    insert_nonempty(
        &mut object,
        "Configs",
        Value::Array(container.configs.iter().map(config_json).collect()),
    );
    insert_nonempty(&mut object, "Sysctls", labels_json(&container.sysctls));
    insert_nonempty(
        &mut object,
        "CapabilityAdd",
        json!(container.capability_add),
    );
    insert_nonempty(
        &mut object,
        "CapabilityDrop",
        json!(container.capability_drop),
    );
    let ulimits: Vec<Value> = container
        .ulimits
        .iter()
        .map(|ulimit| json!({"Name": ulimit.name, "Soft": ulimit.soft, "Hard": ulimit.hard}))
        .collect();
    insert_nonempty(&mut object, "Ulimits", Value::Array(ulimits));
    // The proto holds Docker's integer as text; text that is no integer was never Docker's.
    if let Ok(adjustment) = container.oom_score_adj.parse::<i64>() {
        insert_nonempty(&mut object, "OomScoreAdj", json!(adjustment));
    }
    object.insert(
        "Isolation".into(),
        json!(isolation_name(container.isolation)),
    );
    Value::Object(object)
}

/// The container of Docker's `ContainerSpec`. `current` is the container the service runs now:
/// its registry credentials (which Docker's JSON never carries) stay, as Docker keeps them.
pub(crate) fn container_from_json(
    object: &Object<'_>,
    current: Option<&api::ContainerSpec>,
) -> Result<api::ContainerSpec, ShapeError> {
    let dns_config = object
        .object("DNSConfig", "swarm.DNSConfig")?
        .map(|dns| {
            Ok::<_, ShapeError>(api::container_spec::DnsConfig {
                nameservers: dns.strings("Nameservers")?,
                search: dns.strings("Search")?,
                options: dns.strings("Options")?,
            })
        })
        .transpose()?;
    let ulimits = object
        .objects("Ulimits", "container.Ulimit")?
        .iter()
        .map(|ulimit| {
            Ok(api::container_spec::Ulimit {
                name: ulimit.string("Name")?,
                soft: ulimit.int64("Soft")?,
                hard: ulimit.int64("Hard")?,
            })
        })
        .collect::<Result<_, ShapeError>>()?;
    let init = if object.has("Init") {
        Some(object.boolean("Init")?)
    } else {
        None
    };
    let oom_score_adj = object.int64("OomScoreAdj")?;
    Ok(api::ContainerSpec {
        image: object.string("Image")?,
        labels: object.string_map("Labels")?,
        command: object.strings("Command")?,
        args: object.strings("Args")?,
        hostname: object.string("Hostname")?,
        env: object.strings("Env")?,
        dir: object.string("Dir")?,
        user: object.string("User")?,
        groups: object.strings("Groups")?,
        privileges: object
            .object("Privileges", "swarm.Privileges")?
            .map(|privileges| privileges_from_json(&privileges).map(Box::new))
            .transpose()?,
        init,
        tty: object.boolean("TTY")?,
        open_stdin: object.boolean("OpenStdin")?,
        read_only: object.boolean("ReadOnly")?,
        stop_signal: object.string("StopSignal")?,
        mounts: object
            .objects("Mounts", "mount.Mount")?
            .iter()
            .map(mount_from_json)
            .collect::<Result<_, _>>()?,
        stop_grace_period: object.duration("StopGracePeriod")?,
        pull_options: current.and_then(|current| current.pull_options.clone()),
        secrets: object
            .objects("Secrets", "swarm.SecretReference")?
            .iter()
            .map(secret_from_json)
            .collect::<Result<_, _>>()?,
        configs: object
            .objects("Configs", "swarm.ConfigReference")?
            .iter()
            .map(config_from_json)
            .collect::<Result<_, _>>()?,
        hosts: object.strings("Hosts")?,
        dns_config: dns_config.map(Box::new),
        healthcheck: object
            .object("Healthcheck", "container.HealthConfig")?
            .map(|health| health_from_json(&health).map(Box::new))
            .transpose()?,
        isolation: isolation_of(&object.string("Isolation")?) as i32,
        // Docker shows it in the task's `Resources.Limits`; the task template reads it there.
        pid_limit: 0,
        sysctls: object.string_map("Sysctls")?,
        capability_add: object.strings("CapabilityAdd")?,
        capability_drop: object.strings("CapabilityDrop")?,
        ulimits,
        oom_score_adj: if oom_score_adj == 0 {
            String::new()
        } else {
            oom_score_adj.to_string()
        },
    })
}
