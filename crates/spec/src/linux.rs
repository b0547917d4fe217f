//! Docker's Linux vocabulary of a container: capability names (and the default set), resource
//! limits (ulimit names, and the values the kernel takes), and which kernel parameters (sysctls)
//! a container may set. The CLI and compose check flags and files with it, the manager every
//! service spec it stores, and the engine builds the OCI runtime spec from the same lists, so a
//! setting is accepted or refused alike everywhere.

use crate::SpecError;

/// What `--cap-add` and `--cap-drop` take to mean every capability.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Every capability, at its kernel number: `CAPABILITIES[n]` is capability n.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `ALL`, or a capability's full name (`CAP_` prefixed, upper case) from any spelling Docker
/// takes: `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN`.
pub fn capability_name(given: &str) -> Result<String, SpecError> {
    let upper = given.trim().to_ascii_uppercase();
    if upper == ALL_CAPABILITIES {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::Invalid {
            what: "capability",
            problem: format!(
                "{given:?} is not a Linux capability (e.g. NET_ADMIN, SYS_PTRACE, or ALL)"
            ),
        })
    }
}

/// Docker's names of the resource limits (`RLIMIT_` suffixes in lower case).
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// A resource limit's name as Docker takes it, in any case (`nofile`, `NOFILE`), written in
/// lower case.
pub fn ulimit_name(given: &str) -> Result<String, SpecError> {
    let name = given.to_ascii_lowercase();
    if ULIMIT_NAMES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(SpecError::Invalid {
            what: "ulimit",
            problem: format!(
                "{given:?} is not a limit; use one of {}",
                ULIMIT_NAMES.join(", ")
            ),
        })
    }
}

/// A resource limit as the kernel takes it: Docker writes "unlimited" as -1 (any negative number
/// reads so), which is the largest limit there is.
pub fn rlimit_value(limit: i64) -> u64 {
    u64::try_from(limit).unwrap_or(u64::MAX)
}

/// A resource limit's soft and hard values as the kernel takes them ([`rlimit_value`]): the soft
/// one may not be above the hard one, which `setrlimit` refuses.
pub fn ulimit_values(name: &str, soft: u64, hard: u64) -> Result<(), SpecError> {
    if soft <= hard {
        return Ok(());
    }
    let shown = |limit: u64| match limit {
        u64::MAX => "unlimited".to_owned(),
        limit => limit.to_string(),
    };
    Err(SpecError::Invalid {
        what: "ulimit",
        problem: format!(
            "{name}: the soft limit {} is above the hard limit {}; lower the soft one",
            shown(soft),
            shown(hard)
        ),
    })
}

/// Checks that a sysctl belongs to a namespace the container has its own of (network, IPC), as
/// Docker does: any other would change the host.
pub fn sysctl_name(name: &str) -> Result<(), SpecError> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let namespaced =
        name.starts_with("net.") || name.starts_with("fs.mqueue.") || IPC.contains(&name);
    if namespaced {
        Ok(())
    } else {
        Err(SpecError::Invalid {
            what: "sysctl",
            problem: format!(
                "{name} is not namespaced, so setting it would change the host; only net.*, \
                 fs.mqueue.* and the IPC ones (kernel.msg*, kernel.sem, kernel.shm*) are allowed"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_take_every_spelling_docker_takes() {
        for given in ["net_admin", "NET_ADMIN", "CAP_NET_ADMIN", " cap_net_admin "] {
            assert_eq!(
                capability_name(given),
                Ok("CAP_NET_ADMIN".to_owned()),
                "{given}"
            );
        }
        assert_eq!(capability_name("all"), Ok("ALL".to_owned()));
        assert_eq!(CAPABILITIES[21], "CAP_SYS_ADMIN");
        assert!(
            DEFAULT_CAPABILITIES
                .iter()
                .all(|name| CAPABILITIES.contains(name))
        );
        assert_eq!(
            capability_name("NET_ADMINN").map_err(|error| error.to_string()),
            Err("invalid capability: \"NET_ADMINN\" is not a Linux capability (e.g. NET_ADMIN, SYS_PTRACE, or ALL)".to_owned())
        );
    }

    #[test]
    fn ulimits_take_any_case_and_refusals_list_the_names() {
        assert_eq!(ulimit_name("NOFILE"), Ok("nofile".to_owned()));
        let refused = ulimit_name("files").map_err(|error| error.to_string());
        assert!(
            refused.as_ref().is_err_and(|message| message
                .starts_with("invalid ulimit: \"files\" is not a limit; use one of as, core,")),
            "{refused:?}"
        );
    }

    /// Docker's -1 is unlimited, above every number, so `-1:1024` is refused and `1024:-1` taken
    /// (compose once compared the numbers as signed and took the first, which the kernel refuses).
    #[test]
    fn ulimit_values_compare_as_the_kernel_does() {
        assert_eq!(rlimit_value(-1), u64::MAX);
        assert_eq!(rlimit_value(1024), 1024);
        assert_eq!(ulimit_values("nofile", 1024, rlimit_value(-1)), Ok(()));
        assert_eq!(ulimit_values("nofile", 5, 5), Ok(()));
        assert_eq!(
            ulimit_values("nofile", rlimit_value(-1), 1024).map_err(|error| error.to_string()),
            Err("invalid ulimit: nofile: the soft limit unlimited is above the hard limit 1024; lower the soft one".to_owned())
        );
        assert!(ulimit_values("nofile", 10, 5).is_err_and(|error| {
            error
                .to_string()
                .contains("soft limit 10 is above the hard limit 5")
        }));
    }

    #[test]
    fn only_the_containers_own_namespaces_take_sysctls() {
        for name in ["net.core.somaxconn", "fs.mqueue.msg_max", "kernel.shmmax"] {
            assert_eq!(sysctl_name(name), Ok(()), "{name}");
        }
        for name in ["vm.swappiness", "kernel.hostname", "fs.file-max"] {
            assert!(sysctl_name(name).is_err(), "{name}");
        }
    }
}
