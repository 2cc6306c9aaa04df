//! `rolling-update --allow-control-plane-downtime`: replacing a cluster's only control plane,
//! where no etcd quorum survives a swap, by snapshot and restore (kops' etcd-manager keeps its
//! backups in the state store the same way).
//!
//! 1. The old control plane is cordoned and drained; a snapshot of its etcd is streamed through
//!    a port-forward (`Maintenance.Snapshot`) and stored as an etcd backup
//!    ([`super::backup`]: a secret object, kept). A copy encrypted with a key made for this restore goes to
//!    `NAME/restore/etcd-snapshot.enc`, and the marker `NAME/secrets/etcd-restore.yaml` records
//!    the key, the copy's SHA-256 and the instances — from now on a restore is *pending*.
//! 2. The old instance is deleted, then the replacement created: while a restore is pending,
//!    every first control plane kprov renders (rolling-update or `update`) fetches the copy from
//!    a presigned URL of the state store, checks and decrypts it and restores it with `etcdutl`
//!    before `kubeadm init` ([`crate::bootstrap::EtcdRestore`]).
//! 3. Once the API answers again: the old Node (back from the snapshot) is deleted, the
//!    replacement's Node is Ready, the cluster validates; then the marker and the copy go.
//!
//! Killed anywhere, the same command continues: while the old instance still answers, a fresh
//! snapshot is taken (nothing written since the last one is lost); once it is going or gone,
//! the recorded snapshot is the one restored.

mod detour; // the copy's way through the file repository for file:// stores

use std::time::Duration;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use kprov_state::Condition;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bootstrap::{EtcdRestore, SnapshotKey};
use crate::error::ExitError;
use kprov_providers::{Cloud, Role};

use crate::plan::{Change, NeedsUpdate};
use crate::repo::Repo;
use crate::report::Progress;

use super::live::{Live, LiveOptions};
use super::plan::PlanReport;
use super::rolling::{run, RollOptions, RollOutcome};
use crate::mirror::files::FileTarget;

/// How long the presigned URL of the copy stays valid: the replacement fetches it at boot,
/// but a replacement the cloud is slow to start (or a re-run hours later) re-renders it.
const URL_TTL: Duration = Duration::from_secs(24 * 3600);

fn marker_key(cluster: &str) -> String {
    format!("{cluster}/secrets/etcd-restore.yaml")
}

/// The encrypted copy the replacement fetches.
pub fn copy_key(cluster: &str) -> String {
    format!("{cluster}/restore/etcd-snapshot.enc")
}

/// A restore under way: what the marker records.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The control plane whose etcd the snapshot is of.
    pub old_id: String,
    /// Its name (its Node comes back with the snapshot and is deleted after the restore).
    pub old_name: String,
    /// SHA-256 of the encrypted copy (hex).
    pub sha256: String,
    /// ChaCha20 key of the copy (hex).
    key: String,
    /// Its nonce (hex).
    nonce: String,
    /// Snapshot size in bytes.
    pub size: u64,
    /// The backup it is (`NAME/secrets/etcd-backups/ID.db`; its id says when it was taken).
    pub backup: String,
    /// Where the node fetches the copy when the store cannot hand out a URL: its place in the
    /// cluster's file repository (`--snapshot-to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The `--snapshot-to` target the copy was uploaded to (removed from there at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_to: Option<String>,
}

impl Pending {
    fn snapshot_key(&self) -> anyhow::Result<SnapshotKey> {
        let mut k = SnapshotKey {
            key: [0; 32],
            nonce: [0; 12],
        };
        hex::decode_to_slice(&self.key, &mut k.key).context("etcd-restore.yaml: key")?;
        hex::decode_to_slice(&self.nonce, &mut k.nonce).context("etcd-restore.yaml: nonce")?;
        Ok(k)
    }
}

