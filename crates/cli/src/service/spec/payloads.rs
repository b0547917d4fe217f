//! `--secret` and `--config`: references to secrets and configs, with Docker's defaults.

use anyhow::bail;
use shoal_proto::api;

/// The parts of a `--secret`/`--config` value: `NAME`, or `source=NAME,target=…,uid=…,gid=…,mode=…`
/// with Docker's defaults (uid and gid 0, mode 0444, target the name).
pub(super) struct PayloadFlag {
    pub(super) source: String,
    pub(super) target: String,
    pub(super) uid: String,
    pub(super) gid: String,
    pub(super) mode: u32,
}

pub(super) fn parse_payload_flag(
    flag: &str,
    text: &str,
    default_target: impl Fn(&str) -> String,
) -> anyhow::Result<PayloadFlag> {
    let hint = "use NAME, or source=NAME,target=FILE[,uid=0,gid=0,mode=0444]";
    if !text.contains('=') {
        if text.is_empty() {
            bail!("--{flag}: empty value: {hint}");
        }
        return Ok(PayloadFlag {
            source: text.to_owned(),
            target: default_target(text),
            uid: "0".to_owned(),
            gid: "0".to_owned(),
            mode: 0o444,
        });
    }
    let (mut source, mut target) = (None, None);
    let (mut uid, mut gid, mut mode) = (
        spec::defaults::FILE_UID.to_owned(),
        spec::defaults::FILE_GID.to_owned(),
        spec::defaults::FILE_MODE,
    );
    for field in
        spec::csv::split_line(text).map_err(|error| anyhow::anyhow!("--{flag}: {error}: {hint}"))?
    {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--{flag}: invalid field {field:?}: {hint}"))?;
        match key.to_ascii_lowercase().as_str() {
            "source" | "src" => source = Some(value.to_owned()),
            "target" => target = Some(value.to_owned()),
            "uid" => uid = value.to_owned(),
            "gid" => gid = value.to_owned(),
            "mode" => {
                mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o777)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--{flag}: invalid mode {value:?}: give octal permissions such as 0400"
                        )
                    })?;
            }
            other => bail!("--{flag}: unknown field {other:?}: {hint}"),
        }
    }
    let source = source
        .filter(|source| !source.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--{flag}: source is required: {hint}"))?;
    let target = target.unwrap_or_else(|| default_target(&source));
    Ok(PayloadFlag {
        source,
        target,
        uid,
        gid,
        mode,
    })
}

/// `--secret`: mounted at `/run/secrets/<target>` unless the target is absolute.
pub(crate) fn parse_secret_reference(
    flag: &str,
    text: &str,
) -> anyhow::Result<api::SecretReference> {
    let parsed = parse_payload_flag(flag, text, str::to_owned)?;
    Ok(api::SecretReference {
        secret_name: parsed.source,
        target: Some(api::secret_reference::Target::File(
            api::secret_reference::FileTarget {
                name: parsed.target,
                uid: parsed.uid,
                gid: parsed.gid,
                mode: Some(parsed.mode),
            },
        )),
        ..Default::default()
    })
}

/// `--config`: mounted at its target, `/<name>` by default.
pub(crate) fn parse_config_reference(
    flag: &str,
    text: &str,
) -> anyhow::Result<api::ConfigReference> {
    let parsed = parse_payload_flag(flag, text, |name| format!("/{name}"))?;
    Ok(api::ConfigReference {
        config_name: parsed.source,
        target: Some(api::config_reference::Target::File(
            api::config_reference::FileTarget {
                name: parsed.target,
                uid: parsed.uid,
                gid: parsed.gid,
                mode: Some(parsed.mode),
            },
        )),
        ..Default::default()
    })
}

/// Sets a container's secrets and configs, refusing two at the same target.
pub(super) fn set_payload_references(
    container: &mut api::ContainerSpec,
    secrets: Vec<api::SecretReference>,
    configs: Vec<api::ConfigReference>,
) -> anyhow::Result<()> {
    let mut targets = std::collections::HashSet::new();
    for secret in &secrets {
        if let Some(api::secret_reference::Target::File(file)) = &secret.target
            && !targets.insert(file.name.clone())
        {
            bail!(
                "--secret: two secrets target {}: give each its own target",
                file.name
            );
        }
    }
    let mut config_targets = std::collections::HashSet::new();
    for config in &configs {
        if let Some(api::config_reference::Target::File(file)) = &config.target
            && !config_targets.insert(file.name.clone())
        {
            bail!(
                "--config: two configs target {}: give each its own target",
                file.name
            );
        }
    }
    container.secrets = secrets;
    container.configs = configs;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_configs_parse_dockers_flags() -> anyhow::Result<()> {
        let short = parse_secret_reference("secret", "db-password")?;
        assert_eq!(short.secret_name, "db-password");
        let Some(api::secret_reference::Target::File(file)) = short.target else {
            panic!("a file target");
        };
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("db-password", "0", "0", Some(0o444))
        );
        let long =
            parse_secret_reference("secret", "source=pw,target=db_pw,uid=7,gid=8,mode=0400")?;
        let Some(api::secret_reference::Target::File(file)) = long.target else {
            panic!("a file target");
        };
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("db_pw", "7", "8", Some(0o400))
        );
        let config = parse_config_reference("config", "nginx.conf")?;
        let Some(api::config_reference::Target::File(file)) = config.target else {
            panic!("a file target");
        };
        assert_eq!(file.name, "/nginx.conf");
        for (text, why) in [
            ("target=x", "source is required"),
            ("source=x,mode=999", "invalid mode"),
            ("source=x,colour=red", "unknown field"),
            ("", "empty value"),
        ] {
            let error = parse_secret_reference("secret", text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
        let mut container = api::ContainerSpec::default();
        let twice = vec![
            parse_secret_reference("secret", "source=a,target=x")?,
            parse_secret_reference("secret", "source=b,target=x")?,
        ];
        let error = set_payload_references(&mut container, twice, Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("two secrets target x"),
            "{error}"
        );
        Ok(())
    }
}
