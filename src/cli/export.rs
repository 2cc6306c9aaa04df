//! `kprov export kubeconfig [NAME] [--admin DURATION] [--kubeconfig PATH]`: write a kubeconfig
//! with a short-lived admin client certificate signed by the cluster CA, merged into an existing
//! kubeconfig file without touching anybody else's clusters, users or contexts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{current_cluster, open_store, Cli, ExitError};
use crate::kubeconfig;
use crate::repo::Repo;

pub use crate::ops::access::{ADMIN_CN, ADMIN_GROUP};

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to export.
    #[command(subcommand)]
    pub what: ExportWhat,
}

/// Things `export` writes.
#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// Add the cluster to a kubeconfig file (cluster, admin user and context named after the
    /// cluster) and make it the current context. Other entries are kept as they are.
    Kubeconfig(KubeconfigArgs),
}

/// Flags of `export kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// Lifetime of the admin client certificate, e.g. 1h, 18h, 7d. Keep it short: a client
    /// certificate cannot be revoked before it expires.
    #[arg(long, value_name = "DURATION", default_value = "18h")]
    pub admin: String,
    /// The kubeconfig file to merge into (default: the first file of $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Run `export`.
pub async fn run(cli: &Cli, a: &ExportArgs) -> anyhow::Result<()> {
    match &a.what {
        ExportWhat::Kubeconfig(k) => export_kubeconfig(cli, k).await,
    }
}

async fn export_kubeconfig(cli: &Cli, a: &KubeconfigArgs) -> anyhow::Result<()> {
    let validity = crate::spec::quantity::parse_duration(&a.admin)
        .map_err(|e| ExitError::usage(format!("--admin: {e}")))?;
    if validity < Duration::from_secs(60) {
        return Err(ExitError::usage(format!(
            "--admin {}: give at least 1m",
            a.admin
        )));
    }
    let path = match &a.kubeconfig {
        Some(p) => p.clone(),
        None => kubeconfig::default_path()?,
    };
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let access = crate::ops::access::admin(&repo, &name, validity).await?;
    let (server, expires) = (access.server.clone(), access.expires);
    let written = kubeconfig::write(&path, &access.entries(&name))?;
    eprintln!(
        "Wrote cluster {name} ({server}) to {}: context {name}, user {name}-admin (certificate valid until {}); \
         current context is now {name}.",
        written.display(),
        expires.format("%Y-%m-%d %H:%M UTC")
    );
    Ok(())
}
