//! What `--init` needs inside a container, gathered once per daemon start, and the kernel's
//! highest capability number.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// `/proc/sys/kernel/cap_last_cap`; CAP_AUDIT_READ (37, Linux 3.16) when it can't be read.
pub(crate) fn kernel_last_capability() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(37)
}

/// Gathers what `--init` needs inside a container: the dynamic loader and the libraries this
/// very process has mapped (read from /proc/self/maps), plus a hard link to (or copy of) the
/// `shoal` binary. A container then runs `/.shoal/ld.so --library-path /.shoal /.shoal/shoal
/// init`, which needs nothing from the image. Files are replaced by rename, never rewritten in
/// place, because running `--init` containers have this directory mapped.
pub(crate) fn prepare(data_root: &Path) -> Result<PathBuf> {
    let dir = data_root.join("init");
    std::fs::create_dir_all(&dir).map_err(EngineError::io("creating the init directory"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(EngineError::io("reading /proc/self/maps"))?;
    let mut libraries: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libraries.sort();
    libraries.dedup();
    let replace = |source: &Path, name: &str, link: bool| -> Result<()> {
        let temporary = dir.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&temporary);
        if !(link && std::fs::hard_link(source, &temporary).is_ok()) {
            std::fs::copy(source, &temporary)
                .map_err(EngineError::io(format!("copying {}", source.display())))?;
        }
        std::fs::rename(&temporary, dir.join(name))
            .map_err(EngineError::io(format!("installing {name} for --init")))
    };
    let mut have_loader = false;
    for library in &libraries {
        let Some(name) = library
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        if name.starts_with("ld-linux") {
            have_loader = true;
            replace(library, "ld.so", false)?;
        } else {
            replace(library, &name, false)?;
        }
    }
    if !have_loader {
        return Err(EngineError::NotSupported(
            "--init without a dynamic loader in this process".to_owned(),
        ));
    }
    let exe = std::env::current_exe().map_err(EngineError::io("finding the shoal binary"))?;
    replace(&exe, "shoal", true)?;
    Ok(dir)
}
