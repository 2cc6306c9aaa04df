//! Applying a plan: journal the run (and say when it resumes a killed one), make sure the
//! cluster's secrets exist and its bootstrap token outlives the apply, take the instances it
//! deletes out of a running cluster (cordon, drain, etcd member, Node), then run the executor.

use std::sync::Arc;
use std::time::Duration;

use kprov_providers::{Instance, InstanceRequest, Role};

use crate::apply::{self, journal::TaskState, Journal, Outcome, RenderContext, Settings, UserData};
use crate::error::ExitError;
use crate::repo::Repo;
use crate::report::Progress;
use crate::spec;

use super::assets::CheckOptions;
use super::live::{Live, LiveOptions};
use super::plan::PlanReport;

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Cloud calls in flight at once (default: the provider's).
    pub concurrency: Option<usize>,
    /// The whole apply must end within this.
    pub deadline: Duration,
    /// The command recorded in the journal (`update --yes`).
    pub command: String,
    /// Check the mirrored assets before creating an instance (`None`: `--skip-asset-check`).
    pub asset_check: Option<CheckOptions>,
    /// How the cluster's API server is reached (a new bootstrap token, draining) and how nodes
    /// are drained.
    pub live: LiveOptions,
    /// Delete instances without taking them out of the cluster first (kops' `--cloudonly`):
    /// no drain, no etcd member removal, for a cluster whose API server is broken.
    pub cloud_only: bool,
    /// Where an etcd restore puts the replacement's encrypted snapshot copy when the state
    /// store cannot hand the node a URL (`file://`): an upload target of the cluster's file
    /// repository (`s3://`, `file:///DIR`, `http(s)://`), `--snapshot-to`.
    pub snapshot_to: Option<String>,
}

/// Apply `report`'s plan to its cloud. Every provider call is idempotent and the plan is made
/// from the cloud again on a re-run, so a run killed at any point is finished by the next one;
/// the journal only lets that run say what it resumes.
pub async fn apply(
    repo: &Repo,
    report: PlanReport,
    opts: &ApplyOptions,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let name = report.cluster.as_str();
    if let (Some(check), Some(_)) = (&opts.asset_check, &report.renderer) {
        // Before the journal: a refused run leaves nothing to resume.
        super::assets::precheck(&report.config, check, progress).await?;
    }
    // Also before the journal: an API server that cannot be reached to drain refuses the run.
    let live = connect_to_drain(repo, &report, opts).await?;
    let (journal, previous) =
        Journal::begin(repo.store.clone(), name, &opts.command, report.generation).await?;
    if let Some(prev) = previous {
        let done = prev
            .tasks
            .values()
            .filter(|t| **t == TaskState::Done)
            .count();
        progress.note(&format!(
            "Resuming: an earlier run ({}) stopped after {done} of {} tasks; finishing what it left.",
            prev.run,
            prev.tasks.len()
        ));
    }
    let settings = Settings {
        concurrency: opts
            .concurrency
            .unwrap_or_else(|| report.cloud.default_concurrency()),
        deadline: opts.deadline,
        ..Default::default()
    };
    let user_data: Arc<dyn UserData> = match report.renderer {
        Some(renderer) => {
            // A create killed right after storing the spec may have left no PKI: make it now
            // (idempotent). New nodes join with the stored token: make sure it outlives this
            // apply, and render with the token that is stored now.
            crate::secrets::ensure(repo, &report.config).await?;
            let spec = &report.config.cluster.spec;
            let ttl = spec::quantity::parse_duration(&spec.bootstrap.token_ttl)
                .map_err(|e| ExitError::usage(format!("spec.bootstrap.tokenTTL: {e}")))?;
            let token = crate::secrets::refresh_token(repo, name, ttl).await?;
            token_in_cluster(repo, name, &report.plan, &token, &opts.live.api, progress).await?;
            Arc::new(renderer.with_token(token))
        }
        // Nothing is created, so nothing is rendered.
        None => Arc::new(|r: &InstanceRequest, _: &RenderContext| {
            Err(format!("{}: the plan creates no instance", r.name))
        }),
    };
    if let Some(live) = &live {
        take_out_deleted(live, &report.plan, progress).await?;
    }
    let outcome = apply::apply(
        report.cloud.clone(),
        &report.plan,
        user_data,
        &settings,
        &journal,
        progress,
    )
    .await;
    journal.flush().await;
    let outcome = outcome?;
    journal.finish().await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "the cloud changes of cluster {name} were made, but the state store could not record the end of the run; re-run `kprov update cluster {name} --yes` once the store is reachable"
        ))
    })?;
    Ok(outcome)
}

