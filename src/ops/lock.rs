//! The cluster lock of mutating runs (`update --yes`, `delete --yes`): taking it, breaking a
//! dead run's lock on request, and releasing it without hiding the run's own error.

use std::time::Duration;

use kprov_state::{lease, Lease, LeaseGuard};

use crate::repo::Repo;
use crate::report::Progress;

/// Who holds the lock of `cluster` right now ("update cluster c1 --yes by host pid 42, 10 s
/// ago"), for the question before breaking it; `None` when nobody does.
pub async fn holder(repo: &Repo, cluster: &str) -> anyhow::Result<Option<String>> {
    Ok(lease::current(repo.store.as_ref(), cluster)
        .await?
        .map(|held| held.describe(chrono::Utc::now())))
}

/// Break the lock of `cluster` (the user confirmed that the run holding it is dead).
pub async fn break_lock(repo: &Repo, cluster: &str) -> anyhow::Result<()> {
    lease::force_unlock(repo.store.as_ref(), cluster).await?;
    Ok(())
}

/// Take the lock of `cluster` for `command`, renewed every third of `ttl` while held. A live
/// lock of another run is an error saying what to do; an expired one is taken over (noted).
pub async fn acquire(
    repo: &Repo,
    cluster: &str,
    command: &str,
    ttl: Duration,
    progress: &Progress,
) -> anyhow::Result<LeaseGuard> {
    let guard = Lease {
        cluster: cluster.into(),
        command: command.into(),
        ttl,
    }
    .acquire(repo.store.clone())
    .await
    .map_err(|e| match e {
        kprov_state::StateError::Locked { .. } => anyhow::Error::new(e).context(format!(
            "another kprov run is changing cluster {cluster}; wait for it, or if it died run again with --force-unlock"
        )),
        e => e.into(),
    })?;
    if let Some(prev) = &guard.took_over_from {
        progress.note(&format!(
            "Note: took over the expired lock of {} (that run died or was killed).",
            prev.describe(chrono::Utc::now())
        ));
    }
    Ok(guard)
}

/// Release the lock after a run that ended with `result`. A failure to release is reported as
/// the error only when the run itself succeeded: otherwise the run's own error says more.
pub async fn release<T>(
    guard: LeaseGuard,
    cluster: &str,
    result: anyhow::Result<T>,
    progress: &Progress,
) -> anyhow::Result<T> {
    if guard.is_lost() {
        progress.note(&format!(
            "Warning: the lock of cluster {cluster} was broken by another run while this one worked."
        ));
    }
    if let Err(e) = guard.release().await {
        if result.is_err() {
            progress.note(&format!(
                "Warning: could not release the lock of cluster {cluster}: {e}"
            ));
        } else {
            return Err(e.into());
        }
    }
    result
}
