//! Applying a plan: journal the run (and say when it resumes a killed one), make sure the
//! cluster's secrets exist and its bootstrap token outlives the apply, then run the executor.

use std::sync::Arc;
use std::time::Duration;

use kprov_providers::InstanceRequest;

use crate::apply::{self, journal::TaskState, Journal, Outcome, RenderContext, Settings, UserData};
use crate::error::ExitError;
use crate::repo::Repo;
use crate::report::Progress;
use crate::spec;

use super::assets::CheckOptions;
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
    /// How the cluster's API server is reached (to install a new bootstrap token).
    pub api: super::access::ApiAccess,
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
            token_in_cluster(repo, name, &report.plan, &token, &opts.api, progress).await?;
            Arc::new(renderer.with_token(token))
        }
        // Nothing is created, so nothing is rendered.
        None => Arc::new(|r: &InstanceRequest, _: &RenderContext| {
            Err(format!("{}: the plan creates no instance", r.name))
        }),
    };
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