/// The instances `report`'s plan deletes from a running cluster.
fn deleted(plan: &crate::plan::Plan) -> Vec<&kprov_providers::Instance> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            crate::plan::Change::Delete { old, .. } => Some(old),
            _ => None,
        })
        .collect()
}

/// Connect to the API server when the plan deletes instances from a running cluster (a
/// scale-down, a deleted group, a duplicate) and `--cloudonly` was not asked; `None` when
/// nothing has to be drained. Refuses (nothing changed) when the API server does not answer.
pub(super) async fn connect_to_drain<'a>(
    repo: &'a Repo,
    report: &PlanReport,
    opts: &'a ApplyOptions,
) -> anyhow::Result<Option<Live<'a>>> {
    let leaving = deleted(&report.plan);
    if opts.cloud_only || leaving.is_empty() || report.plan.live_control_planes == 0 {
        return Ok(None);
    }
    let names = leaving.iter().map(|i| i.name.clone()).collect();
    let live = Live::connect(repo, &report.cluster, report.cloud.clone(), names, &opts.live)
        .await
        .map_err(|e| {
            e.context(format!(
                "{} instance(s) of running cluster {} are to be deleted and must be drained first; nothing was changed. \
                 fix: make the API server reachable (or pass --kubeconfig), or add --cloudonly to delete them without draining \
                 (their pods stop with them)",
                leaving.len(),
                report.cluster
            ))
        })?;
    Ok(Some(live))
}

/// Take every instance the plan deletes out of the cluster before its VM goes, as a rolling
/// update does with an old instance: cordon, drain through the Eviction API, (control planes,
/// one at a time) remove its etcd member after the quorum checks, delete its Node. Nodes are
/// drained at once: their disruption budgets pace the evictions.
pub(super) async fn take_out_deleted(
    live: &Live<'_>,
    plan: &crate::plan::Plan,
    progress: &Progress,
) -> anyhow::Result<()> {
    let leaving = deleted(plan);
    for cp in leaving.iter().filter(|i| i.is_control_plane()) {
        live.take_out(cp, Role::ControlPlane, None, progress)
            .await?;
    }
    // every node is drained before any Node is deleted: a drain a budget blocks stops the run
    // with all of them cordoned and registered, none half gone
    let nodes: Vec<&Instance> = leaving
        .iter()
        .copied()
        .filter(|i| !i.is_control_plane())
        .collect();
    let drains = nodes
        .iter()
        .map(|i| live.cordon_and_drain(&i.name, progress));
    for result in futures::future::join_all(drains).await {
        result?;
    }
    for i in nodes {
        live.delete_node(&i.name).await?;
    }
    Ok(())
}

/// Make sure the cluster holds `token` before nodes that join with it are created: a cluster
/// that does not run yet gets it from `kubeadm init`; a running one (a scale-up, a
/// replacement, after the first token's TTL) gets its `bootstrap-token-ID` Secret through the
/// API. The store records which token the cluster holds, so this talks to the API only when
/// the token changed — and a run killed in between installs it again.
async fn token_in_cluster(
    repo: &Repo,
    name: &str,
    plan: &crate::plan::Plan,
    token: &crate::pki::BootstrapToken,
    api: &super::access::ApiAccess,
    progress: &Progress,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if crate::secrets::token_in_cluster(repo, name)
        .await?
        .as_deref()
        == Some(token.id())
    {
        return Ok(());
    }
    if plan.live_control_planes > 0 {
        let fix = || {
            format!(
                "cluster {name} is running and the new nodes join with bootstrap token {}, which it does not hold yet; \
                 nothing was created. fix: make its API server reachable (spec.controlPlane.endpoint, or --kubeconfig FILE) and re-run",
                token.id()
            )
        };
        let client = super::access::api_client(repo, name, api)
            .await
            .with_context(fix)?;
        let done = crate::k8s::token::ensure(&client, token)
            .await
            .with_context(fix)?;
        progress.note(&format!(
            "Bootstrap token {} in cluster {name}: {done:?}",
            token.id()
        ));
    }
    crate::secrets::mark_token_in_cluster(repo, name, token.id()).await
}
