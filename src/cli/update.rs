//! `kprov update [cluster] [NAME] [--yes]`: print the plan; with --yes, lock and apply it.

use clap::Args;

use super::{current_cluster, open_store, ApplyArgs, Cli};
use crate::repo::Repo;
use crate::{ops, plan};

/// Arguments of `update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// `cluster` (optional, kops-style).
    #[arg(value_parser = ["cluster"], hide_possible_values = true)]
    pub resource: Option<String>,
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// Apply the plan. Without it nothing changes anywhere.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How the plan is applied.
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// Run `update`: the plan, and with --yes its application under the cluster's lock.
pub async fn run(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let opts = a.apply.options("update --yes")?;
    let terminal = cli.terminal();
    let progress = terminal.progress();
    if !a.yes {
        let report = ops::plan(&repo, &name).await?;
        print!("{}", plan::render(&report.plan, terminal.paint()));
        if !report.plan.is_empty() {
            println!("\nMust specify --yes to apply changes");
        }
        return Ok(());
    }
    // Before the lock and the cloud: a bad checksum file would only fail on the nodes.
    super::check_asset_sha256sums()?;
    a.apply.lock.break_if_asked(&repo, &name, a.yes).await?;
    let command = format!("update cluster {name} --yes");
    let guard = ops::lock::acquire(&repo, &name, &command, a.apply.lock_ttl(), &progress).await?;
    let result = async {
        let report = ops::plan(&repo, &name).await?;
        print!("{}", plan::render(&report.plan, terminal.paint()));
        if report.plan.is_empty() {
            return Ok(());
        }
        let outcome = ops::apply(&repo, report, &opts, &progress).await?;
        println!(
            "\nCluster {name} is up to date: {} created, {} deleted{}.",
            outcome.created.len(),
            outcome.deleted,
            if outcome.retries > 0 {
                format!(", {} calls retried", outcome.retries)
            } else {
                String::new()
            }
        );
        Ok(())
    }
    .await;
    ops::lock::release(guard, &name, result, &progress).await
}