/// The pending restore of cluster `cluster`, if any.
pub(crate) async fn pending(repo: &Repo, cluster: &str) -> anyhow::Result<Option<Pending>> {
    let key = marker_key(cluster);
    let Some(obj) = repo
        .store
        .get(&key)
        .await
        .with_context(|| format!("reading {key}"))?
    else {
        return Ok(None);
    };
    let p = serde_yaml::from_slice(&obj.bytes).with_context(|| {
        format!("{key} is not a restore record kprov wrote; fix: restore it from a backup of the state store")
    })?;
    Ok(Some(p))
}

/// Refuse (exit 2, nothing changed) a store the replacement cannot fetch the copy from, unless
/// `snapshot_to` puts it into the cluster's file repository (or an earlier run did).
pub(crate) async fn check_store(
    repo: &Repo,
    cluster: &str,
    snapshot_to: Option<&str>,
) -> anyhow::Result<()> {
    let url = repo
        .store
        .share_url(&copy_key(cluster), URL_TTL)
        .await
        .context(
            "asking the state store for a URL the replacement can fetch the etcd snapshot from",
        )?;
    if url.is_some()
        || pending(repo, cluster)
            .await?
            .is_some_and(|p| p.url.is_some())
    {
        return Ok(());
    }
    let Some(to) = snapshot_to else {
        return Err(ExitError::usage(format!(
            "the replacement of cluster {cluster}'s control plane fetches the etcd snapshot from the state store, and {} cannot give it a URL (only this machine reads it); nothing was replaced. \
             fix: pass --snapshot-to with an upload target of the cluster's file repository (spec.assets.fileRepository), move the cluster to an s3:// state store the control plane can reach (`kprov state copy`), or run 3 control planes and roll them without downtime",
            repo.store.url()
        )));
    };
    FileTarget::parse(to).map_err(|e| ExitError::usage(e.to_string()))?;
    let stored = repo.require(cluster).await?;
    if stored.config.cluster.spec.assets.file_repository.is_none() {
        return Err(ExitError::usage(format!(
            "--snapshot-to {to}: the etcd snapshot goes into cluster {cluster}'s file repository, but its spec.assets.fileRepository is not set, so the control plane would not know where to fetch it; nothing was replaced. \
             fix: set spec.assets.fileRepository to the URL the nodes reach {to} at (`kprov edit cluster {cluster}`)"
        )));
    }
    Ok(())
}

/// What the first control plane's user-data needs for the pending restore, if any: a fresh
/// presigned URL of the copy, its SHA-256 and key.
pub(crate) async fn node_restore(
    repo: &Repo,
    cluster: &str,
) -> anyhow::Result<Option<EtcdRestore>> {
    let Some(p) = pending(repo, cluster).await? else {
        return Ok(None);
    };
    let shared = match &p.url {
        Some(u) => Some(u.clone()),
        None => repo.store.share_url(&copy_key(cluster), URL_TTL).await?,
    };
    let url = shared
        .with_context(|| {
            format!(
                "a restore of cluster {cluster}'s etcd is pending, but the state store {} cannot give the replacement a URL for the snapshot; fix: use the s3:// store the restore was started from, or re-run with --snapshot-to (an upload target of spec.assets.fileRepository)",
                repo.store.url()
            )
        })?;
    Ok(Some(EtcdRestore {
        url,
        sha256: p.sha256.clone(),
        key: p.snapshot_key()?,
    }))
}

/// Take the snapshot of control plane `old_name` (id `old_id`) through `live`, store it and
/// its encrypted copy, and record the restore as pending.
pub(crate) async fn take(
    repo: &Repo,
    cluster: &str,
    live: &Live<'_>,
    (old_id, old_name): (&str, &str),
    snapshot_to: Option<&str>,
    progress: &Progress,
) -> anyhow::Result<Pending> {
    let (backup, bytes) =
        super::backup::take_with(repo, cluster, live, Some(old_name), progress).await?;
    record(
        repo,
        cluster,
        &backup.id,
        bytes,
        (old_id, old_name),
        snapshot_to,
    )
    .await
}

