//! `kprov update [cluster] [NAME] [--yes]`: print the plan; with --yes, lock and apply it.

use std::time::Duration;

use clap::Args;

use super::{current_cluster, open_store, Cli, ExitError, LockArgs};
use crate::repo::Repo;
use crate::{ops, plan, spec};

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
    /// Cloud calls in flight at once (default: the provider's).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Give up applying after this long (e.g. 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// Lock lease time-to-live in seconds (renewed every third of it while running).
    #[arg(long, default_value_t = 60, hide = true)]
    pub lock_ttl: u64,
    /// Do not check that every mirrored image and file is in place before creating VMs (for
    /// mirrors only the nodes can reach). Without it, a missing asset stops the run (exit 2).
    #[arg(long, env = "KPROV_SKIP_ASSET_CHECK", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_asset_check: bool,
    /// Lock options.
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Run `update`: the plan, and with --yes its application under the cluster's lock.
pub async fn run(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let deadline = spec::quantity::parse_duration(&a.timeout)
        .map_err(|e| ExitError::usage(format!("--timeout: {e}")))?;
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
    a.lock.break_if_asked(&repo, &name, a.yes).await?;
    let command = format!("update cluster {name} --yes");
    let ttl = Duration::from_secs(a.lock_ttl.max(1));
    let guard = ops::lock::acquire(&repo, &name, &command, ttl, &progress).await?;
    let result = async {
        let report = ops::plan(&repo, &name).await?;
        print!("{}", plan::render(&report.plan, terminal.paint()));
        if report.plan.is_empty() {
            return Ok(());
        }
        let opts = ops::ApplyOptions {
            concurrency: a.concurrency,
            deadline,
            command: "update --yes".into(),
            asset_check: (!a.skip_asset_check).then(|| ops::assets::CheckOptions {
                concurrency: 16,
                ..Default::default()
            }),
        };
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
