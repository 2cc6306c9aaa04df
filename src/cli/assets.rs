//! `kprov get assets NAME` (the catalogue) and `kprov check assets NAME` (is every asset at its
//! mirror location, before a create can fail half-way?).

use clap::{Args, Subcommand};

use super::{current_cluster, open_store, Cli, ExitError, Output};
use crate::mirror::Catalogue;
use crate::ops::assets::{AssetCheck, CheckOptions};
use crate::repo::Repo;

/// Arguments of `get assets`.
#[derive(Debug, Args)]
pub struct GetAssetsArgs {
    /// Cluster (default: the current cluster).
    pub cluster: Option<String>,
}

/// Run `get assets`.
pub async fn run_get(
    cli: &Cli,
    a: &GetAssetsArgs,
    output: Output,
    repo: &Repo,
) -> anyhow::Result<()> {
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), repo).await?;
    let s = repo.require(&name).await?;
    let cat = Catalogue::for_cluster_as_rendered(&s.config)
        .map_err(|e| ExitError::usage(e.to_string()))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&cat)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&cat)?),
        Output::Table => print!(
            "{}",
            super::output::table(&Catalogue::TABLE_HEADER, &cat.table_rows())
        ),
    }
    Ok(())
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check.
    #[command(subcommand)]
    pub what: CheckWhat,
}

/// Things `check` checks.
#[derive(Debug, Subcommand)]
pub enum CheckWhat {
    /// Every image and file of the catalogue is reachable at its mirror location.
    Assets(CheckAssetsArgs),
}

/// Arguments of `check assets`.
#[derive(Debug, Args)]
pub struct CheckAssetsArgs {
    /// Cluster (default: the current cluster).
    pub cluster: Option<String>,
    /// Registry host reached over plain HTTP (repeatable; `assets.insecure` implies the cluster's mirrors).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Extra PEM CA bundle to trust (the cluster's `assets.caBundle` is always trusted).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Vec<std::path::PathBuf>,
    /// Checks in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Run `check`.
pub async fn run_check(cli: &Cli, a: &CheckArgs) -> anyhow::Result<()> {
    let CheckWhat::Assets(a) = &a.what;
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let s = repo.require(&name).await?;
    let opts = CheckOptions {
        insecure_registries: a.insecure_registry.clone(),
        ca_bundles: a.ca_bundle.clone(),
        concurrency: a.concurrency,
        mirrored_only: false,
    };
    let checked = crate::ops::assets::check(&s.config, &opts, &cli.terminal().progress()).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&checked)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&checked)?),
        Output::Table => print!("{}", check_table(&checked)),
    }
    if let Some(why) = checked.failure(&name) {
        anyhow::bail!(why);
    }
    eprintln!(
        "all {} assets of cluster {name} are reachable at their mirror locations",
        checked.rows.len()
    );
    Ok(())
}

/// The check as a KIND / MIRROR / STATUS table.
pub fn check_table(checked: &AssetCheck) -> String {
    let t: Vec<Vec<String>> = checked
        .rows
        .iter()
        .map(|r| vec![r.kind.to_string(), r.location.clone(), r.status.clone()])
        .collect();
    super::output::table(&["KIND", "MIRROR", "STATUS"], &t)
}
