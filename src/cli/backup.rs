//! `kprov backup etcd [NAME] [--kubeconfig FILE] [-o table|yaml|json]`: a snapshot of the
//! cluster's etcd, through its API server, into the state store (see [`crate::ops::backup`]).

use clap::{Args, Subcommand};

use super::{current_cluster, open_store, ApiArgs, Cli, Output};
use crate::ops;
use crate::repo::Repo;

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to back up.
    #[command(subcommand)]
    pub what: BackupWhat,
}

/// What `backup` takes.
#[derive(Debug, Subcommand)]
pub enum BackupWhat {
    /// A snapshot of the cluster's etcd (through the API server, a port-forward to a control
    /// plane's etcd pod), stored in the state store as a secret; the oldest beyond
    /// spec.etcd.backups.keep (default 10) are removed. `kprov get backups NAME` lists them.
    Etcd(EtcdBackupArgs),
}

/// Arguments of `backup etcd`.
#[derive(Debug, Args)]
pub struct EtcdBackupArgs {
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// Output format of the result.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the API server.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Run `backup`.
pub async fn run(cli: &Cli, a: &BackupArgs) -> anyhow::Result<()> {
    let BackupWhat::Etcd(a) = &a.what;
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let progress = cli.terminal().progress();
    let live = ops::live::LiveOptions {
        api: a.api.access(),
        ..Default::default()
    };
    let b = ops::backup::take(&repo, &name, &live, &progress).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&b)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&b)?),
        Output::Table => println!(
            "etcd backup {} of cluster {name} stored as {} ({} bytes, from {}).",
            b.id,
            b.key,
            b.size.unwrap_or_default(),
            b.source.as_deref().unwrap_or("?")
        ),
    }
    Ok(())
}
