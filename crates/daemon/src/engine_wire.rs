//! Conversions between the local engine API's wire types (`shoal_proto::engine`) and the
//! engine's own, in one place: the daemon serves that API, and only it converts.

use std::path::PathBuf;

use engine::ContainerInfo;
use shoal_proto::engine as pb;
use spec::time::std_duration;
use tonic::Status;

pub(crate) fn image_to_pb(image: engine::ImageSummary) -> pb::Image {
    pb::Image {
        id: image.id.to_string(),
        manifest_digest: image.manifest_digest.to_string(),
        repo_tags: image.repo_tags,
        created: image.created.unwrap_or_default(),
        size_bytes: image.size,
    }
}

/// Wire spec to engine spec, with the engine API's defaults for what the wire leaves unset.
pub(crate) fn spec_from_pb(spec: pb::ContainerSpec) -> Result<engine::ContainerSpec, Status> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let mut mounts = Vec::new();
    for mount in spec.mounts {
        let kind = pb::mount::Type::try_from(mount.r#type)
            .map_err(|_| Status::invalid_argument("unknown mount type"))?;
        mounts.push(match kind {
            pb::mount::Type::Bind => engine::MountSpec::Bind {
                source: mount.source.into(),
                target: mount.target,
                read_only: mount.read_only,
            },
            pb::mount::Type::Volume => engine::MountSpec::Volume {
                name: mount.source,
                target: mount.target,
                read_only: mount.read_only,
            },
            pb::mount::Type::Tmpfs => engine::MountSpec::Tmpfs {
                target: mount.target,
                size_bytes: (mount.size_bytes > 0).then_some(mount.size_bytes),
            },
            // The local engine API names no owner: such files belong to root.
            pb::mount::Type::File => engine::MountSpec::File {
                target: mount.target,
                contents: mount.contents,
                mode: if mount.mode == 0 {
                    spec::defaults::FILE_MODE
                } else {
                    mount.mode
                },
                uid: 0,
                gid: 0,
            },
        });
    }
    let healthcheck = match spec.healthcheck {
        Some(h) if !h.test.is_empty() => Some(engine::HealthcheckSpec {
            test: h.test,
            interval: h
                .interval
                .as_ref()
                .map_or(spec::defaults::HEALTH_INTERVAL, std_duration),
            timeout: h
                .timeout
                .as_ref()
                .map_or(spec::defaults::HEALTH_TIMEOUT, std_duration),
            retries: if h.retries == 0 {
                spec::defaults::HEALTH_RETRIES
            } else {
                h.retries
            },
            start_period: h
                .start_period
                .as_ref()
                .map(std_duration)
                .unwrap_or_default(),
        }),
        _ => None,
    };
    let defaults = engine::LogOptions::default();
    Ok(engine::ContainerSpec {
        name: non_empty(spec.name),
        image: spec.image,
        entrypoint: spec.entrypoint_set.then_some(spec.entrypoint),
        command: spec.command,
        env: spec.env,
        user: non_empty(spec.user),
        workdir: non_empty(spec.workdir),
        hostname: non_empty(spec.hostname),
        read_only_rootfs: spec.read_only_rootfs,
        mounts,
        resources: engine::Resources {
            memory_bytes: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
            nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
            pids_limit: (spec.pids_limit > 0).then_some(spec.pids_limit),
        },
        stop_signal: non_empty(spec.stop_signal),
        stop_timeout: spec.stop_timeout.as_ref().map(std_duration),
        healthcheck,
        init: spec.init,
        auto_remove: spec.auto_remove,
        runtime: non_empty(spec.runtime).map(PathBuf::from),
        log: engine::LogOptions {
            max_size: if spec.log_max_size_bytes == 0 {
                defaults.max_size
            } else {
                spec.log_max_size_bytes
            },
            max_files: if spec.log_max_files == 0 {
                defaults.max_files
            } else {
                spec.log_max_files
            },
        },
        labels: spec.labels.into_iter().collect(),
        cap_add: spec.cap_add,
        cap_drop: spec.cap_drop,
        ulimits: spec
            .ulimits
            .into_iter()
            .map(|ulimit| engine::Ulimit {
                name: ulimit.name,
                soft: ulimit.soft,
                hard: ulimit.hard,
            })
            .collect(),
        sysctls: spec.sysctls.into_iter().collect(),
        groups: spec.groups,
        // Containers of the local API get a namespace of their own; joining one is for the
        // worker's networked tasks.
        network_namespace: None,
    })
}

