//! The pure half of the randomized fault campaign (`tests/campaign.rs`): the seeded plan of
//! writes and faults, and the checkers run after each round (acknowledged writes against the
//! final state, slots against tasks and containers, managers' stores against each other). None
//! of it needs root or a cluster; the test binary is the IO around it.

mod history;
mod plan;
mod slots;
mod stores;

pub use history::{HistorySummary, ObservedService, ObservedState, Outcome, Record, check_history};
pub use plan::{
    CampaignShape, ClientPlan, Fault, FaultKind, GENERATION_VARIABLE, NemesisAction, Operation,
    RoundPlan, Step, nemesis_actions, plan_campaign,
};
pub use slots::{ObservedContainer, ObservedTask, check_slots};
pub use stores::{ManagerView, first_difference};