/// Record a pending restore of backup `backup` (its snapshot `bytes`; for the old control
/// plane `old`, or `("", "")` when none is left): its encrypted copy for the replacement, then
/// the record.
async fn record(
    repo: &Repo,
    cluster: &str,
    backup: &str,
    mut bytes: Vec<u8>,
    (old_id, old_name): (&str, &str),
    snapshot_to: Option<&str>,
) -> anyhow::Result<Pending> {
    let size = bytes.len() as u64;
    let key = SnapshotKey::generate();
    key.apply(&mut bytes);
    let copy = copy_key(cluster);
    repo.store
        .put(&copy, &bytes, Condition::None)
        .await
        .with_context(|| {
            format!("storing the replacement's copy of the etcd snapshot as {copy}")
        })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    // a store that cannot hand the node a URL: the copy goes to the file repository too
    let shareable = repo.store.share_url(&copy, URL_TTL).await?.is_some();
    let url = match snapshot_to.filter(|_| !shareable) {
        Some(to) => Some(detour::upload(repo, cluster, to, &sha256, &bytes).await?),
        None => None,
    };
    let p = Pending {
        old_id: old_id.to_string(),
        old_name: old_name.to_string(),
        sha256,
        url,
        snapshot_to: snapshot_to.filter(|_| !shareable).map(str::to_string),
        key: hex::encode(key.key),
        nonce: hex::encode(key.nonce),
        size,
        backup: backup.to_string(),
    };
    // a fresh snapshot replaces an earlier run's: its copy in the file repository goes
    if let Some(prev) = pending(repo, cluster).await? {
        if let Some(to) = prev
            .snapshot_to
            .as_deref()
            .filter(|_| prev.sha256 != p.sha256)
        {
            detour::remove(repo, cluster, to, &prev.sha256).await;
        }
    }
    let marker = marker_key(cluster);
    repo.store
        .put(
            &marker,
            serde_yaml::to_string(&p)?.as_bytes(),
            Condition::None,
        )
        .await
        .with_context(|| format!("recording the pending restore as {marker}"))?;
    Ok(p)
}

/// The restore is done: the marker and the copy go (the snapshot stays, the last backup).
pub(crate) async fn finish(repo: &Repo, cluster: &str) -> anyhow::Result<()> {
    if let Some(p) = pending(repo, cluster).await? {
        if let Some(to) = &p.snapshot_to {
            detour::remove(repo, cluster, to, &p.sha256).await;
        }
    }
    for key in [marker_key(cluster), copy_key(cluster)] {
        repo.store
            .delete(&key, Condition::None)
            .await
            .with_context(|| format!("removing {key}"))?;
    }
    Ok(())
}

/// Replace the cluster's only control plane: `update` is its NeedsUpdate while the old
/// instance exists, `pending` the restore an earlier run recorded (see the module's steps).
pub(super) async fn replace(
    repo: &Repo,
    report: &mut PlanReport,
    opts: &RollOptions,
    update: Option<NeedsUpdate>,
    pending: Option<Pending>,
    progress: &Progress,
    outcome: &mut RollOutcome,
) -> anyhow::Result<()> {
    let cluster = report.cluster.clone();
    let (p, request) = match update {
        Some(u) => {
            let p = snapshot_and_delete(repo, report, opts, &u, pending, progress, outcome).await?;
            (p, Some(u.replacement()))
        }
        None => {
            let p = pending.context("internal: neither an update nor a pending restore")?;
            // the old control plane is gone: the plan creates its slot again
            let req = report.plan.changes.iter().find_map(|c| match c {
                Change::Create(r) if r.role == Role::ControlPlane => Some(r.clone()),
                _ => None,
            });
            (p, req)
        }
    };
    // with the old one gone, a control plane that exists is the replacement an earlier run made
    let observed = report.cloud.list_instances(&cluster).await?;
    let existing = observed
        .iter()
        .find(|i| i.is_control_plane() && i.id != p.old_id)
        .map(|i| i.name.clone());
    let replacement = match (existing, request) {
        (Some(name), _) => {
            outcome.resumed += 1;
            name
        }
        (None, Some(req)) => {
            // the renderer again: it gives the replacement the snapshot just recorded
            report
                .prepare_creates(repo, std::slice::from_ref(&req))
                .await?;
            let name = req.name.clone();
            run(repo, report, opts, vec![Change::Create(req)], progress, outcome).await?;
            name
        }
        (None, None) => anyhow::bail!(
            "a restore of cluster {cluster}'s etcd is pending but the spec asks for no control plane to restore it on; nothing was created. \
             fix: put the control-plane group back (count 1), then re-run with --allow-control-plane-downtime"
        ),
    };
    let leaving = [p.old_name.clone()].into_iter().collect();
    let rerun = "with --allow-control-plane-downtime";
    let live = connect_waiting(
        repo,
        &cluster,
        report.cloud.clone(),
        leaving,
        &opts.apply.live,
        rerun,
        progress,
    )
    .await?;
    // the old control plane's Node is back with the snapshot
    if !p.old_name.is_empty() {
        live.delete_node(&p.old_name).await?;
    }
    live.wait_ready(std::slice::from_ref(&replacement), progress)
        .await?;
    live.validate(&format!("after restoring etcd on {replacement}"), progress)
        .await?;
    finish(repo, &cluster).await?;
    progress.note(&format!(
        "control plane {} replaced by {replacement} from etcd backup {}",
        p.old_name, p.backup
    ));
    Ok(())
}

