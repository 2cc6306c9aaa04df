//! `kprov update [cluster] [NAME] [--yes]`: print the plan; with --yes, lock and apply it.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kprov_state::{lease, Lease};

use super::{confirm, current_cluster, open_store, Cli, ExitError, LockArgs};
use crate::apply::{self, Journal, Progress, Settings};
use crate::plan;
use crate::repo::Repo;
use crate::spec;

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
    /// Lock options.
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Take the cluster lock for a mutating command, breaking it first if asked.
pub async fn take_lock(
    repo: &Repo,
    cluster: &str,
    command: &str,
    lock: &LockArgs,
    yes: bool,
    ttl: Duration,
) -> anyhow::Result<kprov_state::LeaseGuard> {
    if lock.force_unlock {
        if let Some(held) = lease::current(repo.store.as_ref(), cluster).await? {
            let who = held.describe(chrono::Utc::now());
            if !yes
                && !confirm(&format!(
                    "Break the lock of cluster {cluster} held by {who}?"
                ))?
            {
                return Err(ExitError::usage("lock not broken"));
            }
            lease::force_unlock(repo.store.as_ref(), cluster).await?;
            eprintln!("Broke the lock of cluster {cluster} (was held by {who}).");
        }
    }
    let guard = Lease { cluster: cluster.into(), command: command.into(), ttl }
        .acquire(repo.store.clone())
        .await
        .map_err(|e| match e {
            kprov_state::StateError::Locked { .. } => anyhow::Error::new(e).context(format!(
                "another kprov run is changing cluster {cluster}; wait for it, or if it died run again with --force-unlock"
            )),
            e => e.into(),
        })?;
    if let Some(prev) = &guard.took_over_from {
        eprintln!(
            "Note: took over the expired lock of {} (that run died or was killed).",
            prev.describe(chrono::Utc::now())
        );
    }
    Ok(guard)
}

/// Run `update`.
pub async fn run(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let deadline = spec::quantity::parse_duration(&a.timeout)
        .map_err(|e| ExitError::usage(format!("--timeout: {e}")))?;
    if a.yes {
        // Before the lock and the cloud: a bad checksum file would only fail on the nodes.
        super::check_asset_sha256sums()?;
    }
    let guard = if a.yes {
        Some(
            take_lock(
                &repo,
                &name,
                &format!("update cluster {name} --yes"),
                &a.lock,
                a.yes,
                Duration::from_secs(a.lock_ttl.max(1)),
            )
            .await?,
        )
    } else {
        None
    };
    let result = update(cli, a, &repo, &name, deadline).await;
    if let Some(g) = guard {
        if g.is_lost() {
            eprintln!("Warning: the lock of cluster {name} was broken by another run while this one worked.");
        }
        if let Err(e) = g.release().await {
            // The run's own error (e.g. the store became unreachable) says more than this one.
            if result.is_err() {
                eprintln!("Warning: could not release the lock of cluster {name}: {e}");
            } else {
                return Err(e.into());
            }
        }
    }
    result
}

async fn update(
    _cli: &Cli,
    a: &UpdateArgs,
    repo: &Repo,
    name: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let stored = repo.require(name).await?;
    let mut loaded = repo.as_loaded(&stored);
    spec::validate(&mut loaded)?;
    let cfg = loaded.config;
    let cloud = crate::cloud::connect(name, &cfg.cluster.spec).await?;
    let desired = plan::desired(&cfg);
    let observed = cloud.list_instances(name).await?;
    let mut plan = plan::diff(&desired, &observed);
    plan.repairs = cloud.pending_repairs(name, &observed).await?;

    let creating: Vec<_> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            plan::Change::Create(r) | plan::Change::Replace { new: r, .. } => Some(r.clone()),
            _ => None,
        })
        .collect();
    if !creating.is_empty() {
        let problems = cloud.check(&creating).await?;
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    format!(
                        "- instance group {}: {}\n  fix: {}",
                        if p.instance_group.is_empty() {
                            "(cluster)"
                        } else {
                            &p.instance_group
                        },
                        p.problem,
                        p.fix
                    )
                })
                .collect();
            return Err(ExitError::usage(format!(
                "the {} cloud cannot hold cluster {name} as specified; nothing was changed:\n{}",
                cloud.name(),
                lines.join("\n")
            )));
        }
    }

    if !creating.is_empty() {
        // User-data must fit the provider's limit: render one instance per group (and every
        // first-of-group control plane, which carries the most) now, so an oversized spec fails
        // here and not half-way through an apply.
        let renderer = crate::bootstrap::renderer(repo, &cfg).await?;
        let mut seen = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for r in &creating {
            if !seen.insert((r.instance_group.clone(), r.index == 0)) {
                continue;
            }
            // Joining nodes always get an endpoint; a first control plane may get none.
            let mut ctxs = vec!["255.255.255.255:65535".to_string()];
            if r.role == kprov_providers::Role::ControlPlane && r.index == 0 {
                ctxs.push(String::new());
            }
            for ctx in ctxs {
                let ctx = apply::RenderContext {
                    control_plane_endpoint: ctx,
                };
                if let Err(e) = renderer.render(r, &ctx) {
                    problems.push(format!("- {}: {e}", r.name));
                    break;
                }
            }
        }
        if !problems.is_empty() {
            problems.dedup();
            return Err(ExitError::usage(format!(
                "the user-data of cluster {name} cannot be delivered as specified; nothing was changed:\n{}",
                problems.join("\n")
            )));
        }
    }

    let color = console::Term::stdout().is_term();
    print!("{}", plan::render(&plan, color));
    if plan.is_empty() {
        return Ok(());
    }
    if !a.yes {
        println!("\nMust specify --yes to apply changes");
        return Ok(());
    }
    let (journal, previous) =
        Journal::begin(repo.store.clone(), name, "update --yes", stored.generation).await?;
    if let Some(prev) = previous {
        let done = prev
            .tasks
            .values()
            .filter(|t| **t == apply::journal::TaskState::Done)
            .count();
        eprintln!("Resuming: an earlier run ({}) stopped after {done} of {} tasks; finishing what it left.", prev.run, prev.tasks.len());
    }
    let settings = Settings {
        concurrency: a.concurrency.unwrap_or_else(|| cloud.default_concurrency()),
        deadline,
        ..Default::default()
    };
    if !creating.is_empty() {
        // A create killed right after storing the spec may have left no PKI: make it now
        // (idempotent). New nodes join with the stored token: make sure it outlives this apply.
        crate::secrets::ensure(repo, &cfg).await?;
        let ttl = spec::quantity::parse_duration(&cfg.cluster.spec.bootstrap.token_ttl)
            .map_err(|e| ExitError::usage(format!("spec.bootstrap.tokenTTL: {e}")))?;
        crate::secrets::refresh_token(repo, name, ttl).await?;
    }
    let user_data = crate::bootstrap::renderer(repo, &cfg).await?;
    let outcome = apply::apply(
        cloud.clone(),
        &plan,
        user_data,
        &settings,
        &journal,
        &Progress::auto(),
    )
    .await;
    journal.flush().await;
    let outcome = outcome?;
    journal.finish().await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "the cloud changes of cluster {name} were made, but the state store could not record the end of the run; re-run `kprov update cluster {name} --yes` once the store is reachable"
        ))
    })?;
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
    let _ = Arc::strong_count(&cloud);
    Ok(())
}
