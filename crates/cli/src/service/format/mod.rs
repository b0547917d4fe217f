//! Pure printing for the swarm verbs: docker's tables (tabwriter with a minimum cell width of
//! 10), `--format json` objects, `--pretty` text, go-units' human durations and the names and
//! states `service ps` shows. Every function takes what it prints (and `now` where time matters).
//! Inspect documents are Docker's API shapes, which `docker_api::shape` builds.

mod ls;
mod pretty;
mod ps;
mod table;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use ls::*;
pub(crate) use pretty::*;
pub(crate) use ps::*;
pub(crate) use table::*;
pub(crate) use values::*;