/// While the old control plane exists: drain it and take a fresh snapshot through its API
/// (or, when it no longer answers, keep the snapshot an earlier run recorded for it), then
/// delete it.
async fn snapshot_and_delete(
    repo: &Repo,
    report: &PlanReport,
    opts: &RollOptions,
    u: &NeedsUpdate,
    pending: Option<Pending>,
    progress: &Progress,
    outcome: &mut RollOutcome,
) -> anyhow::Result<Pending> {
    let cluster = report.cluster.as_str();
    let old = &u.old;
    if let Some(r) = &u.replaced_by {
        anyhow::bail!(
            "cluster {cluster}'s only control plane {} and a replacement {} both exist; nothing was replaced. \
             fix: delete the one whose etcd you do not want with your cloud's console, then re-run",
            old.name,
            r.name
        );
    }
    let leaving = [old.name.clone()].into_iter().collect();
    let connected = Live::connect(
        repo,
        cluster,
        report.cloud.clone(),
        leaving,
        &opts.apply.live,
    )
    .await;
    let p = match (connected, pending) {
        (Ok(live), _) => {
            live.validate("before the rolling update", progress).await?;
            live.cordon_and_drain(&old.name, progress).await?;
            take(
                repo,
                cluster,
                &live,
                (&old.id, &old.name),
                opts.apply.snapshot_to.as_deref(),
                progress,
            )
            .await?
        }
        (Err(e), Some(p)) if p.old_id == old.id => {
            tracing::warn!("{e:#}");
            progress.note(&format!(
                "control plane {}'s API server does not answer: restoring etcd backup {} an earlier run took",
                old.name, p.backup
            ));
            p
        }
        (Err(e), _) => {
            return Err(e.context(
                "nothing was replaced: the snapshot of the only control plane's etcd is taken through its API server. \
                 fix: make the API server reachable (or pass --kubeconfig), then re-run",
            ))
        }
    };
    let delete = Change::Delete {
        old: old.clone(),
        reason: "replaced from an etcd snapshot (--allow-control-plane-downtime)".into(),
    };
    run(repo, report, opts, vec![delete], progress, outcome).await?;
    Ok(p)
}

