//! `--mount`: docker's CSV syntax for bind, volume and tmpfs mounts.

use anyhow::{anyhow, bail};
use shoal_proto::api;

use super::*;

/// Parses docker's `--mount` syntax: `type=bind|volume|tmpfs,source=…,target=…,readonly,…`.
pub(crate) fn parse_mount(flag: &str, text: &str) -> anyhow::Result<api::Mount> {
    let hint = "use e.g. type=volume,source=data,target=/data or type=bind,source=/srv,target=/srv,readonly";
    let fields = spec::csv::split_line(text).with_context(|| format!("--{flag}: {hint}"))?;
    let mut mount = api::Mount {
        r#type: api::mount::Type::Volume as i32,
        ..Default::default()
    };
    let mut bind_options: Option<api::mount::BindOptions> = None;
    let mut volume_options: Option<api::mount::VolumeOptions> = None;
    let mut tmpfs_options: Option<api::mount::TmpfsOptions> = None;
    for field in fields.iter().filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), Some(value)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        match (key.as_str(), value) {
            ("readonly" | "ro", None) => mount.readonly = true,
            ("readonly" | "ro", Some(value)) => mount.readonly = parse_go_bool(flag, &key, value)?,
            ("volume-nocopy", None) => volume_options.get_or_insert_default().nocopy = true,
            ("volume-nocopy", Some(value)) => {
                volume_options.get_or_insert_default().nocopy = parse_go_bool(flag, &key, value)?
            }
            ("bind-nonrecursive", None) => bind_options.get_or_insert_default().nonrecursive = true,
            (_, None) => bail!(
                "--{flag}: invalid field {field:?} in {text:?}: must be a key=value pair; {hint}"
            ),
            ("type", Some(value)) => {
                mount.r#type = api::mount::Type::parse(&value.to_ascii_lowercase())
                    .map_err(|error| error.in_field(format!("--{flag}")))?
                    as i32;
            }
            ("source" | "src", Some(value)) => mount.source = value.to_owned(),
            ("target" | "dst" | "destination", Some(value)) => mount.target = value.to_owned(),
            ("bind-propagation", Some(value)) => {
                bind_options.get_or_insert_default().propagation =
                    api::mount::bind_options::Propagation::parse(&value.to_ascii_lowercase())
                        .map_err(|error| error.in_field(format!("--{flag}")))?
                        as i32;
            }
            ("bind-nonrecursive", Some(value)) => {
                bind_options.get_or_insert_default().nonrecursive =
                    parse_go_bool(flag, &key, value)?
            }
            ("volume-label", Some(value)) => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                volume_options
                    .get_or_insert_default()
                    .labels
                    .insert(k.to_owned(), v.to_owned());
            }
            ("volume-driver", Some(value)) => {
                volume_options
                    .get_or_insert_default()
                    .driver_config
                    .get_or_insert_default()
                    .name = value.to_owned();
            }
            ("volume-opt", Some(value)) => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                volume_options
                    .get_or_insert_default()
                    .driver_config
                    .get_or_insert_default()
                    .options
                    .insert(k.to_owned(), v.to_owned());
            }
            ("volume-subpath", Some(value)) => {
                volume_options.get_or_insert_default().subpath = value.to_owned()
            }
            ("tmpfs-size", Some(value)) => {
                tmpfs_options.get_or_insert_default().size_bytes =
                    parse_memory(flag, value).with_context(|| "in tmpfs-size".to_owned())?;
            }
            ("tmpfs-mode", Some(value)) => {
                tmpfs_options.get_or_insert_default().mode = u32::from_str_radix(value, 8)
                    .map_err(|_| {
                        anyhow!(
                            "--{flag}: invalid tmpfs-mode {value:?}: use an octal mode such as 1777"
                        )
                    })?;
            }
            (_, Some(_)) => bail!("--{flag}: unexpected key {key:?} in {text:?}; {hint}"),
        }
    }
    if mount.target.is_empty() {
        bail!("--{flag}: target is required in {text:?}; {hint}");
    }
    let kind = api::mount::Type::try_from(mount.r#type).unwrap_or(api::mount::Type::Volume);
    let kind_name = kind.text();
    if volume_options.is_some() && kind != api::mount::Type::Volume {
        bail!("--{flag}: cannot mix 'volume-*' options with mount type '{kind_name}'");
    }
    if bind_options.is_some() && kind != api::mount::Type::Bind {
        bail!("--{flag}: cannot mix 'bind-*' options with mount type '{kind_name}'");
    }
    if tmpfs_options.is_some() && kind != api::mount::Type::Tmpfs {
        bail!("--{flag}: cannot mix 'tmpfs-*' options with mount type '{kind_name}'");
    }
    if kind == api::mount::Type::Bind && !mount.source.starts_with('/') {
        bail!(
            "--{flag}: a bind mount needs an absolute source path on every node, got {:?}; {hint}",
            mount.source
        );
    }
    if kind == api::mount::Type::Tmpfs && !mount.source.is_empty() {
        bail!(
            "--{flag}: a tmpfs mount takes no source; drop source={}",
            mount.source
        );
    }
    mount.bind_options = bind_options;
    mount.volume_options = volume_options;
    mount.tmpfs_options = tmpfs_options;
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_docker_csv() -> anyhow::Result<()> {
        let mount = parse_mount(
            "mount",
            "type=volume,src=data,dst=/data,volume-label=a=b,volume-driver=local,\"volume-opt=o=x,y\",ro=false",
        )?;
        assert_eq!(mount.r#type, api::mount::Type::Volume as i32);
        assert_eq!(mount.source, "data");
        assert_eq!(mount.target, "/data");
        assert!(!mount.readonly);
        let volume = mount.volume_options.unwrap_or_default();
        assert_eq!(volume.labels["a"], "b");
        let driver = volume.driver_config.unwrap_or_default();
        assert_eq!(driver.name, "local");
        assert_eq!(driver.options["o"], "x,y");
        let mount = parse_mount("mount", "target=/cache")?;
        assert_eq!(mount.r#type, api::mount::Type::Volume as i32);
        let mount = parse_mount("mount", "type=tmpfs,target=/t,tmpfs-mode=1777")?;
        assert_eq!(mount.tmpfs_options.map(|t| t.mode), Some(0o1777));
        Ok(())
    }
}
