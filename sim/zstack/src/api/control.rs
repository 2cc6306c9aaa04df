//! The `/_sim/...` control API: faults, stats, session expiry and TTL, a state dump.

use super::response::{json_resp, text};
use crate::faults::FaultRule;
use crate::sim::{lock, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

/// `POST /_sim/faults`: one rule or an array of them; answers their ids.
pub(super) async fn post_faults(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(400, format!("invalid JSON: {e}")),
    };
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    let mut rules = Vec::new();
    for item in items {
        match serde_json::from_value::<FaultRule>(item) {
            Ok(r) => rules.push(r),
            Err(e) => return text(400, format!("invalid fault rule: {e}")),
        }
    }
    let mut ids = Vec::new();
    for r in rules {
        match sh.add_fault(r) {
            Ok(id) => ids.push(id),
            Err(e) => return text(400, e.to_string()),
        }
    }
    json_resp(200, json!({ "ids": ids }))
}

/// `GET /_sim/faults`: the active rules and the TTL / clock-skew overrides.
pub(super) async fn list_faults(State(sh): State<Arc<Shared>>) -> Response {
    let f = lock(&sh.faults);
    json_resp(
        200,
        json!({
            "rules": f.rules,
            "ttlOverrideSecs": f.ttl_override,
            "clockSkewSecs": f.clock_skew_secs,
        }),
    )
}

/// `DELETE /_sim/faults`: drops every rule and override.
pub(super) async fn reset_faults(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).reset();
    json_resp(200, json!({}))
}

/// `GET /_sim/faults/log`: the faults fired so far.
pub(super) async fn fault_log(State(sh): State<Arc<Shared>>) -> Response {
    let log = lock(&sh.faults).log.clone();
    json_resp(200, serde_json::to_value(log).unwrap_or(Value::Null))
}

/// `DELETE /_sim/faults/log`.
pub(super) async fn clear_fault_log(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).clear_log();
    json_resp(200, json!({}))
}

/// `GET /_sim/stats`: the call counters.
pub(super) async fn get_stats(State(sh): State<Arc<Shared>>) -> Response {
    let s = lock(&sh.stats).clone();
    json_resp(200, serde_json::to_value(s).unwrap_or(Value::Null))
}

/// `DELETE /_sim/stats`: zeroes the call counters.
pub(super) async fn reset_stats(State(sh): State<Arc<Shared>>) -> Response {
    *lock(&sh.stats) = Default::default();
    json_resp(200, json!({}))
}

/// `POST /_sim/sessions/expire`: invalidates every session now.
pub(super) async fn expire_sessions(State(sh): State<Arc<Shared>>) -> Response {
    sh.apply_immediate(&crate::faults::FaultAction::ExpireSessions);
    json_resp(200, json!({}))
}

/// `PUT /_sim/session-ttl {"ttl_secs": N | null}`: overrides the session TTL (null restores it).
pub(super) async fn session_ttl(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(400, format!("invalid JSON: {e}")),
    };
    let ttl = match v.get("ttl_secs") {
        None | Some(Value::Null) => None,
        Some(x) => match x.as_u64() {
            Some(n) => Some(n),
            None => return text(400, "ttl_secs must be a non-negative integer or null"),
        },
    };
    sh.apply_immediate(&crate::faults::FaultAction::SessionTtl { ttl_secs: ttl });
    json_resp(200, json!({ "ttl_secs": ttl }))
}

/// `GET /_sim/state`: the whole persisted state, as the state file holds it.
pub(super) async fn dump_state(State(sh): State<Arc<Shared>>) -> Response {
    let v = sh.read(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    json_resp(200, v)
}