/// Connect once the API server answers again (the control plane is down until the first
/// control plane has restored etcd and run `kubeadm init`), for up to the validation timeout;
/// `rerun` is the command that continues the pending restore.
async fn connect_waiting<'a>(
    repo: &'a Repo,
    cluster: &str,
    cloud: Arc<dyn Cloud>,
    leaving: BTreeSet<String>,
    live: &'a LiveOptions,
    rerun: &str,
    progress: &Progress,
) -> anyhow::Result<Live<'a>> {
    let phase = progress.phase("Waiting for the API server to answer again", 0);
    let deadline = tokio::time::Instant::now() + live.validation_timeout;
    loop {
        match Live::connect(repo, cluster, cloud.clone(), leaving.clone(), live).await {
            Ok(l) => {
                phase.finish("the API server answers".to_string());
                return Ok(l);
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("API server not answering yet: {e:#}");
                tokio::time::sleep(live.poll).await;
            }
            Err(e) => {
                phase.clear();
                return Err(e.context(format!(
                    "cluster {cluster}'s API server did not answer within {:?}; the restore stays pending. \
                     fix: check the first control plane's /var/log/kprov-bootstrap.log, then re-run {rerun}",
                    live.validation_timeout
                )));
            }
        }
    }
}

/// `kprov restore etcd NAME --backup ID`: bring back a cluster whose control planes are all
/// lost. Refused (exit 2, nothing changed) while a control plane runs (two etcd histories would
/// fork). Otherwise the restore of backup `backup` is recorded as pending, the plan applied
/// (the missing control planes are created; the first restores the backup before `kubeadm
/// init`, the others join it), and once the API server answers the Nodes of lost machines
/// (back with the snapshot) are deleted, the control planes awaited and the cluster validated.
/// A run killed half-way is continued by the same command (the record stays until the end).
pub async fn from_backup(
    repo: &Repo,
    cluster: &str,
    backup: &str,
    opts: &super::ApplyOptions,
    progress: &Progress,
) -> anyhow::Result<()> {
    check_store(repo, cluster, opts.snapshot_to.as_deref()).await?;
    let report = super::plan::plan(repo, cluster).await?;
    let running: Vec<String> = report
        .cloud
        .list_instances(cluster)
        .await?
        .into_iter()
        .filter(|i| i.is_control_plane())
        .map(|i| i.name)
        .collect();
    match pending(repo, cluster).await? {
        Some(p) if p.backup != backup => {
            return Err(ExitError::usage(format!(
                "a restore of cluster {cluster}'s etcd from backup {} is under way; nothing was changed. \
                 fix: re-run with --backup {} to finish it",
                p.backup, p.backup
            )))
        }
        Some(_) => {}
        None if !running.is_empty() => {
            return Err(ExitError::usage(format!(
                "cluster {cluster} has running control plane(s) {}: restoring etcd next to them would fork its history; nothing was changed. \
                 fix: restore only a cluster whose control planes are all lost, or replace the only control plane with \
                 `kprov rolling-update cluster {cluster} --yes --allow-control-plane-downtime`",
                running.join(", ")
            )))
        }
        None => {
            let bytes = super::backup::read(repo, cluster, backup).await?;
            record(
                repo,
                cluster,
                backup,
                bytes,
                ("", ""),
                opts.snapshot_to.as_deref(),
            )
            .await?;
        }
    }
    // planned again: the renderer now gives the first control plane the restore
    let report = super::plan::plan(repo, cluster).await?;
    let mut apply_opts = opts.clone();
    apply_opts.cloud_only = true;
    super::converge::apply(repo, report, &apply_opts, progress).await?;
    let stored = repo.require(cluster).await?;
    let cloud = crate::cloud::connect(cluster, &stored.config.cluster.spec).await?;
    let rerun = format!("the same `kprov restore etcd {cluster} --backup {backup} --yes`");
    let live = connect_waiting(
        repo,
        cluster,
        cloud,
        BTreeSet::new(),
        &opts.live,
        &rerun,
        progress,
    )
    .await?;
    live.delete_lost_nodes().await?;
    let cps = live.control_planes().await?;
    live.wait_ready(&cps, progress).await?;
    live.validate(&format!("after restoring etcd backup {backup}"), progress)
        .await?;
    finish(repo, cluster).await?;
    progress.note(&format!(
        "cluster {cluster}'s etcd restored from backup {backup} on {}",
        cps.join(", ")
    ));
    Ok(())
}
