//! The cluster lock: a lease object created with `IfAbsent`, renewed by compare-and-swap while
//! its holder runs, released by a conditional delete.
//!
//! A lease whose expiry has passed belongs to a run that died; the next writer takes it over
//! (by compare-and-swap, so two takers cannot both win) and says so. `force_unlock` breaks a
//! lease that has not expired yet, for the case where the user knows its holder is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{Condition, StateError, StateResult, StateStore, Version};

/// What the lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// `user@host`.
    pub holder: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The command the holder runs (verb and cluster only — never flags that could hold secrets).
    pub command: String,
    /// When the lease was first taken.
    pub started: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires: DateTime<Utc>,
    /// Random id of this holding.
    pub id: String,
}

impl LeaseInfo {
    /// One-line description for "locked by" messages.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let age = (now - self.started).num_seconds().max(0);
        let left = (self.expires - now).num_seconds();
        format!(
            "{} (pid {}, running `{}` for {}s, lease {})",
            self.holder,
            self.pid,
            self.command,
            age,
            if left >= 0 {
                format!("expires in {left}s")
            } else {
                format!("expired {}s ago", -left)
            }
        )
    }
}

/// The lease key of a cluster.
pub fn lease_key(cluster: &str) -> String {
    format!("{cluster}/lock")
}

/// Who is asking for the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The cluster to lock.
    pub cluster: String,
    /// Command description.
    pub command: String,
    /// Lease time-to-live; renewed every third of it.
    pub ttl: Duration,
}

/// A held lease. Renewed in the background until [`LeaseGuard::release`]; if the process dies
/// the lease simply expires.
pub struct LeaseGuard {
    store: Arc<dyn StateStore>,
    key: String,
    version: Arc<Mutex<Version>>,
    lost: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// The lease as written.
    pub info: LeaseInfo,
    /// When the lease was taken over from an expired holder, that holder.
    pub took_over_from: Option<LeaseInfo>,
}

fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

impl Lease {
    /// Take the lease, or fail with [`StateError::Locked`] naming the holder.
    pub async fn acquire(&self, store: Arc<dyn StateStore>) -> StateResult<LeaseGuard> {
        let key = lease_key(&self.cluster);
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(60));
        let info = LeaseInfo {
            holder: whoami(),
            pid: std::process::id(),
            command: self.command.clone(),
            started: now,
            expires: now + ttl,
            id: format!("{:016x}", rand::random::<u64>()),
        };
        let body = serde_json::to_vec_pretty(&info).expect("lease serialises");
        let mut took_over_from = None;
        let version = match store.put(&key, &body, Condition::IfAbsent).await {
            Ok(v) => v,
            Err(StateError::Conflict { .. }) => {
                let current = store.get(&key).await?;
                let Some(current) = current else {
                    // Released between our put and get: try once more.
                    return Box::pin(self.acquire(store)).await;
                };
                let held: Option<LeaseInfo> = serde_json::from_slice(&current.bytes).ok();
                match held {
                    Some(h) if h.expires > now => {
                        return Err(StateError::Locked {
                            cluster: self.cluster.clone(),
                            holder: h.describe(now),
                        })
                    }
                    _ => {
                        let v = store
                            .put(&key, &body, Condition::IfVersion(current.version))
                            .await
                            .map_err(|e| match e {
                                StateError::Conflict { .. } => StateError::Locked {
                                    cluster: self.cluster.clone(),
                                    holder: "another run that just took over the expired lease"
                                        .into(),
                                },
                                e => e,
                            })?;
                        took_over_from = held;
                        v
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let version = Arc::new(Mutex::new(version));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, key, version, lost, mut info) = (
                store.clone(),
                key.clone(),
                version.clone(),
                lost.clone(),
                info.clone(),
            );
            let every = self.ttl / 3;
            Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    info.expires = Utc::now() + ttl;
                    let body = serde_json::to_vec_pretty(&info).expect("lease serialises");
                    let mut v = version.lock().await;
                    match store
                        .put(&key, &body, Condition::IfVersion(v.clone()))
                        .await
                    {
                        Ok(nv) => *v = nv,
                        Err(StateError::Conflict { .. }) => {
                            tracing::error!("lost the cluster lock {key}: another run broke it");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => tracing::warn!("could not renew the cluster lock {key}: {e}"),
                    }
                }
            }))
        };
        Ok(LeaseGuard {
            store,
            key,
            version,
            lost,
            renewer,
            info,
            took_over_from,
        })
    }
}

impl LeaseGuard {
    /// True if someone broke the lease while we held it.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stop renewing and delete the lease (only if it is still ours).
    pub async fn release(mut self) -> StateResult<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let v = self.version.lock().await.clone();
        match self.store.delete(&self.key, Condition::IfVersion(v)).await {
            Ok(()) | Err(StateError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Read the current lease of a cluster, if any.
pub async fn current(store: &dyn StateStore, cluster: &str) -> StateResult<Option<LeaseInfo>> {
    Ok(store
        .get(&lease_key(cluster))
        .await?
        .and_then(|o| serde_json::from_slice(&o.bytes).ok()))
}

/// Break a cluster's lease unconditionally.
pub async fn force_unlock(store: &dyn StateStore, cluster: &str) -> StateResult<()> {
    store.delete(&lease_key(cluster), Condition::None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileStore;

    fn lease(ttl_ms: u64) -> Lease {
        Lease {
            cluster: "c".into(),
            command: "update cluster c --yes".into(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    #[tokio::test]
    async fn second_holder_is_refused_then_takes_over_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        let g = lease(60_000).acquire(store.clone()).await.unwrap();
        match lease(60_000).acquire(store.clone()).await {
            Err(StateError::Locked { holder, .. }) => assert!(holder.contains("update cluster c")),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        g.release().await.unwrap();
        let g2 = lease(60_000).acquire(store.clone()).await.unwrap();
        drop(g2); // a crash: the lease stays until it expires
        assert!(lease(60_000).acquire(store.clone()).await.is_err());
        force_unlock(store.as_ref(), "c").await.unwrap();
        let short = lease(30).acquire(store.clone()).await.unwrap();
        drop(short);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let g3 = lease(60_000).acquire(store.clone()).await.unwrap();
        assert!(
            g3.took_over_from.is_some(),
            "an expired lease is taken over"
        );
        g3.release().await.unwrap();
        assert!(current(store.as_ref(), "c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn renewal_keeps_a_short_lease_alive() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        let g = lease(150).acquire(store.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            lease(150).acquire(store.clone()).await.is_err(),
            "renewed lease must still hold"
        );
        assert!(!g.is_lost());
        g.release().await.unwrap();
    }

    #[tokio::test]
    async fn racing_file_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(dir.path()));
        crate::suite::racing_creates(store, 16).await;
    }
}
