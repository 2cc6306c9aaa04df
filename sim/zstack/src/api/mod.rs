//! HTTP layer: routing of `/zstack/v1/...`, authentication, the async job machinery and the
//! `/_sim/...` control API.
//!
//! A request goes `handler::zstack` → `routing::route` → `handler::dispatch` → a sync call
//! (`sync_calls`) or an async one (`async_calls`, `lb_calls`, run by the job machinery in `jobs`).

mod async_calls;
mod context;
mod control;
mod handler;
mod jobs;
mod lb_calls;
mod response;
mod routing;
mod sync_calls;

#[cfg(test)]
mod tests;

use crate::cloud::sha512_hex;
use crate::sim::Shared;
use axum::routing::{get, post, put};
use axum::Router;
use control::{
    clear_fault_log, dump_state, expire_sessions, fault_log, get_stats, list_faults, post_faults,
    reset_faults, reset_stats, session_ttl,
};
use std::sync::Arc;

/// Builds the router: control API routes plus a fallback that handles all of `/zstack/v1`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(post_faults).delete(reset_faults),
        )
        .route("/_sim/faults/log", get(fault_log).delete(clear_fault_log))
        .route("/_sim/stats", get(get_stats).delete(reset_stats))
        .route("/_sim/sessions/expire", post(expire_sessions))
        .route("/_sim/session-ttl", put(session_ttl))
        .route("/_sim/state", get(dump_state))
        .fallback(handler::zstack)
        .with_state(shared)
}

/// SHA-512 hex of a password, for clients written against this crate (the login body format).
pub fn password_hash(plain: &str) -> String {
    sha512_hex(plain)
}
