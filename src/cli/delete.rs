//! `kprov delete [cluster] [NAME] [--yes]`: list, then delete, everything the cluster owns;
//! `kprov delete instancegroup|ig GROUP [--yes]`: one group and its instances.

use std::time::Duration;

use clap::Args;

use super::{current_cluster, open_store, Cli, DrainArgs, ExitError, LockArgs};
use crate::repo::Repo;
use crate::{ops, spec};

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `cluster` (optional, kops-style), or `instancegroup` / `ig`.
    #[arg(value_parser = ["cluster", "instancegroup", "ig"], hide_possible_values = true)]
    pub resource: Option<String>,
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store); after
    /// `instancegroup`, the group (its cluster from --name).
    pub cluster: Option<String>,
    /// Really delete. Without it, list what would be deleted.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep deleting in passes until nothing is left or this much time has passed.
    #[arg(long, default_value = "10m")]
    pub wait: String,
    /// Lock lease time-to-live in seconds.
    #[arg(long, default_value_t = 60, hide = true)]
    pub lock_ttl: u64,
    /// Lock options.
    #[command(flatten)]
    pub lock: LockArgs,
    /// How `delete instancegroup` takes the group's nodes out of the running cluster.
    #[command(flatten, next_help_heading = "Draining (delete instancegroup)")]
    pub drain: DrainArgs,
}

/// Run `delete`: without --yes, list what would go; with it, delete under the cluster's lock.
pub async fn run(cli: &Cli, a: &DeleteArgs) -> anyhow::Result<()> {
    if matches!(a.resource.as_deref(), Some("instancegroup" | "ig")) {
        return delete_group(cli, a).await;
    }
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let wait = spec::quantity::parse_duration(&a.wait)
        .map_err(|e| ExitError::usage(format!("--wait: {e}")))?;
    let target = ops::delete::target(&repo, &name).await?;
    if !a.yes {
        let inv = target.inventory(&repo).await?;
        print_inventory(&name, &inv);
        return Ok(());
    }
    a.lock.break_if_asked(&repo, &name, a.yes).await?;
    let progress = cli.terminal().progress();
    let command = format!("delete cluster {name} --yes");
    let ttl = Duration::from_secs(a.lock_ttl.max(1));
    let guard = ops::lock::acquire(&repo, &name, &command, ttl, &progress).await?;
    let result = target.delete(&repo, wait, &progress).await;
    let deleted = ops::lock::release(guard, &name, result, &progress).await?;
    println!(
        "Deleted cluster {name}: {} cloud resources and {} state objects.",
        deleted.resources, deleted.state_objects
    );
    Ok(())
}

fn print_inventory(name: &str, inv: &ops::Inventory) {
    let rows: Vec<Vec<String>> = inv
        .resources
        .iter()
        .map(|r| vec![r.kind.to_string(), r.name.clone(), r.id.clone()])
        .collect();
    if rows.is_empty() {
        println!("No cloud resources found for cluster {name}.");
    } else {
        println!("Cloud resources of cluster {name} (found by tag kprov.io/cluster={name}):");
        print!("{}", super::output::table(&["KIND", "NAME", "ID"], &rows));
    }
    println!(
        "\nState objects in {}: {}",
        inv.store_url, inv.state_objects
    );
    println!("\nMust specify --yes to delete cluster {name}");
}

/// `delete instancegroup GROUP`: list its instances; with --yes, under the cluster's lock,
/// store the spec without it, drain its nodes (unless --cloudonly) and delete them.
async fn delete_group(cli: &Cli, a: &DeleteArgs) -> anyhow::Result<()> {
    let Some(group) = a.cluster.as_deref() else {
        return Err(ExitError::usage(
            "say which instance group: `kprov delete instancegroup GROUP [--name CLUSTER]`",
        ));
    };
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(None, cli.name.as_deref(), &repo).await?;
    let report = ops::plan(&repo, &name).await?;
    if !a.yes {
        ops::groups::without_group(&repo.require(&name).await?, group)?;
        let list = ops::groups::instances_of(&report, group).await?;
        println!(
            "Instance group {group} of cluster {name} and its {} instance(s):",
            list.len()
        );
        for i in &list {
            println!("  {:<32} {}", i.name, i.id);
        }
        println!(
            "\nMust specify --yes to delete ({}).",
            if a.drain.cloudonly {
                "--cloudonly: instances are not drained first"
            } else {
                "each node is drained first"
            }
        );
        return Ok(());
    }
    a.lock.break_if_asked(&repo, &name, a.yes).await?;
    let progress = cli.terminal().progress();
    let command = format!("delete instancegroup {group} --yes");
    let ttl = Duration::from_secs(a.lock_ttl.max(1));
    let guard = ops::lock::acquire(&repo, &name, &command, ttl, &progress).await?;
    let result = async {
        // planned again under the lock
        let report = ops::plan(&repo, &name).await?;
        let opts = ops::ApplyOptions {
            concurrency: None,
            deadline: Duration::from_secs(3600),
            command: command.clone(),
            asset_check: None,
            live: a.drain.live()?,
            cloud_only: a.drain.cloudonly,
            snapshot_to: None,
        };
        ops::groups::delete_group(&repo, report, group, &opts, &progress).await
    }
    .await;
    let n = ops::lock::release(guard, &name, result, &progress).await?;
    println!("Deleted instance group {group} of cluster {name} and {n} instance(s).");
    Ok(())
}
