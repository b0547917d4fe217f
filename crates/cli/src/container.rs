//! `container run`: its flags, and the container spec they make (durations and sizes read as
//! `spec` reads them, as every other command does).

use std::path::PathBuf;

use clap::Args;
use shoal_proto::engine as pb;

use crate::{client, service};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Runs in the background and prints the ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Removes the container when it exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// KEY=value (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Memory limit, e.g. 16m.
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPU limit, e.g. 1.5.
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Runs an init as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    #[arg(long)]
    entrypoint: Option<String>,
    /// uid[:gid] or name[:group].
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Mounts the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// SRC:DST[:ro] where SRC is an absolute host path or a volume name (repeatable).
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// A tmpfs at this path (repeatable).
    #[arg(long)]
    tmpfs: Vec<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Shell command run in the container as a healthcheck.
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long, default_value_t = spec::units::format_duration(spec::defaults::HEALTH_INTERVAL))]
    health_interval: String,
    #[arg(long, default_value_t = spec::units::format_duration(spec::defaults::HEALTH_TIMEOUT))]
    health_timeout: String,
    #[arg(long, default_value_t = spec::defaults::HEALTH_RETRIES)]
    health_retries: u32,
    #[arg(long, default_value = "0s")]
    health_start_period: String,
    /// An external OCI runtime binary (e.g. /usr/sbin/runc) instead of the built-in one.
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Rotates the log file past this size, e.g. 10m (decimal units, as docker: 10m is 10 MB).
    #[arg(long)]
    log_max_size: Option<String>,
    /// Log files kept.
    #[arg(long)]
    log_max_files: Option<u32>,
    /// KEY=value (repeatable).
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    /// Adds a Linux capability to the default set, e.g. NET_ADMIN, or ALL (repeatable).
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drops a Linux capability from the default set, or ALL (repeatable).
    #[arg(long)]
    cap_drop: Vec<String>,
    /// A namespaced kernel parameter, e.g. net.core.somaxconn=1024 (repeatable).
    #[arg(long = "sysctl")]
    sysctls: Vec<String>,
    /// A resource limit, NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable).
    #[arg(long = "ulimit")]
    ulimits: Vec<String>,
    /// A supplementary group, by name or number (repeatable).
    #[arg(long = "group-add")]
    groups: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// A Go duration flag (`30s`, `1m30s`), as `spec` parses every duration.
fn duration_flag(flag: &str, text: &str) -> anyhow::Result<pb::Duration> {
    let duration =
        spec::units::parse_duration(text).map_err(|error| error.in_field(format!("--{flag}")))?;
    Ok(spec::time::proto_duration(duration))
}

/// A size flag with binary units (`16m`, `1g`, `1t`), as go-units' `RAMInBytes` parses it.
fn size_flag(flag: &str, text: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = text else { return Ok(0) };
    Ok(spec::units::parse_ram_bytes(text).map_err(|error| error.in_field(format!("--{flag}")))?)
}

/// `--log-max-size`, read as docker's json-file driver reads `max-size`: go-units'
/// `FromHumanSize`, decimal units (`10m` is 10,000,000 bytes).
fn log_size_flag(text: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = text else { return Ok(0) };
    Ok(spec::units::parse_human_size(text).map_err(|error| error.in_field("--log-max-size"))?)
}

