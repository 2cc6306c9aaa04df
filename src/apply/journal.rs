//! The apply journal: which tasks of the current run started, finished or failed, kept in the
//! state store (`NAME/journal/current.json`) so a killed run can be understood and resumed.
//!
//! Correctness does not depend on it — every provider call is idempotent and the plan is
//! recomputed from the cloud on re-run — so writes are coalesced (at most one every 250 ms, plus
//! one at the end) to keep a 1,000-instance apply from writing 2,000 objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kprov_state::{Condition, StateStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// State of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Started, not known to have finished.
    Started,
    /// Finished; a re-run skips nothing because of it (the plan is made from the cloud).
    Done,
    /// Failed (with the error).
    Failed(String),
}

/// The journal document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalDoc {
    /// Random run id.
    pub run: String,
    /// The command that runs (`update --yes`), shown when a later run resumes it.
    pub command: String,
    /// Spec generation being applied.
    pub generation: u64,
    /// Start time.
    pub started: Option<DateTime<Utc>>,
    /// Each task's state, by task key (`network`, `create/NAME`, `delete/ID`).
    pub tasks: BTreeMap<String, TaskState>,
}

struct Inner {
    doc: JournalDoc,
    last_flush: Instant,
    dirty: bool,
}

/// A journal bound to a cluster in a store (or disabled).
#[derive(Clone)]
pub struct Journal {
    store: Option<Arc<dyn StateStore>>,
    key: String,
    inner: Arc<Mutex<Inner>>,
}

/// Key of the current journal of a cluster.
pub fn current_key(cluster: &str) -> String {
    format!("{cluster}/journal/current.json")
}

impl Journal {
    /// A journal that records nothing (tests, dry runs).
    pub fn disabled() -> Self {
        Journal {
            store: None,
            key: String::new(),
            inner: Arc::new(Mutex::new(Inner {
                doc: JournalDoc::default(),
                last_flush: Instant::now(),
                dirty: false,
            })),
        }
    }

    /// Start a journal for a run. Returns it and the unfinished journal of an earlier run, if any.
    pub async fn begin(
        store: Arc<dyn StateStore>,
        cluster: &str,
        command: &str,
        generation: u64,
    ) -> Result<(Journal, Option<JournalDoc>), kprov_state::StateError> {
        let key = current_key(cluster);
        let previous = store
            .get(&key)
            .await?
            .and_then(|o| serde_json::from_slice(&o.bytes).ok());
        let doc = JournalDoc {
            run: format!("{:012x}", rand::random::<u64>() >> 16),
            command: command.into(),
            generation,
            started: Some(Utc::now()),
            tasks: BTreeMap::new(),
        };
        let j = Journal {
            store: Some(store),
            key,
            inner: Arc::new(Mutex::new(Inner {
                doc,
                last_flush: Instant::now() - Duration::from_secs(1),
                dirty: true,
            })),
        };
        j.flush().await;
        Ok((j, previous))
    }

    async fn set(&self, task: &str, state: TaskState) {
        let mut i = self.inner.lock().await;
        i.doc.tasks.insert(task.to_string(), state);
        i.dirty = true;
        if i.last_flush.elapsed() >= Duration::from_millis(250) {
            self.write(&mut i).await;
        }
    }

    /// Record a task start.
    pub async fn started(&self, task: &str) {
        self.set(task, TaskState::Started).await
    }

    /// Record a task end.
    pub async fn done(&self, task: &str) {
        self.set(task, TaskState::Done).await
    }

    /// Record a task failure.
    pub async fn failed(&self, task: &str, error: &str) {
        self.set(task, TaskState::Failed(error.to_string())).await
    }

    /// Write pending changes now.
    pub async fn flush(&self) {
        let mut i = self.inner.lock().await;
        if i.dirty {
            self.write(&mut i).await;
        }
    }

    async fn write(&self, i: &mut Inner) {
        i.last_flush = Instant::now();
        i.dirty = false;
        if let Some(store) = &self.store {
            let bytes = serde_json::to_vec_pretty(&i.doc).expect("journal serialises");
            if let Err(e) = store.put(&self.key, &bytes, Condition::None).await {
                // The journal is advisory; losing an update only loses resume detail.
                tracing::warn!("could not write the apply journal {}: {e}", self.key);
            }
        }
    }

    /// The run finished: keep it as `journal/last.json` and remove `current.json`.
    pub async fn finish(&self) -> Result<(), kprov_state::StateError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let i = self.inner.lock().await;
        let bytes = serde_json::to_vec_pretty(&i.doc).expect("journal serialises");
        let last = self.key.replace("current.json", "last.json");
        store.put(&last, &bytes, Condition::None).await?;
        store.delete(&self.key, Condition::None).await
    }

    /// Snapshot of the document.
    pub async fn doc(&self) -> JournalDoc {
        self.inner.lock().await.doc.clone()
    }
}
