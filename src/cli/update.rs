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
    /// After applying, validate the cluster until it is valid, for at most DURATION (default
    /// 10m); exit 1 if it is not (`kprov validate cluster --wait`).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m", require_equals = true)]
    pub wait_ready: Option<String>,
    /// How the plan is applied.
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// Run `update`: the plan, and with --yes its application under the cluster's lock.
pub async fn run(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let opts = a.apply.options("update --yes")?;
    let wait_ready = a
        .wait_ready
        .as_deref()
        .map(|w| {
            crate::spec::quantity::parse_duration(w)
                .map_err(|e| crate::error::ExitError::usage(format!("--wait-ready={w}: {e}")))
        })
        .transpose()?;
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
    ops::lock::release(guard, &name, result, &progress).await?;
    // after the lock: validating takes minutes and changes nothing
    if let Some(wait) = wait_ready {
        let v = ops::validate::validate(
            &repo,
            &name,
            &a.apply.drain.api.access(),
            wait,
            ops::validate::VALIDATE_POLL,
            &progress,
        )
        .await?;
        super::validate::print_table(&name, &v);
        if !v.is_valid() {
            return Err(crate::error::ExitError {
                code: 1,
                message: format!(
                    "cluster {name} was updated but is not valid after {}: {} error(s) above; fix: look at them, then `kprov validate cluster {name} --wait 10m`",
                    a.wait_ready.as_deref().unwrap_or("10m"),
                    v.failures.len()
                ),
            }
            .into());
        }
    }
    Ok(())
}