pub(crate) fn container_to_pb(info: ContainerInfo) -> pb::Container {
    let inspect_json = serde_json::to_string_pretty(&info).unwrap_or_default();
    let state = info.state;
    pb::Container {
        id: info.id,
        name: info.name,
        image: info.image,
        image_id: info.image_id.to_string(),
        args: info.args,
        created: info.created,
        status: serde_json::to_value(state.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        pid: state.pid.unwrap_or(0),
        started_at: state.started_at.unwrap_or_default(),
        finished_at: state.finished_at.unwrap_or_default(),
        has_exit_code: state.exit_code.is_some(),
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed,
        error: state.error.unwrap_or_default(),
        health: info
            .health
            .map(|h| {
                serde_json::to_value(h.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        inspect_json,
    }
}

/// A wire terminal size; a size past what a terminal holds is the most it holds.
pub(crate) fn terminal_size_from_pb(size: pb::TerminalSize) -> engine::TerminalSize {
    engine::TerminalSize {
        rows: u16::try_from(size.rows).unwrap_or(u16::MAX),
        columns: u16::try_from(size.columns).unwrap_or(u16::MAX),
    }
}

/// What an exec session runs, from its first message; empty strings mean the container's own.
pub(crate) fn exec_spec_from_pb(start: pb::ExecStart) -> engine::ExecSpec {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    engine::ExecSpec {
        args: start.args,
        tty: start.tty,
        attach_stdin: start.attach_stdin,
        env: start.env,
        workdir: non_empty(start.workdir),
        user: non_empty(start.user),
        size: start.size.map(terminal_size_from_pb),
    }
}

/// A later input of an exec session; `None` for one that carries nothing or a second start.
pub(crate) fn exec_input_from_pb(input: pb::ExecInput) -> Option<engine::ExecInput> {
    match input.input? {
        pb::exec_input::Input::Stdin(bytes) => Some(engine::ExecInput::Stdin(bytes)),
        pb::exec_input::Input::CloseStdin(_) => Some(engine::ExecInput::CloseStdin),
        pb::exec_input::Input::Resize(size) => {
            Some(engine::ExecInput::Resize(terminal_size_from_pb(size)))
        }
        pb::exec_input::Input::Start(_) => None,
    }
}

pub(crate) fn exec_event_to_pb(event: engine::ExecEvent) -> pb::ExecOutput {
    use pb::exec_output::Output;
    let output = match event {
        engine::ExecEvent::Pid(pid) => Output::Pid(pid),
        engine::ExecEvent::Stdout(bytes) => Output::Stdout(bytes),
        engine::ExecEvent::Stderr(bytes) => Output::Stderr(bytes),
        engine::ExecEvent::Exited(code) => Output::ExitCode(code),
    };
    pb::ExecOutput {
        output: Some(output),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What `container run` leaves unset gets Docker's defaults, the ones a service's task gets:
    /// a file readable by everyone, a check every 30 s given 30 s, three retries.
    #[test]
    fn unset_file_modes_and_healthcheck_timings_get_dockers_defaults() -> Result<(), Status> {
        let spec = spec_from_pb(pb::ContainerSpec {
            image: "busybox".into(),
            mounts: vec![pb::Mount {
                r#type: pb::mount::Type::File as i32,
                target: "/run/secrets/token".into(),
                contents: b"s3cret".to_vec(),
                ..Default::default()
            }],
            healthcheck: Some(pb::Healthcheck {
                test: vec!["CMD".into(), "true".into()],
                ..Default::default()
            }),
            ..Default::default()
        })?;
        assert_eq!(
            spec.mounts,
            [engine::MountSpec::File {
                target: "/run/secrets/token".into(),
                contents: b"s3cret".to_vec(),
                mode: 0o444,
                uid: 0,
                gid: 0,
            }]
        );
        assert_eq!(
            spec.healthcheck,
            Some(engine::HealthcheckSpec {
                test: vec!["CMD".into(), "true".into()],
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
                retries: 3,
                start_period: Duration::ZERO,
            })
        );
        Ok(())
    }

    #[test]
    fn an_exec_start_leaves_unset_what_the_container_decides() {
        let spec = exec_spec_from_pb(pb::ExecStart {
            id: "web".into(),
            args: vec!["sh".into()],
            tty: true,
            size: Some(pb::TerminalSize {
                rows: 24,
                columns: 100_000,
            }),
            ..Default::default()
        });
        assert_eq!(spec.workdir, None);
        assert_eq!(spec.user, None);
        assert_eq!(
            spec.size,
            Some(engine::TerminalSize {
                rows: 24,
                columns: u16::MAX
            })
        );
        let start = pb::ExecInput {
            input: Some(pb::exec_input::Input::Start(pb::ExecStart::default())),
        };
        assert_eq!(exec_input_from_pb(start), None, "a second start is ignored");
    }
}
