//! `kprov delete [cluster] [NAME] [--yes]`: list, then delete, everything the cluster owns.

use std::time::Duration;

use clap::Args;

use super::update::take_lock;
use super::{current_cluster, open_store, Cli, ExitError, LockArgs};
use crate::apply::{self, Progress, Settings};
use crate::repo::Repo;
use crate::spec;

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `cluster` (optional, kops-style).
    #[arg(value_parser = ["cluster"], hide_possible_values = true)]
    pub resource: Option<String>,
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
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
}

/// Run `delete`.
pub async fn run(cli: &Cli, a: &DeleteArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let wait = spec::quantity::parse_duration(&a.wait)
        .map_err(|e| ExitError::usage(format!("--wait: {e}")))?;
    let stored = repo.require(&name).await?;
    let cloud = crate::cloud::connect(&name, &stored.config.cluster.spec).await?;
    if !a.yes {
        let mut found = cloud.list_resources(&name).await?;
        found.sort_by(|x, y| x.kind.cmp(&y.kind).then(x.name.cmp(&y.name)));
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|r| vec![r.kind.to_string(), r.name.clone(), r.id.clone()])
            .collect();
        if rows.is_empty() {
            println!("No cloud resources found for cluster {name}.");
        } else {
            println!("Cloud resources of cluster {name} (found by tag kprov.io/cluster={name}):");
            print!("{}", super::get::table(&["KIND", "NAME", "ID"], &rows));
        }
        let keys = repo.store.list(&format!("{name}/")).await?;
        println!("\nState objects in {}: {}", repo.store.url(), keys.len());
        println!("\nMust specify --yes to delete cluster {name}");
        return Ok(());
    }
    let guard = take_lock(
        &repo,
        &name,
        &format!("delete cluster {name} --yes"),
        &a.lock,
        a.yes,
        Duration::from_secs(a.lock_ttl.max(1)),
    )
    .await?;
    let settings = Settings {
        concurrency: cloud.default_concurrency(),
        ..Default::default()
    };
    let result = apply::delete_all(cloud, &name, &settings, wait, &Progress::auto()).await;
    let outcome = match result {
        Ok(n) => {
            let removed = repo.delete_cluster(&name).await?;
            println!("Deleted cluster {name}: {n} cloud resources and {removed} state objects.");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e)),
    };
    guard.release().await?;
    outcome
}
