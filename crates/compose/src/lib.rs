//! Compose files for `shoal stack`: parse → interpolate → merge → validate → normalise, as pure
//! functions over file contents and an environment map. The library does no IO: the caller reads
//! the compose files, the `.env` file and the process environment, and serves the files a compose
//! file names (`env_file`) through [`Sources`]; the CLI does that with the disk, tests from
//! memory. Capabilities, ulimits and sysctls are checked with `spec`'s Linux vocabulary, the
//! lists the engine builds containers from.
//!
//! The stages, in order:
//! - [`yaml`] builds a tree that keeps each node's file and line, resolving anchors and `<<`;
//! - [`interpolate`] substitutes `${VAR}` forms in every value, file by file (as docker does);
//! - [`merge`] folds later `-c` files into the first with the Compose Specification's rules;
//! - [`parse`] checks keys, types, units and references and builds the [`model`];
//! - [`emit`] prints the model the way `docker stack config` does;
//! - [`convert`] turns the model into the service, network, secret and config specs of a deploy.

pub mod convert;
pub mod emit;
pub mod interpolate;
pub mod merge;
pub mod model;
pub mod parse;
pub mod units;
pub mod yaml;

use std::collections::BTreeSet;

pub use interpolate::{Environment, parse_dotenv};
pub use model::ComposeProject;

/// One problem in a compose file, located by file, line and key path:
/// `FILE:LINE: key.path: problem: fix`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}{}: {message}", line_part(.line), path_part(.path))]
pub struct ComposeError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted key path such as `services.web.deploy.replicas`; empty for file-level problems.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ComposeError {
    pub fn at(mark: &yaml::Mark, path: &str, message: &str) -> Self {
        ComposeError {
            file: mark.file.to_string(),
            line: Some(mark.line),
            path: path.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `:LINE`, or nothing for a problem with no line.
fn line_part(line: &Option<usize>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

/// `: key.path`, or nothing for a file-level problem.
fn path_part(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(": {path}")
    }
}

/// Every problem found; nothing is deployed while there is one.
#[derive(Debug, thiserror::Error)]
#[error("the compose files have {} to fix:{}", problems(.0.len()), list(.0))]
pub struct ComposeErrors(pub Vec<ComposeError>);

/// `1 problem`, `3 problems`.
fn problems(count: usize) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} problem{plural}")
}

/// Each problem on its own indented line.
fn list(errors: &[ComposeError]) -> String {
    errors.iter().map(|error| format!("\n  {error}")).collect()
}

impl From<ComposeError> for ComposeErrors {
    fn from(error: ComposeError) -> Self {
        ComposeErrors(vec![error])
    }
}

/// A compose file's name (as given on the command line) and contents.
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// The files a compose file names and the pipeline reads (`env_file`), by absolute path. The CLI
/// reads them from the disk; tests serve them from memory.
pub trait Sources {
    /// The file's contents, or why it cannot be read (the error is shown to the user).
    fn read_file(&self, path: &str) -> std::io::Result<String>;
}

impl<F: Fn(&str) -> std::io::Result<String>> Sources for F {
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        self(path)
    }
}

pub struct LoadOptions<'a> {
    /// `false` for `--skip-interpolation`: `${VAR}` stays as written.
    pub interpolate: bool,
    /// Directory that relative paths (`file:`, bind sources, `env_file`) are resolved against.
    pub base_dir: String,
    pub sources: &'a dyn Sources,
}

#[derive(Debug)]
pub struct Loaded {
    pub project: ComposeProject,
    pub warnings: Vec<String>,
}

/// Loads one or more compose files into a checked project. Pure: the caller reads the compose
/// files and supplies the environment (see [`environment`]); `env_file`s are read through
/// `options.sources`.
pub fn load(
    files: &[SourceFile],
    env: &Environment,
    options: &LoadOptions<'_>,
) -> Result<Loaded, ComposeErrors> {
    let mut warnings = Vec::new();
    let mut unset = BTreeSet::new();
    let mut merged: Option<yaml::Node> = None;
    for file in files {
        let mut tree = yaml::parse(&file.name, &file.text)?;
        if !matches!(tree.value, yaml::Value::Map(_)) {
            return Err(ComposeError::at(
                &tree.mark,
                "",
                "a compose file is a mapping with a top-level `services:` key",
            )
            .into());
        }
        if options.interpolate {
            interpolate::interpolate_tree(&mut tree, &mut Vec::new(), env, &mut unset)?;
        }
        merged = Some(match merged {
            None => tree,
            Some(base) => merge::merge(base, tree, &[]),
        });
    }
    let Some(root) = merged else {
        return Err(ComposeError {
            file: String::new(),
            line: None,
            path: String::new(),
            message: "no compose file given: pass one with -c FILE".into(),
        }
        .into());
    };
    for name in unset {
        warnings.push(format!(
            "variable {name} is not set, so it is replaced by an empty string: export it or add it to the .env file"
        ));
    }
    let mut parser = parse::Parser::new(&options.base_dir, env, options.sources);
    let project = parser.project(&root);
    if !parser.ignored.is_empty() {
        warnings.push(format!(
            "ignoring keys that swarm services do not use: {}",
            parser.ignored.join(", ")
        ));
    }
    warnings.append(&mut parser.warnings);
    if parser.errors.is_empty() {
        Ok(Loaded { project, warnings })
    } else {
        let mut errors = parser.errors;
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        errors.dedup();
        Err(ComposeErrors(errors))
    }
}

/// The environment that interpolation reads: the variables of the `.env` file next to the first
/// compose file (`dotenv`, if there is one), under those of the process, which win as in docker.
pub fn environment(
    dotenv: Option<&SourceFile>,
    process: impl IntoIterator<Item = (String, String)>,
) -> Result<Environment, ComposeError> {
    let mut env = match dotenv {
        Some(file) => parse_dotenv(&file.name, &file.text)?,
        None => Environment::new(),
    };
    env.extend(process);
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_file_line_path_and_count() {
        let located = ComposeError {
            file: "a.yml".into(),
            line: Some(3),
            path: "services.web.image".into(),
            message: "expected a string".into(),
        };
        let file_level = ComposeError {
            file: "b.yml".into(),
            line: None,
            path: String::new(),
            message: "a compose file is a mapping".into(),
        };
        assert_eq!(
            located.to_string(),
            "a.yml:3: services.web.image: expected a string"
        );
        assert_eq!(file_level.to_string(), "b.yml: a compose file is a mapping");
        assert_eq!(
            ComposeErrors::from(located.clone()).to_string(),
            "the compose files have 1 problem to fix:\n  a.yml:3: services.web.image: expected a string"
        );
        assert_eq!(
            ComposeErrors(vec![located, file_level]).to_string(),
            "the compose files have 2 problems to fix:\n  a.yml:3: services.web.image: expected a string\n  b.yml: a compose file is a mapping"
        );
    }
}
