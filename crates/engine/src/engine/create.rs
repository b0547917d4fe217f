//! `create`: resolves the image, the user and the stop signal, writes the OCI bundle and the
//! container's record. Nothing runs yet; a failed write leaves no directory behind.

use std::time::SystemTime;

use super::{FileContents, Inner, lock};
use crate::container::{ContainerDir, ContainerRecord};
use crate::error::{EngineError, Result};
use crate::spec::{self, BundlePaths, ContainerSpec, MountSpec, ResolvedUser};
use crate::store::ResolvedImage;
use crate::util;

impl Inner {
    pub(super) fn create_blocking(
        &self,
        mut spec: ContainerSpec,
    ) -> Result<(ContainerRecord, FileContents)> {
        let image = self.images.resolve(&spec.image)?;
        let id = util::random_id()?;
        let name = match &spec.name {
            Some(name) => {
                spec::validate_name("container name", name)?;
                name.clone()
            }
            None => format!("shoal-{}", &id[..12]),
        };
        let user = self.resolve_user(&spec, &image)?;
        let stop_signal = match spec.stop_signal.clone().or_else(|| {
            image
                .config
                .config
                .as_ref()
                .and_then(|c| c.stop_signal.clone())
        }) {
            Some(signal) => spec::parse_signal(&signal)?,
            None => libc::SIGTERM,
        };
        let file_contents = take_file_contents(&mut spec);
        let dir = ContainerDir::new(&self.config.data_root, &id);
        let paths = BundlePaths {
            rootfs: dir.rootfs(),
            volumes: self.config.data_root.join("volumes"),
            files: dir.files(),
            init_dir: self.init_dir.clone(),
        };
        let oci = spec::runtime_spec(
            &id,
            &spec,
            &image.config,
            user,
            &paths,
            self.last_capability,
        )?;
        let record = ContainerRecord {
            args: spec::process_args(&spec, &image.config)?,
            id: id.clone(),
            name: name.clone(),
            created: util::rfc3339(SystemTime::now()),
            image_id: image.id.clone(),
            layer_dirs: image.layer_dirs.clone(),
            stop_signal,
            spec,
        };
        {
            let containers = lock(&self.containers);
            if containers.values().any(|e| e.record.name == name) {
                return Err(EngineError::NameInUse(name));
            }
            self.host.create_dir_all(&dir.root)?;
        }
        let written = util::write_json(&dir.oci_config(), &oci)
            .and_then(|()| util::write_json(&dir.record(), &record));
        if let Err(error) = written {
            let _ = self.host.remove_dir_all(&dir.root);
            return Err(error);
        }
        Ok((record, file_contents))
    }

    /// The user and groups the container runs as, looked up in the image's `/etc/passwd` and
    /// `/etc/group`.
    fn resolve_user(&self, spec: &ContainerSpec, image: &ResolvedImage) -> Result<ResolvedUser> {
        let limit = self.images.limits().image_file_bytes;
        let read = |file: &str| -> Result<String> {
            let contents = image.read_file(file, limit)?.unwrap_or_default();
            Ok(String::from_utf8_lossy(&contents).into_owned())
        };
        let mut user = match &spec.user {
            None => ResolvedUser::default(),
            Some(user) => spec::resolve_user(user, &read("etc/passwd")?, &read("etc/group")?)?,
        };
        if !spec.groups.is_empty() {
            user.additional_gids = spec::resolve_groups(&spec.groups, &read("etc/group")?)?;
        }
        Ok(user)
    }
}

/// Takes `File` mount contents out of the spec: they are kept in memory, never on disk.
fn take_file_contents(spec: &mut ContainerSpec) -> FileContents {
    let mut file_contents = Vec::new();
    for (index, mount) in spec.mounts.iter_mut().enumerate() {
        if let MountSpec::File { contents, .. } = mount {
            file_contents.push((index, std::mem::take(contents)));
        }
    }
    file_contents
}