pub(crate) fn run_spec(args: RunArgs) -> anyhow::Result<client::RunOptions> {
    let mut mounts = Vec::new();
    for volume in &args.volumes {
        let parts: Vec<&str> = volume.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => anyhow::bail!("invalid volume {volume:?}: use SRC:DST[:ro]"),
        };
        let kind = if source.starts_with('/') {
            pb::mount::Type::Bind
        } else {
            pb::mount::Type::Volume
        };
        mounts.push(pb::Mount {
            r#type: kind as i32,
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
            ..Default::default()
        });
    }
    for target in &args.tmpfs {
        mounts.push(pb::Mount {
            r#type: pb::mount::Type::Tmpfs as i32,
            target: target.clone(),
            ..Default::default()
        });
    }
    let healthcheck = match &args.health_cmd {
        Some(cmd) => Some(pb::Healthcheck {
            test: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            interval: Some(duration_flag("health-interval", &args.health_interval)?),
            timeout: Some(duration_flag("health-timeout", &args.health_timeout)?),
            retries: args.health_retries,
            start_period: Some(duration_flag(
                "health-start-period",
                &args.health_start_period,
            )?),
        }),
        None => None,
    };
    let mut labels = std::collections::HashMap::new();
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    if let Some(cpus) = args.cpus
        && cpus <= 0.0
    {
        anyhow::bail!("--cpus must be positive");
    }
    let spec = pb::ContainerSpec {
        name: args.name.unwrap_or_default(),
        image: args.image,
        entrypoint_set: args.entrypoint.is_some(),
        entrypoint: args.entrypoint.map(|e| vec![e]).unwrap_or_default(),
        command: args.command,
        env: args.env,
        user: args.user.unwrap_or_default(),
        workdir: args.workdir.unwrap_or_default(),
        hostname: args.hostname.unwrap_or_default(),
        read_only_rootfs: args.read_only,
        mounts,
        memory_bytes: size_flag("memory", args.memory.as_deref())?,
        nano_cpus: args.cpus.map(|c| (c * 1e9) as u64).unwrap_or(0),
        pids_limit: args.pids_limit.unwrap_or(0),
        stop_signal: args.stop_signal.unwrap_or_default(),
        stop_timeout: args
            .stop_timeout
            .map(|s| spec::time::proto_duration(std::time::Duration::from_secs(s))),
        healthcheck,
        init: args.init,
        auto_remove: args.rm,
        runtime: args
            .runtime
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        log_max_size_bytes: log_size_flag(args.log_max_size.as_deref())?,
        log_max_files: args.log_max_files.unwrap_or(0),
        labels,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        ulimits: service::spec::parse_ulimits("ulimit", &args.ulimits)?
            .into_iter()
            .map(|ulimit| pb::Ulimit {
                name: ulimit.name,
                soft: spec::linux::rlimit_value(ulimit.soft),
                hard: spec::linux::rlimit_value(ulimit.hard),
            })
            .collect(),
        sysctls: service::spec::parse_sysctls("sysctl", &args.sysctls)?,
        groups: args.groups,
    };
    Ok(client::RunOptions {
        detach: args.detach,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `container run`'s flags on their own.
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn run(flags: &[&str]) -> anyhow::Result<client::RunOptions> {
        let argv = ["run"].iter().chain(flags).chain(&["busybox"]);
        run_spec(Run::try_parse_from(argv)?.args)
    }

    /// `container run` reads durations and sizes as `service create` does (issue 13: `2` meant
    /// 2 s here and was refused there; `1t` was refused here and accepted there).
    #[test]
    fn durations_and_sizes_read_as_service_create_reads_them() -> anyhow::Result<()> {
        let refused = run(&["--health-cmd", "true", "--health-interval", "2"])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        let service = service::spec::parse_flag_duration("health-interval", "2")
            .expect_err("a duration without a unit")
            .to_string();
        assert_eq!(refused, service);
        assert!(
            refused.starts_with("--health-interval: invalid duration \"2\""),
            "{refused}"
        );

        // Memory is binary (go-units' RAMInBytes); the log size decimal, as docker's json-file
        // driver reads max-size with FromHumanSize.
        let options = run(&["--memory", "1t", "--log-max-size", "1.5k"])?;
        assert_eq!(options.spec.memory_bytes, 1 << 40);
        assert_eq!(options.spec.log_max_size_bytes, 1500);
        let options = run(&["--health-cmd", "true", "--health-interval", "1m30s"])?;
        let interval = options.spec.healthcheck.and_then(|health| health.interval);
        assert_eq!(interval.map(|d| d.seconds), Some(90));
        Ok(())
    }

    /// The healthcheck flags left out take Docker's timings, spec's, as a service's task does.
    #[test]
    fn healthcheck_flags_default_to_specs_timings() -> anyhow::Result<()> {
        let health = run(&["--health-cmd", "true"])?.spec.healthcheck;
        let health = health.ok_or_else(|| anyhow::anyhow!("no healthcheck"))?;
        let proto = spec::time::proto_duration;
        assert_eq!(
            (health.interval, health.timeout, health.retries),
            (
                Some(proto(spec::defaults::HEALTH_INTERVAL)),
                Some(proto(spec::defaults::HEALTH_TIMEOUT)),
                spec::defaults::HEALTH_RETRIES
            )
        );
        Ok(())
    }
}
