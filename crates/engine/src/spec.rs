//! What a container is asked to be ([`ContainerSpec`]) and the pure translation of that, plus
//! the image defaults, into an OCI runtime-spec `config.json`. No IO happens here, so the whole
//! translation is unit-tested without root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::spec::linux::{
    ALL_CAPABILITIES, CAPABILITIES, DEFAULT_CAPABILITIES, capability_name, sysctl_name,
    ulimit_name, ulimit_values,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{EngineError, Result};
use crate::store::ImageConfigFile;

/// Everything a caller says about a container to create.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ContainerSpec {
    /// Unique name; generated from the ID when absent.
    pub name: Option<String>,
    /// Image name, `name:tag` or ID.
    pub image: String,
    /// Replaces the image's entrypoint (and then its command too, as docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// `KEY=value` pairs, added to and overriding the image's.
    pub env: Vec<String>,
    /// `uid[:gid]` or `name[:group]`, looked up in the image.
    pub user: Option<String>,
    /// Working directory; the image's, else `/`.
    pub workdir: Option<String>,
    /// Hostname; the first 12 characters of the ID by default.
    pub hostname: Option<String>,
    /// Mounts the root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// cgroup limits.
    pub resources: Resources,
    /// Signal name or number sent by `stop`; the image's, else SIGTERM.
    pub stop_signal: Option<String>,
    /// Grace period between the stop signal and SIGKILL; 10 s by default.
    pub stop_timeout: Option<Duration>,
    /// An exec healthcheck.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Runs shoal's init as PID 1 to reap zombies and forward signals.
    pub init: bool,
    /// Removes the container once it exits.
    pub auto_remove: bool,
    /// An external OCI runtime binary (e.g. `/usr/sbin/runc`) instead of the built-in one.
    pub runtime: Option<PathBuf>,
    /// Log rotation.
    pub log: LogOptions,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Capabilities added to Docker's default set: `NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`.
    pub cap_add: Vec<String>,
    /// Capabilities taken from it; `ALL` leaves only those in `cap_add`.
    pub cap_drop: Vec<String>,
    /// Resource limits on the container's processes.
    pub ulimits: Vec<Ulimit>,
    /// Kernel parameters of the container's own namespaces, e.g. `net.core.somaxconn`.
    pub sysctls: BTreeMap<String, String>,
    /// Supplementary groups of the process, names from the image's `/etc/group` or numbers.
    pub groups: Vec<String>,
    /// A network namespace to join (a bind-mounted file such as `/run/netns/NAME`) instead of
    /// getting a fresh one: the worker's overlay networking prepares it with the task's
    /// interfaces before the container is created.
    pub network_namespace: Option<PathBuf>,
}

/// One resource limit, by Docker's name for it (`nofile`, `nproc`, `core`, ...).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's name: the `RLIMIT_` constant's suffix in lower case.
    pub name: String,
    /// The limit a process may raise itself up to `hard`.
    pub soft: u64,
    /// The ceiling.
    pub hard: u64,
}

/// One extra mount.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSpec {
    /// A host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A named volume under `<data-root>/volumes/<name>/_data`, created on first use.
    Volume {
        /// Volume name.
        name: String,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Path in the container.
        target: String,
        /// Size limit in bytes.
        size_bytes: Option<u64>,
    },
    /// A read-only file whose contents live only in memory (a tmpfs on the host side) and are
    /// never written to disk: secrets and configs.
    File {
        /// Path in the container.
        target: String,
        /// The contents; stripped before the container record is saved.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        contents: Vec<u8>,
        /// File mode, e.g. 0o444.
        mode: u32,
        /// The file's owner inside the container.
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
}

/// cgroup limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Resources {
    /// Memory limit in bytes (swap is not added on top).
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU (`--cpus 1.5` = 1_500_000_000).
    pub nano_cpus: Option<u64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
}

/// An exec healthcheck, with docker's semantics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HealthcheckSpec {
    /// The command, run in the container. (`CMD-SHELL x` is `["/bin/sh", "-c", "x"]`.)
    pub test: Vec<String>,
    /// Time between probes (30 s in docker).
    pub interval: Duration,
    /// A probe running longer fails (30 s in docker).
    pub timeout: Duration,
    /// Consecutive failures before `unhealthy` (3 in docker).
    pub retries: u32,
    /// Failures during this period after start do not count.
    pub start_period: Duration,
}

