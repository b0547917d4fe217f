//! Repository-wide tidy checks that run under plain `cargo test`: every Rust file opens with a
//! `//!` line saying what it is for, so the code map stays readable file by file.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Build output and dependencies are not ours to tidy.
            if name != "target" && !name.starts_with("target-") && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for top in ["proto", "crates", "tests", "deploy"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(files.len() > 20, "the scan found too few files: {files:?}");
    let undocumented: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            !text
                .lines()
                .next()
                .is_some_and(|line| line.starts_with("//!"))
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files don't open with a `//!` line saying what they are for: {undocumented:#?}"
    );
}
