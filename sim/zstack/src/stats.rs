//! Call counters, so tests can assert how a client used the API (retries, polls, creates).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of `/zstack/v1` calls since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// All calls, including ones answered by a fault or with 400/404.
    pub total: u64,
    /// Per `"<METHOD> <path template>"`, e.g. `"PUT /zstack/v1/vm-instances/{uuid}/actions"`;
    /// paths with no API mapping count under `"<METHOD> <unmapped>"`.
    pub calls: BTreeMap<String, u64>,
    /// Per action name of `PUT .../actions` calls, e.g. `"startVmInstance"`.
    pub actions: BTreeMap<String, u64>,
    /// Sessions issued by successful logins.
    #[serde(default)]
    pub logins: u64,
    /// Calls authenticated with a live session (`Authorization: OAuth`).
    #[serde(default)]
    pub session_calls: u64,
    /// Calls refused because their session was unknown or expired (`ID.1001`).
    #[serde(default)]
    pub session_refusals: u64,
    /// `expire_sessions` faults applied (immediate or fired by a rule).
    #[serde(default)]
    pub expiries: u64,
    /// Sessions those faults invalidated.
    #[serde(default)]
    pub sessions_expired: u64,
    /// Logins since the latest expiry (all logins when there was none): each is a session
    /// issued after the expiry, so a client that recovered from it logged in again.
    #[serde(default)]
    pub logins_since_expiry: u64,
    /// Calls authenticated with a session since the latest expiry. An expiry leaves no live
    /// session, so each of these used a session issued after it.
    #[serde(default)]
    pub session_calls_since_expiry: u64,
}

impl Stats {
    /// Calls of `method` on `template` (e.g. `count("POST", "/zstack/v1/vm-instances")`).
    pub fn count(&self, method: &str, template: &str) -> u64 {
        self.calls
            .get(&format!("{method} {template}"))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of one action (e.g. `action("rebootVmInstance")`).
    pub fn action(&self, name: &str) -> u64 {
        self.actions.get(name).copied().unwrap_or(0)
    }

    /// Counts one call under its `"<METHOD> <template>"` key.
    pub(crate) fn record(&mut self, key: String) {
        self.total += 1;
        *self.calls.entry(key).or_insert(0) += 1;
    }

    /// Counts a successful login (also since the latest expiry).
    pub(crate) fn record_login(&mut self) {
        self.logins += 1;
        self.logins_since_expiry += 1;
    }

    /// A call presented a session: accepted (`true`) or refused with `ID.1001`.
    pub(crate) fn record_session_use(&mut self, accepted: bool) {
        if accepted {
            self.session_calls += 1;
            self.session_calls_since_expiry += 1;
        } else {
            self.session_refusals += 1;
        }
    }

    /// An `expire_sessions` fault invalidated `n` sessions.
    pub(crate) fn record_expiry(&mut self, n: u64) {
        self.expiries += 1;
        self.sessions_expired += n;
        self.logins_since_expiry = 0;
        self.session_calls_since_expiry = 0;
    }

    /// Counts one `PUT .../actions` call by its action name.
    pub(crate) fn record_action(&mut self, name: &str) {
        *self.actions.entry(name.to_string()).or_insert(0) += 1;
    }
}
