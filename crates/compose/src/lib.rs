//! Compose files for `shoal stack`: parse → interpolate → merge → validate → normalise, as pure
//! functions over file contents and an environment map (`env_file`s are read through a function
//! the caller passes in). Only [`stack_config`] touches the disk and the process environment.
//!
//! The stages, in order:
//! - [`yaml`] builds a tree that keeps each node's file and line, resolving anchors and `<<`;
//! - [`interpolate`] substitutes `${VAR}` forms in every value, file by file (as docker does);
//! - [`merge`] folds later `-c` files into the first with the Compose Specification's rules;
//! - [`parse`] checks keys, types, units and references and builds the [`model`];
//! - [`emit`] prints the model the way `docker stack config` does;
//! - [`convert`] turns the model into the service, network, secret and config specs of a deploy.

// `stack deploy` (issue 6, part 2) is its caller; until then only the tests use it.
#[allow(dead_code)]
pub(crate) mod convert;
pub(crate) mod emit;
pub(crate) mod interpolate;
pub(crate) mod merge;
pub(crate) mod model;
pub(crate) mod parse;
pub(crate) mod units;
pub(crate) mod yaml;

use std::collections::BTreeSet;
use std::fmt;

pub(crate) use interpolate::Environment;
pub(crate) use model::ComposeProject;

/// One problem in a compose file, located by file, line and key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ComposeError {
    pub(crate) file: String,
    pub(crate) line: Option<usize>,
    /// Dotted key path such as `services.web.deploy.replicas`; empty for file-level problems.
    pub(crate) path: String,
    /// What is wrong and how to fix it.
    pub(crate) message: String,
}

impl ComposeError {
    pub(crate) fn at(mark: &yaml::Mark, path: &str, message: &str) -> Self {
        ComposeError {
            file: mark.file.to_string(),
            line: Some(mark.line),
            path: path.to_owned(),
            message: message.to_owned(),
        }
    }
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ComposeError {}

/// Every problem found; nothing is deployed while there is one.
#[derive(Debug)]
pub(crate) struct ComposeErrors(pub(crate) Vec<ComposeError>);

impl fmt::Display for ComposeErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(f, "the compose files have {count} problem{plural} to fix:")?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ComposeErrors {}

impl From<ComposeError> for ComposeErrors {
    fn from(error: ComposeError) -> Self {
        ComposeErrors(vec![error])
    }
}

/// A compose file's name (as given on the command line) and contents.
pub(crate) struct SourceFile {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// Reads a file named by an absolute path; the one piece of IO `load` needs (`env_file`), passed
/// in so that tests can serve files from memory.
pub(crate) type ReadFile<'a> = &'a dyn Fn(&str) -> std::io::Result<String>;

pub(crate) struct LoadOptions<'a> {
    /// `false` for `--skip-interpolation`: `${VAR}` stays as written.
    pub(crate) interpolate: bool,
    /// Directory that relative paths (`file:`, bind sources, `env_file`) are resolved against.
    pub(crate) base_dir: String,
    pub(crate) read_file: ReadFile<'a>,
}

#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) project: ComposeProject,
    pub(crate) warnings: Vec<String>,
}

/// Loads one or more compose files into a checked project. Pure: the caller reads the compose
/// files and supplies the environment (the process environment over the `.env` file); `env_file`s
/// are read through `options.read_file`.
pub(crate) fn load(
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
    let mut parser = parse::Parser::new(&options.base_dir, env, options.read_file);
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

/// `shoal stack config`: prints the merged, interpolated, normalised files. Needs no daemon.
pub(crate) fn stack_config(files: &[String], skip_interpolation: bool) -> anyhow::Result<()> {
    let loaded = read_project(files, skip_interpolation)?;
    print!("{}", emit::to_yaml(&loaded.project));
    Ok(())
}

/// Reads the compose files (`-` is standard input) with the environment (the process's over
/// the `.env` file next to the first file) and loads them; prints the warnings on stderr.
pub(crate) fn read_project(files: &[String], skip_interpolation: bool) -> anyhow::Result<Loaded> {
    use std::io::Read;

    let mut sources = Vec::new();
    for name in files {
        let text = if name == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        } else {
            std::fs::read_to_string(name)
                .map_err(|e| anyhow::anyhow!("cannot read compose file {name}: {e}"))?
        };
        sources.push(SourceFile {
            name: if name == "-" {
                "<stdin>".to_owned()
            } else {
                name.clone()
            },
            text,
        });
    }
    let first = files.first().map(String::as_str).unwrap_or("-");
    let base_dir = if first == "-" {
        std::env::current_dir()?
    } else {
        let absolute = std::path::absolute(first)?;
        absolute
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    // Values exported in the shell win over the `.env` file next to the first compose file.
    let mut env = Environment::new();
    let dotenv = base_dir.join(".env");
    if dotenv.is_file() {
        let text = std::fs::read_to_string(&dotenv)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dotenv.display()))?;
        env = interpolate::parse_dotenv(&dotenv.display().to_string(), &text)?;
    }
    env.extend(std::env::vars());
    let loaded = load(
        &sources,
        &env,
        &LoadOptions {
            interpolate: !skip_interpolation,
            base_dir: base_dir.display().to_string(),
            read_file: &|path| std::fs::read_to_string(path),
        },
    )?;
    for warning in &loaded.warnings {
        eprintln!("WARNING: {warning}");
    }
    Ok(loaded)
}