/// Log rotation by size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogOptions {
    /// Rotate once the current file exceeds this many bytes.
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// Host paths a container's bundle refers to.
#[derive(Clone, Debug)]
pub struct BundlePaths {
    /// The overlayfs mount point, the container's `/`.
    pub rootfs: PathBuf,
    /// Where named volumes live.
    pub volumes: PathBuf,
    /// The per-container tmpfs holding `File` mounts, one file per mount, named by index.
    pub files: PathBuf,
    /// The directory holding shoal's init and the loader it needs, when `init` is set.
    pub init_dir: Option<PathBuf>,
}

/// The user a process runs as, already looked up.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups, from [`ContainerSpec::groups`].
    pub additional_gids: Vec<u32>,
}

/// Where shoal's init is mounted inside a container.
pub const INIT_MOUNT: &str = "/.shoal";

/// The process arguments: entrypoint plus command, as docker combines them.
pub fn process_args(spec: &ContainerSpec, image: &ImageConfigFile) -> Result<Vec<String>> {
    let defaults = image.config.clone().unwrap_or_default();
    let (entrypoint, image_cmd) = match &spec.entrypoint {
        Some(entrypoint) => (entrypoint.clone(), Vec::new()),
        None => (
            defaults.entrypoint.unwrap_or_default(),
            defaults.cmd.unwrap_or_default(),
        ),
    };
    let command = if spec.command.is_empty() {
        image_cmd
    } else {
        spec.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if args.is_empty() {
        return Err(EngineError::invalid(
            "container spec",
            "no command: the image has no entrypoint or command, so give one after the image name",
        ));
    }
    Ok(args)
}

/// Image env overridden key by key by the spec's.
pub fn merged_env(spec: &ContainerSpec, image: &ImageConfigFile) -> Vec<String> {
    let mut merged: Vec<String> = image
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for pair in &spec.env {
        let key = pair.split('=').next().unwrap_or(pair);
        merged.retain(|existing| existing.split('=').next() != Some(key));
        merged.push(pair.clone());
    }
    if !merged.iter().any(|e| e.starts_with("PATH=")) {
        merged.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
    }
    merged
}

/// Resolves `user[:group]` against the image's `/etc/passwd` and `/etc/group` contents.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |table: &str, name: &str| -> Option<(u32, Option<u32>)> {
        table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&name) {
                let id = fields.get(2)?.parse().ok()?;
                Some((id, fields.get(3).and_then(|g| g.parse().ok())))
            } else {
                None
            }
        })
    };
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, passwd_gid_for_uid(passwd, uid).unwrap_or(0)),
        Err(_) => match lookup(passwd, user_part) {
            Some((uid, gid)) => (uid, gid.unwrap_or(0)),
            None => {
                return Err(EngineError::invalid(
                    "user",
                    format!("{user_part:?} is not in the image's /etc/passwd; use a numeric uid"),
                ));
            }
        },
    };
    let gid = match group_part {
        None => primary_gid,
        Some(name) => group_id(name, group)?,
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// Supplementary groups by name (looked up in the image's `/etc/group` contents) or number.
pub fn resolve_groups(groups: &[String], group: &str) -> Result<Vec<u32>> {
    groups.iter().map(|name| group_id(name, group)).collect()
}

/// A group's id: `name` itself when it is a number, else its entry in `/etc/group` contents.
fn group_id(name: &str, group: &str) -> Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    group
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| fields.get(2)?.parse().ok())?
        })
        .ok_or_else(|| {
            EngineError::invalid(
                "group",
                format!("{name:?} is not in the image's /etc/group; use a numeric gid"),
            )
        })
}

fn passwd_gid_for_uid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse().ok())?
    })
}

