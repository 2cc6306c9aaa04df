//! The engine: every operation kprov performs on a cluster, one module each. CLI verbs parse
//! flags, confirm and print; they call these functions for everything else, so a step of a run
//! (locking, observing the cloud, checking, fitting user-data, journaling) has one home.
//!
//! `update`: [`lock::acquire`] → [`plan::plan`] (validate, connect, observe, diff, repairs,
//! capacity check, user-data fit) → [`converge::apply`] (journal, secrets, executor) →
//! [`lock::release`]. `rolling-update`: [`plan::plan`] → [`rolling::roll`] (replacements made
//! next to the old instances, then the old ones taken out of the cluster through
//! [`live::Live`] and deleted, each step through [`converge::apply`]). Deletes of `update` and
//! `delete instancegroup` in a running cluster are drained through [`live::Live`] too.
//! `delete`: [`delete::target`], then [`delete::Target::inventory`] or, under the lock,
//! [`delete::Target::delete`].

pub mod access;
pub mod assets;
pub mod backup;
pub mod converge;
pub mod delete;
pub mod groups;
pub mod instances;
pub mod live;
pub mod lock;
pub mod mirror;
pub mod plan;
pub mod restore;
pub mod rolling;
pub mod specs;
pub mod validate;

pub use converge::{apply, ApplyOptions};
pub use delete::{target, Deleted, Inventory, Target};
pub use plan::{plan, PlanReport};
