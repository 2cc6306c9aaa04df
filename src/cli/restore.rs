//! `kprov restore etcd [NAME] --backup ID [--yes]`: bring back a cluster whose control planes
//! are all lost from an etcd backup in the state store (see [`crate::ops::restore::from_backup`]).

use clap::{Args, Subcommand};

use super::{current_cluster, open_store, ApplyArgs, Cli};
use crate::error::ExitError;
use crate::ops;
use crate::repo::Repo;

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// What to restore.
    #[command(subcommand)]
    pub what: RestoreWhat,
}

/// What `restore` brings back.
#[derive(Debug, Subcommand)]
pub enum RestoreWhat {
    /// A cluster whose control planes are all lost, from an etcd backup (`kprov get backups
    /// NAME`): the missing control planes are created, the first restores the backup before
    /// `kubeadm init` with the cluster's PKI, the others join it. The control plane fetches the
    /// backup from an s3:// state store, or (file:// store) from the file repository through
    /// --snapshot-to; refused while a control plane runs.
    Etcd(EtcdRestoreArgs),
}

/// Arguments of `restore etcd`.
#[derive(Debug, Args)]
pub struct EtcdRestoreArgs {
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// The backup to restore (an ID from `kprov get backups NAME`).
    #[arg(long, value_name = "ID")]
    pub backup: String,
    /// Restore. Without it nothing changes: the backup is checked and what would happen shown.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long the API server may take to answer again and the cluster to validate.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub validation_timeout: String,
    /// Where the control plane fetches the etcd snapshot from when the state store is a
    /// `file://` directory it cannot read: an upload target of the cluster's
    /// `spec.assets.fileRepository` (`file:///DIR` the repository serves, `s3://BUCKET[/PREFIX]`
    /// or `https://HOST/PATH` taking PUTs, as for `mirror --files-to`). The copy there is
    /// encrypted with a key only the node's user-data holds, and removed once restored.
    #[arg(long, value_name = "TARGET")]
    pub snapshot_to: Option<String>,
    /// How the control planes are created.
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// Run `restore`.
pub async fn run(cli: &Cli, a: &RestoreArgs) -> anyhow::Result<()> {
    let RestoreWhat::Etcd(a) = &a.what;
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let progress = cli.terminal().progress();
    let mut opts = a.apply.options(&format!("restore etcd {name} --yes"))?;
    opts.snapshot_to = a.snapshot_to.clone();
    opts.live.validation_timeout = crate::spec::quantity::parse_duration(&a.validation_timeout)
        .map_err(|e| {
            ExitError::usage(format!(
                "--validation-timeout {}: {e}",
                a.validation_timeout
            ))
        })?;
    if !a.yes {
        let bytes = ops::backup::read(&repo, &name, &a.backup).await?;
        println!(
            "Would restore cluster {name}'s etcd from backup {} ({} bytes): create its missing control planes, the first restoring the backup before kubeadm init.\n\nMust specify --yes to restore.",
            a.backup,
            bytes.len()
        );
        return Ok(());
    }
    super::check_asset_sha256sums()?;
    a.apply.lock.break_if_asked(&repo, &name, a.yes).await?;
    let command = format!("restore etcd {name} --yes");
    let guard = ops::lock::acquire(&repo, &name, &command, a.apply.lock_ttl(), &progress).await?;
    let result = ops::restore::from_backup(&repo, &name, &a.backup, &opts, &progress).await;
    ops::lock::release(guard, &name, result, &progress).await?;
    println!(
        "Cluster {name}'s etcd is restored from backup {}.",
        a.backup
    );
    Ok(())
}
