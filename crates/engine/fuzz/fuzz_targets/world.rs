//! The directory each fuzz input is unpacked in, and the files beside it that must never
//! change: a marker file and a directory under `outside/`, at a fixed absolute path the seed
//! corpus's links aim at.

use std::path::{Path, PathBuf};

/// Where the fuzz targets work; the seeds' absolute links point into it.
pub const WORLD: &str = "/tmp/shoal-fuzz-world";

/// A fresh `WORLD/inside` for one input, with `WORLD/outside` checked after it.
pub struct World {
    pub inside: PathBuf,
}

impl World {
    pub fn new() -> World {
        let world = Path::new(WORLD);
        let outside = world.join("outside");
        std::fs::create_dir_all(outside.join("dir")).expect("outside/dir");
        std::fs::write(outside.join("marker"), b"untouched").expect("outside/marker");
        let inside = world.join("inside");
        let _ = std::fs::remove_dir_all(&inside);
        std::fs::create_dir_all(&inside).expect("inside");
        World { inside }
    }

    /// Panics (a finding) when anything beside `inside/` changed.
    pub fn check_outside(&self) {
        let world = Path::new(WORLD);
        let mut names: Vec<_> = std::fs::read_dir(world)
            .expect("reading the world")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["inside", "outside"],
            "something was made beside inside/"
        );
        let outside = world.join("outside");
        assert_eq!(
            std::fs::read(outside.join("marker")).ok().as_deref(),
            Some(&b"untouched"[..]),
            "outside/marker changed"
        );
        let meta = std::fs::symlink_metadata(outside.join("dir")).expect("outside/dir");
        assert!(meta.is_dir(), "outside/dir was replaced");
        assert_eq!(
            std::fs::read_dir(outside.join("dir"))
                .expect("outside/dir")
                .count(),
            0,
            "something was made in outside/dir"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 2);
    }
}
