//! Repository-wide tidy checks that run under plain `cargo test`: every Rust file opens with a
//! `//!` line saying what it is for, so the code map stays readable file by file, and the crates'
//! dependencies keep the lines ARCHITECTURE.md draws between them.

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

/// The packages a `Cargo.toml` depends on, in any `[*dependencies]` table (normal, dev, build,
/// target-specific), by the names its own tables use. A line reader, not a TOML parser: the
/// workspace writes dependencies as `name = …`, `name.workspace = true` or `[dependencies.name]`.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('[') {
            let table = table.trim_end_matches(']');
            let (head, tail) = match table.rsplit_once('.') {
                Some((head, tail)) if head.ends_with("dependencies") => (head, Some(tail)),
                _ => (table, None),
            };
            match tail {
                Some(name) => {
                    found.push(name.trim_matches('"').to_owned());
                    in_dependencies = false;
                }
                None => in_dependencies = head.ends_with("dependencies"),
            }
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split(['=', '.']).next().unwrap_or_default().trim();
        if !key.is_empty() {
            found.push(key.trim_matches('"').to_owned());
        }
    }
    found
}

/// Each member of the workspace (`crates/*` by directory name, and `proto` and `tests`) and its
/// dependencies.
fn crate_dependencies() -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut members: Vec<PathBuf> = vec![root.join("proto"), root.join("tests")];
    members.extend(
        std::fs::read_dir(root.join("crates"))
            .expect("the crates directory")
            .flatten()
            .map(|entry| entry.path()),
    );
    let mut found = Vec::new();
    for member in members {
        let Ok(text) = std::fs::read_to_string(member.join("Cargo.toml")) else {
            continue;
        };
        let name = member.file_name().unwrap_or_default();
        found.push((name.to_string_lossy().into_owned(), dependencies(&text)));
    }
    found.sort();
    found
}

#[test]
fn the_dependency_reader_sees_every_form_a_manifest_uses() {
    let manifest = r#"
[package]
name = "x"
clap-like = "not a dependency"

[dependencies]
clap.workspace = true
tokio = { version = "1" }
# worker.workspace = true

[target.'cfg(unix)'.dev-dependencies]
manager.workspace = true

[dependencies.tonic]
workspace = true
"#;
    assert_eq!(
        dependencies(manifest),
        ["clap", "tokio", "manager", "tonic"]
    );
}

#[test]
fn crate_dependencies_keep_the_lines_the_architecture_draws() {
    let crates = crate_dependencies();
    assert!(
        crates.iter().any(|(name, _)| name == "manager"),
        "the scan found no crates: {crates:?}"
    );
    let depends = |deps: &[String], name: &str| deps.iter().any(|dep| dep == name);
    let mut broken = Vec::new();
    for (name, deps) in &crates {
        if name != "cli" && depends(deps, "clap") {
            broken.push(format!("{name} depends on clap: only cli parses arguments"));
        }
        if name != "daemon" && depends(deps, "manager") && depends(deps, "worker") {
            broken.push(format!(
                "{name} depends on both manager and worker: only daemon composes the two"
            ));
        }
        // Pure crates: spec holds the rules and compose the compose pipeline, neither any IO
        // runtime, argument parsing or the engine.
        if name == "spec" || name == "compose" {
            for forbidden in ["tokio", "tonic", "clap", "engine"] {
                if depends(deps, forbidden) {
                    broken.push(format!(
                        "{name} depends on {forbidden}: it must stay free of IO runtimes, argument parsing and the engine"
                    ));
                }
            }
        }
        // The CLI reaches the node's roles only through the daemon that composes them.
        if name == "cli" {
            for role in ["manager", "worker", "raft-store"] {
                if depends(deps, role) {
                    broken.push(format!(
                        "cli depends on {role}: it reaches it only through daemon"
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    for (member, what) in [
        ("daemon", "the node daemon is composed there"),
        ("spec", "the rules live there"),
        ("compose", "the compose pipeline lives there"),
        ("cli", "the binary is built there"),
    ] {
        assert!(
            crates.iter().any(|(name, _)| name == member),
            "there is no crates/{member}: {what}"
        );
    }
}

/// The paths into the `engine` crate that `text` names (`engine::shim::shim_main`), leaving out
/// other crates' modules of that name (`shoal_proto::engine::…`, `my_engine::…`).
fn engine_crate_paths(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("engine::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c == ':' || c == '_' || c.is_ascii_alphanumeric()) {
            continue;
        }
        let path = &text[at..];
        let end = path
            .find(|c: char| !(c == ':' || c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(path.len());
        found.push(&path[..end]);
    }
    found
}

#[test]
fn the_engine_path_reader_skips_other_crates_modules() {
    assert_eq!(
        engine_crate_paths(
            "engine::shim::shim_main(x); shoal_proto::engine::Image; my_engine::x; (engine::init::y)"
        ),
        ["engine::shim::shim_main", "engine::init::y"]
    );
}

/// cli depends on `engine` only to run the engine's hidden entry points (`shoal shim`,
/// `shoal init`, `shoal runtime-exec`); the vocabulary it once borrowed from it (capability,
/// ulimit and sysctl names, RFC 3339 times) is `spec`'s.
#[test]
fn cli_uses_the_engine_only_for_its_hidden_entry_points() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/cli/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 5, "the scan found too few files: {files:?}");
    let entry_points = ["engine::shim::", "engine::init::", "engine::runtime::"];
    let mut elsewhere = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for path in engine_crate_paths(&text) {
            if !entry_points.iter().any(|allowed| path.starts_with(allowed)) {
                elsewhere.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        elsewhere.is_empty(),
        "cli uses the engine for more than its hidden entry points; take the rule from spec: {elsewhere:#?}"
    );
}