/// The capabilities a container's processes hold, as Docker works them out: `ALL` in `add`
/// gives every capability the kernel knows (up to `last_capability`) but those dropped; `ALL`
/// in `drop` gives only those added; otherwise the default set, less those dropped, plus those
/// added.
pub fn capabilities(add: &[String], drop: &[String], last_capability: u8) -> Result<Vec<String>> {
    let add = add
        .iter()
        .map(|name| capability_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|name| capability_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let known = &CAPABILITIES[..CAPABILITIES.len().min(usize::from(last_capability) + 1)];
    let base: Vec<&str> = if add.iter().any(|name| name == ALL_CAPABILITIES) {
        known.to_vec()
    } else if drop.iter().any(|name| name == ALL_CAPABILITIES) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    let mut held: Vec<String> = base
        .into_iter()
        .filter(|name| !drop.iter().any(|dropped| dropped == name))
        .map(str::to_owned)
        .collect();
    for name in add {
        if name == ALL_CAPABILITIES || held.contains(&name) {
            continue;
        }
        if !known.contains(&name.as_str()) {
            return Err(EngineError::NotSupported(format!(
                "capability {name}: this kernel knows capabilities up to {}",
                known.last().copied().unwrap_or("none")
            )));
        }
        held.push(name);
    }
    Ok(held)
}

/// The OCI `process.rlimits` for Docker-named `ulimits`.
fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<serde_json::Value>> {
    let mut seen = Vec::new();
    ulimits
        .iter()
        .map(|ulimit| {
            let name = ulimit_name(&ulimit.name)?;
            if seen.contains(&name) {
                return Err(EngineError::invalid(
                    "ulimit",
                    format!("{name} is given twice"),
                ));
            }
            ulimit_values(&name, ulimit.soft, ulimit.hard)?;
            let kind = format!("RLIMIT_{}", name.to_ascii_uppercase());
            seen.push(name);
            Ok(json!({"type": kind, "soft": ulimit.soft, "hard": ulimit.hard}))
        })
        .collect()
}

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The size of the tmpfs that holds a container's file mounts (secrets and configs), from the
/// sizes of the files it will hold: each file's data in whole pages plus a page for the file
/// itself, and a page for the directory. Sized from what the container actually has, the
/// tmpfs fits any number of payloads of any size the cluster allows, and the container can't
/// use it to hold more. Never 0, which would mean no limit to tmpfs.
pub fn file_mounts_tmpfs_bytes(
    file_sizes: impl IntoIterator<Item = usize>,
    page_size: usize,
) -> u64 {
    let page = page_size.max(1) as u64;
    file_sizes.into_iter().fold(page, |total, size| {
        let pages = (size as u64).div_ceil(page) + 1;
        total.saturating_add(pages.saturating_mul(page))
    })
}

/// The cgroup path every runtime is given, relative to each hierarchy's root.
pub fn cgroup_path(id: &str) -> String {
    format!("/shoal/{id}")
}

/// Builds the OCI runtime spec for container `id`. Pure: every input is passed in.
/// `last_capability` is the running kernel's highest capability number, what `ALL` reaches.
pub fn runtime_spec(
    id: &str,
    spec: &ContainerSpec,
    image: &ImageConfigFile,
    user: ResolvedUser,
    paths: &BundlePaths,
    last_capability: u8,
) -> Result<oci_spec::runtime::Spec> {
    let mut args = process_args(spec, image)?;
    let defaults = image.config.clone().unwrap_or_default();
    let cwd = spec
        .workdir
        .clone()
        .or(defaults.working_dir)
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(EngineError::invalid(
            "workdir",
            format!("{cwd:?} must be absolute"),
        ));
    }
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for (index, mount) in spec.mounts.iter().enumerate() {
        let target_of = |t: &str| -> Result<String> {
            if !t.starts_with('/') || t.split('/').any(|c| c == "..") {
                return Err(EngineError::invalid(
                    "mount",
                    format!("target {t:?} must be an absolute path without '..'"),
                ));
            }
            Ok(t.to_owned())
        };
        let bind = |source: &Path, target: &str, read_only: bool| -> Result<serde_json::Value> {
            let mut options = vec!["rbind", "rprivate"];
            if read_only {
                options.push("ro");
            }
            Ok(
                json!({"destination": target_of(target)?, "type": "bind", "source": source, "options": options}),
            )
        };
        mounts.push(match mount {
            MountSpec::Bind { source, target, read_only } => {
                if !source.is_absolute() {
                    return Err(EngineError::invalid("bind mount", format!("source {} must be absolute", source.display())));
                }
                bind(source, target, *read_only)?
            }
            MountSpec::Volume { name, target, read_only } => {
                validate_name("volume name", name)?;
                bind(&paths.volumes.join(name).join("_data"), target, *read_only)?
            }
            MountSpec::Tmpfs { target, size_bytes } => {
                let mut options = vec!["nosuid".to_owned(), "nodev".to_owned()];
                if let Some(size) = size_bytes {
                    options.push(format!("size={size}"));
                }
                json!({"destination": target_of(target)?, "type": "tmpfs", "source": "tmpfs", "options": options})
            }
            MountSpec::File { target, .. } => bind(&paths.files.join(index.to_string()), target, true)?,
        });
    }
    if spec.init {
        let init_dir = paths.init_dir.as_ref().ok_or_else(|| {
            EngineError::NotSupported("--init on this daemon (no init binary)".to_owned())
        })?;
        mounts.push(json!({"destination": INIT_MOUNT, "type": "bind", "source": init_dir, "options": ["rbind", "rprivate", "ro"]}));
        let mut wrapped = vec![
            format!("{INIT_MOUNT}/ld.so"),
            "--library-path".to_owned(),
            INIT_MOUNT.to_owned(),
            format!("{INIT_MOUNT}/shoal"),
            "init".to_owned(),
            "--".to_owned(),
        ];
        wrapped.append(&mut args);
        args = wrapped;
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = spec.resources.memory_bytes {
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(nano_cpus) = spec.resources.nano_cpus {
        let period: u64 = 100_000;
        resources["cpu"] =
            json!({"quota": nano_cpus.saturating_mul(period) / 1_000_000_000, "period": period});
    }
    if let Some(limit) = spec.resources.pids_limit {
        resources["pids"] = json!({"limit": limit});
    }
    let capabilities = capabilities(&spec.cap_add, &spec.cap_drop, last_capability)?;
    for name in spec.sysctls.keys() {
        sysctl_name(name)?;
    }
    let network_namespace = match &spec.network_namespace {
        Some(path) if !path.is_absolute() => {
            return Err(EngineError::invalid(
                "network namespace",
                format!("{} must be an absolute path", path.display()),
            ));
        }
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    };
    let value = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": args,
            "env": merged_env(spec, image),
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": rlimits(&spec.ulimits)?,
            "noNewPrivileges": false,
        },
        "root": {"path": paths.rootfs, "readonly": spec.read_only_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, network_namespace, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "resources": resources,
            "cgroupsPath": cgroup_path(id),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "sysctl": spec.sysctls,
        },
        "annotations": {"io.shoal.container.id": id},
    });
    serde_json::from_value(value).map_err(|e| EngineError::invalid("generated runtime spec", e))
}

