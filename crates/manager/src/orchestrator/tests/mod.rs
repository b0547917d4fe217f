//! Table-style tests of the orchestration cores: each builds a small snapshot, runs one core
//! and compares the rendered commands with the expected lines.

mod commit_groups;
mod convergence;
mod global;
mod jobs;
mod reaper;
mod replicated;
mod restart;
mod services;
mod support;
mod update;
