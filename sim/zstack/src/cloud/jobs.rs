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
    /// Polls answer 202.
    Running,
    /// Polls answer 200 with `result`.
    Succeeded {
        /// The API's reply body, e.g. `{"inventory": ...}`.
        result: Value,
    },
    /// Polls answer 503 with `error`'s envelope.
    Failed {
        /// The error the API failed with.
        error: ErrorCode,
    },
}

/// An async API job (`api-jobs/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Job {
    /// The job uuid: the client's `X-Job-UUID`, or a fresh one.
    pub id: String,
    /// The API it runs, e.g. `CreateVmInstance` (shown in the state dump).
    pub api: String,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it finished; the retention counts from here.
    pub finished_at: Option<DateTime<Utc>>,
    /// What polls report.
    pub outcome: JobOutcome,
}

impl CloudState {
    /// A job by id (finished ones too, until purged).
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

    /// Records a job's result or error; polls answer it from now on.
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
