//! The worker agent's pure core: converting assigned tasks to engine container specs
//! ([`convert`]), the reconciler that drives tasks through their states ([`reconciler`]) and the
//! on-disk assignment store that lets a restarted daemon re-adopt its containers ([`store`]),
//! the seam to the node's overlay networking ([`networking`]), and the reassembly of assignment sets sent in parts ([`assignment_parts`]).
//! [`agent`] is the async shell around them: it keeps a session with the managers' dispatcher
//! and has the engine carry out what the reconciler decides.

pub mod agent;
pub mod assignment_parts;
pub mod convert;
pub mod error;
pub mod networking;
pub mod reconciler;
pub mod store;

pub use agent::{AgentConfig, DispatcherConnector, ImageProvider, run_agent};
pub use convert::{
    LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK, LABEL_TASK_ID,
    LABEL_TASK_NAME, TaskPayloads, container_name_for_task, container_spec_for_task,
    task_has_healthcheck, task_name, task_networks,
};
pub use error::{Result, WorkerError};
pub use reconciler::{
    AssignmentSet, Command, CommandOutcome, ContainerRunState, EngineObservation, Event,
    ExistingContainer, Reconciler,
};
pub use store::{ASSIGNMENT_FILE_NAME, AssignmentStore, PersistedAssignments};
