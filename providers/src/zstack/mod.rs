//! The ZStack adapter: [`ZStackCloud`] implements [`crate::Cloud`] on the ZStack REST API
//! (`/zstack/v1`), as described in `docs/providers/zstack-api.md`; user documentation is in
//! `docs/providers/zstack.md`.
//!
//! Submodules:
//! * [`config`]: [`ZStackConfig`], [`ZStackCredentials`] (env / file), [`Secret`], [`GpuAttach`];
//! * [`client`]: HTTP, login / AccessKey signing, async jobs, paged queries;
//! * [`query`]: `q=` condition building and encoding;
//! * [`errors`]: error-body classification into [`crate::CloudError`];
//! * [`model`]: serde types of ZStack inventories;
//! * [`tags`]: how kprov tags map to ZStack user tags;
//! * `endpoint` (private): the control-plane endpoint (VIP, load balancer, listener);
//! * [`cloud`]: the adapter [`ZStackCloud`] and its [`crate::Cloud`] implementation;
//! * `infra` (private): the infrastructure read from the management node, and the image, size,
//!   L3 network and hosts chosen from it;
//! * `placement` (private): the placement and GPU engine behind `create_instance` and `check`.

pub mod client;
pub mod cloud;
pub mod config;
mod endpoint;
pub mod errors;
mod infra;
pub mod model;
mod placement;
pub mod query;
pub mod tags;
#[cfg(test)]
mod tests;

pub use client::ApiStats;

/// The largest user-data kprov hands to ZStack: 49143 bytes. Not documented by ZStack; the
/// system tag `userdata::<base64>` is assumed to live in a MySQL `TEXT` column (65535 bytes),
/// so 65525 base64 characters, i.e. 49143 bytes of user-data.
pub const USER_DATA_LIMIT: usize = 49143;
pub use cloud::ZStackCloud;
pub use config::{GpuAttach, Secret, ZStackConfig, ZStackCredentials};

/// Provider name used in errors and by [`crate::Cloud::name`].
pub const PROVIDER: &str = "zstack";