/// Checks a container or volume name against docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`;
/// `what` names the kind of name in the error.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(
            what,
            format!("{name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ))
    }
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(number) = text.parse::<i32>()
        && (1..=64).contains(&number)
    {
        return Ok(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => {
            return Err(EngineError::invalid(
                "signal",
                format!("{text:?} is not a signal name or number"),
            ));
        }
    };
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImageRunConfig;

    #[test]
    fn the_file_mounts_tmpfs_holds_whole_pages_of_each_file_and_no_more() {
        // No files: the directory's page, never 0 (no limit).
        assert_eq!(file_mounts_tmpfs_bytes([], 4096), 4096);
        // An empty file, a one-byte file and one of exactly a page.
        assert_eq!(file_mounts_tmpfs_bytes([0], 4096), 2 * 4096);
        assert_eq!(file_mounts_tmpfs_bytes([1], 4096), 3 * 4096);
        assert_eq!(file_mounts_tmpfs_bytes([4096], 4096), 3 * 4096);
        // Twelve payloads of 500 KiB: more than the fixed 4 MiB there was, and what they need.
        let sizes = [500 * 1024; 12];
        let bytes = file_mounts_tmpfs_bytes(sizes, 4096);
        assert!(bytes > 4 * 1024 * 1024);
        assert_eq!(bytes, 4096 + 12 * (125 + 1) * 4096);
        // Pages of 64 KiB round each file up further.
        assert_eq!(file_mounts_tmpfs_bytes([1, 1], 65536), 5 * 65536);
    }

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfigFile {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ImageConfigFile {
            config: Some(ImageRunConfig {
                env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
                entrypoint: entrypoint.map(strings),
                cmd: cmd.map(strings),
                working_dir: Some("/srv".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn paths() -> BundlePaths {
        BundlePaths {
            rootfs: "/data/containers/c1/rootfs".into(),
            volumes: "/data/volumes".into(),
            files: "/data/containers/c1/files".into(),
            init_dir: Some("/data/init".into()),
        }
    }

    #[test]
    fn args_combine_like_docker() -> Result<()> {
        let spec = |command: &[&str], entrypoint: Option<Vec<String>>| ContainerSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            entrypoint,
            ..Default::default()
        };
        let img = image(Some(&["/entry"]), Some(&["default"]));
        assert_eq!(process_args(&spec(&[], None), &img)?, ["/entry", "default"]);
        assert_eq!(process_args(&spec(&["x"], None), &img)?, ["/entry", "x"]);
        assert_eq!(
            process_args(&spec(&[], Some(vec!["/other".into()])), &img)?,
            ["/other"]
        );
        assert!(process_args(&spec(&[], None), &image(None, None)).is_err());
        Ok(())
    }

    #[test]
    fn env_overrides_by_key() {
        let spec = ContainerSpec {
            env: vec!["A=spec".into(), "B=2".into()],
            ..Default::default()
        };
        assert_eq!(
            merged_env(&spec, &image(None, None)),
            ["PATH=/bin", "A=spec", "B=2"]
        );
    }

    #[test]
    fn users_resolve_from_the_image() -> Result<()> {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(
            resolve_user("www", passwd, group)?,
            ResolvedUser {
                uid: 33,
                gid: 34,
                additional_gids: Vec::new()
            }
        );
        assert_eq!(
            resolve_user("33:staff", passwd, group)?,
            ResolvedUser {
                uid: 33,
                gid: 50,
                additional_gids: Vec::new()
            }
        );
        assert_eq!(
            resolve_user("1000:1000", passwd, group)?,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: Vec::new()
            }
        );
        assert!(resolve_user("nobody", passwd, group).is_err());
        assert_eq!(
            resolve_groups(&["staff".to_owned(), "4242".to_owned()], group)?,
            [50, 4242]
        );
        let unknown = resolve_groups(&["wheel".to_owned()], group).unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("\"wheel\" is not in the image's /etc/group")
        );
        Ok(())
    }

    #[test]
    fn spec_carries_limits_mounts_and_init() -> Result<()> {
        let spec = ContainerSpec {
            command: vec!["sleep".into(), "5".into()],
            read_only_rootfs: true,
            init: true,
            resources: Resources {
                memory_bytes: Some(16 << 20),
                nano_cpus: Some(1_500_000_000),
                pids_limit: Some(20),
            },
            mounts: vec![
                MountSpec::Volume {
                    name: "data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
                MountSpec::File {
                    target: "/run/secrets/s".into(),
                    contents: Vec::new(),
                    mode: 0o444,
                    uid: 0,
                    gid: 0,
                },
                MountSpec::Tmpfs {
                    target: "/scratch".into(),
                    size_bytes: Some(1 << 20),
                },
            ],
            ..Default::default()
        };
        let value = built_json("c1abcdef0123456789", &spec)?;
        assert_eq!(value["hostname"], "c1abcdef0123");
        assert_eq!(value["root"]["readonly"], true);
        assert_eq!(value["process"]["cwd"], "/srv");
        assert_eq!(value["process"]["args"][3], "/.shoal/shoal");
        assert_eq!(value["process"]["args"][6], "sleep");
        assert_eq!(value["linux"]["resources"]["memory"]["limit"], 16 << 20);
        assert_eq!(value["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(value["linux"]["resources"]["pids"]["limit"], 20);
        assert_eq!(value["linux"]["cgroupsPath"], "/shoal/c1abcdef0123456789");
        let mounts = value["mounts"].as_array().cloned().unwrap_or_default();
        let find = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).cloned();
        assert_eq!(
            find("/data").map(|m| m["source"].clone()),
            Some("/data/volumes/data/_data".into())
        );
        assert_eq!(
            find("/run/secrets/s").map(|m| m["source"].clone()),
            Some("/data/containers/c1/files/1".into())
        );
        assert_eq!(
            find("/scratch").map(|m| m["options"][2].clone()),
            Some("size=1048576".into())
        );
        assert!(find("/.shoal").is_some());
        Ok(())
    }

    #[test]
    fn bad_mount_targets_are_refused() {
        let spec = ContainerSpec {
            command: vec!["true".into()],
            mounts: vec![MountSpec::Tmpfs {
                target: "relative".into(),
                size_bytes: None,
            }],
            ..Default::default()
        };
        assert!(built_json("c1", &spec).is_err());
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// The runtime spec of container `id` from `spec` and the test image, as JSON.
    fn built_json(id: &str, spec: &ContainerSpec) -> Result<serde_json::Value> {
        let built = runtime_spec(
            id,
            spec,
            &image(None, None),
            ResolvedUser::default(),
            &paths(),
            40,
        )?;
        serde_json::to_value(&built).map_err(|e| EngineError::invalid("spec", e))
    }

    #[test]
    fn capabilities_follow_dockers_rules() -> Result<()> {
        let default = capabilities(&[], &[], 40)?;
        assert_eq!(default, strings(DEFAULT_CAPABILITIES));
        let changed = capabilities(&strings(&["net_admin"]), &strings(&["CAP_MKNOD"]), 40)?;
        assert!(changed.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!changed.contains(&"CAP_MKNOD".to_owned()));
        assert_eq!(changed.len(), DEFAULT_CAPABILITIES.len());
        // ALL added: every capability the kernel knows, less those dropped.
        let all = capabilities(&strings(&["ALL"]), &strings(&["SYS_ADMIN"]), 37)?;
        assert_eq!(all.len(), 37);
        assert!(!all.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!all.contains(&"CAP_PERFMON".to_owned()));
        // ALL dropped: only those added.
        let only = capabilities(&strings(&["CHOWN"]), &strings(&["all"]), 40)?;
        assert_eq!(only, strings(&["CAP_CHOWN"]));
        let unknown = capabilities(&strings(&["NET_ADMINN"]), &[], 40).unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("\"NET_ADMINN\" is not a Linux capability")
        );
        let too_new = capabilities(&strings(&["BPF"]), &[], 37).unwrap_err();
        assert!(too_new.to_string().contains("CAP_BPF"), "{too_new}");
        Ok(())
    }

    #[test]
    fn ulimits_and_sysctls_reach_the_runtime_spec() -> Result<()> {
        let spec = ContainerSpec {
            command: vec!["true".into()],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }],
            sysctls: BTreeMap::from([("net.core.somaxconn".to_owned(), "512".to_owned())]),
            cap_add: strings(&["NET_ADMIN"]),
            ..Default::default()
        };
        let value = built_json("c1", &spec)?;
        assert_eq!(
            value["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}])
        );
        assert_eq!(value["linux"]["sysctl"]["net.core.somaxconn"], "512");
        let effective = value["process"]["capabilities"]["effective"].to_string();
        assert!(effective.contains("CAP_NET_ADMIN"), "{effective}");
        Ok(())
    }

    #[test]
    fn bad_ulimits_and_host_sysctls_are_refused() {
        let refused = |spec: ContainerSpec| {
            let spec = ContainerSpec {
                command: vec!["true".into()],
                ..spec
            };
            built_json("c1", &spec).unwrap_err().to_string()
        };
        let ulimit = |name: &str, soft, hard| ContainerSpec {
            ulimits: vec![Ulimit {
                name: name.into(),
                soft,
                hard,
            }],
            ..Default::default()
        };
        assert!(refused(ulimit("files", 1, 1)).contains("\"files\" is not a limit"));
        assert!(
            refused(ulimit("nofile", 10, 5)).contains("soft limit 10 is above the hard limit 5")
        );
        let host_wide = ContainerSpec {
            sysctls: BTreeMap::from([("vm.swappiness".to_owned(), "1".to_owned())]),
            ..Default::default()
        };
        assert!(refused(host_wide).contains("vm.swappiness is not namespaced"));
    }

    #[test]
    fn a_container_joins_the_network_namespace_it_is_given() -> Result<()> {
        let network_of = |value: &serde_json::Value| {
            value["linux"]["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|namespace| namespace["type"] == "network")
                .cloned()
                .collect::<Vec<_>>()
        };
        let own = ContainerSpec {
            command: vec!["true".into()],
            ..Default::default()
        };
        assert_eq!(
            network_of(&built_json("c1", &own)?),
            [json!({"type": "network"})]
        );
        let joined = ContainerSpec {
            network_namespace: Some("/run/netns/ov-t1".into()),
            ..own.clone()
        };
        assert_eq!(
            network_of(&built_json("c1", &joined)?),
            [json!({"type": "network", "path": "/run/netns/ov-t1"})]
        );
        let relative = ContainerSpec {
            network_namespace: Some("netns/ov-t1".into()),
            ..own
        };
        let error = built_json("c1", &relative).unwrap_err().to_string();
        assert!(
            error.contains("netns/ov-t1 must be an absolute path"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("SIGTERM").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("kill").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("10").ok(), Some(10));
        assert!(parse_signal("NOPE").is_err());
    }
}
