//! Async API jobs as `api-jobs/{id}` reports them: running, succeeded or failed.

use super::CloudState;
use crate::error::ErrorCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a job ended (or that it has not).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub(crate) enum JobOutcome {
    Running,
    Succeeded { result: Value },
    Failed { error: ErrorCode },
}

/// An async API job (`api-jobs/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Job {
    pub id: String,
    pub api: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: JobOutcome,
}

impl CloudState {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// Drops completed jobs older than the retention (`rest/completedApi.expiredPeriod`).
    pub fn purge_jobs(&mut self, retention: std::time::Duration) {
        let now = Utc::now();
        let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.jobs.retain(|j| {
            j.finished_at
                .is_none_or(|f| now.signed_duration_since(f) <= keep)
        });
    }

    pub fn finish_job(&mut self, id: &str, outcome: Result<Value, ErrorCode>) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == id) {
            j.outcome = match outcome {
                Ok(result) => JobOutcome::Succeeded { result },
                Err(error) => JobOutcome::Failed { error },
            };
            j.finished_at = Some(Utc::now());
        }
    }
}
