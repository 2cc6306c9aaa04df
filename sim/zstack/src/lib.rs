//! A ZStack REST API simulator for kprov's tests and demos.
//!
//! It follows `docs/providers/zstack-api.md` (§11 "Simulator contract"): the `/zstack/v1` paths,
//! session and AccessKey auth, 202 + `api-jobs` polling for every async call, the query
//! language with its operator-precedence quirk, the VM state machine, IP allocation, host
//! placement by architecture and capacity, PCI/mdev device claims, tags, VIPs and load
//! balancers (listeners, VM NIC backends, cascading deletes), and ZStack's error shapes. A fault-injection API (`/_sim/...`, or the [`SimHandle`] methods) makes the failure
//! modes a real management node shows reproducible.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kprov_zstack_sim::SimError> {
//! use kprov_zstack_sim::{FaultRule, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! println!("ZStack at {}/zstack/v1", sim.endpoint());
//! sim.add_fault(FaultRule::unavailable_calls(2))?; // next two calls get 503 SYS.1012
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

// API errors (`ErrorCode`, axum `Response`) are returned by value everywhere: they *are* the
// simulator's product (response bodies), calls are not a hot path, and boxing them would only
// add noise.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

mod api;
mod cloud;
mod error;
mod faults;
mod inventory;
pub mod model;
mod query;
mod sim;
mod stats;
mod time;

pub use api::password_hash;
pub use error::{ErrorCode, SimError};
pub use faults::{FaultAction, FaultEvent, FaultRule, DEFAULT_FOREIGN_HOST};
pub use inventory::{derived_uuid, AccessKeyFixture, AccountFixture, Inventory};
pub use sim::{SimConfig, SimHandle, Simulator, VmReader};
pub use stats::Stats;
pub use time::GsonTime;
