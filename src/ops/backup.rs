//! etcd backups in the state store, as kops' etcd-manager keeps them: `kprov backup etcd`
//! streams a snapshot of a control plane's etcd through the API server (a port-forward to its
//! etcd pod, `Maintenance.Snapshot`) and stores it as a secret object,
//! `NAME/secrets/etcd-backups/ID.db` (0600 in a `file://` store, SSE on S3, client-side
//! encrypted when the store's encryption is on); the oldest beyond `spec.etcd.backups.keep`
//! are removed. Rolling updates of control planes take one before their first step, and the
//! downtime replacement of the only control plane restores from one ([`super::restore`]).

use std::collections::BTreeSet;

use anyhow::Context as _;
use kprov_state::Condition;
use serde::Serialize;

use crate::repo::Repo;
use crate::report::Progress;

use super::live::{Live, LiveOptions};

fn prefix(cluster: &str) -> String {
    format!("{cluster}/secrets/etcd-backups/")
}

/// The state key of backup `id`.
pub fn backup_key(cluster: &str, id: &str) -> String {
    format!("{}{id}.db", prefix(cluster))
}

/// A backup in the state store.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    /// Its id: when it was taken, UTC (`20261207T173012.345Z`), so ids sort by age.
    pub id: String,
    /// Its state key.
    pub key: String,
    /// Snapshot size in bytes (known when it was just taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The control plane whose etcd it is of (known when it was just taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Cluster `cluster`'s backups, oldest first.
pub async fn list(repo: &Repo, cluster: &str) -> anyhow::Result<Vec<Backup>> {
    let p = prefix(cluster);
    let keys = repo
        .store
        .list(&p)
        .await
        .with_context(|| format!("listing {p}"))?;
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let id = key.strip_prefix(&p)?.strip_suffix(".db")?.to_string();
            Some(Backup {
                id,
                key,
                size: None,
                source: None,
            })
        })
        .collect())
}

/// Read backup `id` (it holds every secret of the cluster: keep it like the CA keys).
pub async fn read(repo: &Repo, cluster: &str, id: &str) -> anyhow::Result<Vec<u8>> {
    let key = backup_key(cluster, id);
    let obj = repo
        .store
        .get(&key)
        .await
        .with_context(|| format!("reading {key}"))?
        .with_context(|| {
            format!("cluster {cluster} has no etcd backup {id}; fix: pick one of `kprov get backups {cluster}`")
        })?;
    Ok(obj.bytes)
}

/// Take a backup of cluster `cluster`'s etcd through its API server, from the first control
/// plane whose etcd answers, store it and prune to `spec.etcd.backups.keep`.
pub async fn take(
    repo: &Repo,
    cluster: &str,
    live: &LiveOptions,
    progress: &Progress,
) -> anyhow::Result<Backup> {
    let stored = repo.require(cluster).await?;
    let cloud = crate::cloud::connect(cluster, &stored.config.cluster.spec).await?;
    let live = Live::connect(repo, cluster, cloud, BTreeSet::new(), live)
        .await
        .map_err(|e| {
            e.context(
                "no backup was taken. fix: make the API server reachable (or pass --kubeconfig)",
            )
        })?;
    Ok(take_with(repo, cluster, &live, None, progress).await?.0)
}

/// As [`take`], through `live`; `node` names the control plane to snapshot (else the first
/// whose etcd answers). Returns the snapshot too.
pub(crate) async fn take_with(
    repo: &Repo,
    cluster: &str,
    live: &Live<'_>,
    node: Option<&str>,
    progress: &Progress,
) -> anyhow::Result<(Backup, Vec<u8>)> {
    let nodes = match node {
        Some(n) => vec![n.to_string()],
        None => live.control_planes().await?,
    };
    let phase = progress.phase(&format!("Backup of cluster {cluster}'s etcd"), 0);
    let mut last = None;
    for n in &nodes {
        match snapshot(live, cluster, n).await {
            Ok(bytes) => {
                let b = store(repo, cluster, &bytes, n).await?;
                phase.finish(format!(
                    "etcd backup {} of {n} stored ({} bytes) as {}",
                    b.id,
                    bytes.len(),
                    b.key
                ));
                let keep = repo
                    .require(cluster)
                    .await?
                    .config
                    .cluster
                    .spec
                    .etcd
                    .backups
                    .keep;
                prune(repo, cluster, keep.max(1) as usize).await?;
                return Ok((b, bytes));
            }
            Err(e) => {
                tracing::warn!("no etcd snapshot from {n}: {e:#}");
                last = Some(e);
            }
        }
    }
    phase.clear();
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("the cloud holds no control plane of cluster {cluster}"))
        .context(format!(
            "no etcd backup of cluster {cluster} was taken. fix: check `kprov validate cluster {cluster}`, then re-run"
        )))
}

/// A snapshot of control plane `node`'s etcd, in memory (through a 0600 temporary file the
/// etcd client writes, removed at once).
async fn snapshot(live: &Live<'_>, cluster: &str, node: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::env::temp_dir().join(format!(
        "kprov-etcd-{cluster}-{}-{:x}.db",
        std::process::id(),
        rand::random::<u64>()
    ));
    let taken = live.snapshot_etcd(node, &file).await;
    let read = taken.and_then(|_| std::fs::read(&file).context("reading the etcd snapshot back"));
    let _ = std::fs::remove_file(&file);
    read
}

/// Store `bytes` (a snapshot of `node`'s etcd) as a new backup.
async fn store(repo: &Repo, cluster: &str, bytes: &[u8], node: &str) -> anyhow::Result<Backup> {
    let id = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let key = backup_key(cluster, &id);
    repo.store
        .put(&key, bytes, Condition::IfAbsent)
        .await
        .with_context(|| format!("storing the etcd backup as {key}"))?;
    Ok(Backup {
        id,
        key,
        size: Some(bytes.len() as u64),
        source: Some(node.to_string()),
    })
}

/// Remove the oldest backups beyond `keep`.
async fn prune(repo: &Repo, cluster: &str, keep: usize) -> anyhow::Result<()> {
    let all = list(repo, cluster).await?;
    let extra = all.len().saturating_sub(keep);
    for b in &all[..extra] {
        repo.store
            .delete(&b.key, Condition::None)
            .await
            .with_context(|| format!("removing the old etcd backup {}", b.key))?;
        tracing::info!(
            "etcd backup {} removed (spec.etcd.backups.keep {keep})",
            b.id
        );
    }
    Ok(())
}
