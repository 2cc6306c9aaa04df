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

    pub(crate) fn record(&mut self, key: String) {
        self.total += 1;
        *self.calls.entry(key).or_insert(0) += 1;
    }

    pub(crate) fn record_action(&mut self, name: &str) {
        *self.actions.entry(name.to_string()).or_insert(0) += 1;
    }
}
