//! Planning a run: what must change to make the cloud match the stored spec, with every check
//! that can refuse the spec done before anything changes (the cloud's capacity and features, the
//! provider's user-data limit). A plan makes no change anywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use kprov_providers::{Cloud, InstanceRequest, Role};

use crate::apply::{RenderContext, UserData};
use crate::bootstrap::Renderer;
use crate::error::ExitError;
use crate::plan::{self, Change, Plan};
use crate::repo::Repo;
use crate::spec::{self, ClusterConfig};

/// A plan and what applying it needs: the validated spec it was made from, the connected cloud
/// and (when instances are to be created) the user-data renderer that passed the size check.
pub struct PlanReport {
    /// The cluster's name.
    pub cluster: String,
    /// The stored spec generation the plan was made from (recorded in the journal).
    pub generation: u64,
    /// The validated spec, defaults filled in.
    pub config: ClusterConfig,
    /// The cloud the cluster lives in.
    pub cloud: Arc<dyn Cloud>,
    /// The changes, kops-style.
    pub plan: Plan,
    /// The renderer the size check used; `None` when nothing is created.
    pub(crate) renderer: Option<Renderer>,
}

impl PlanReport {
    /// Instances the plan creates (new ones and the new half of replacements).
    pub fn creating(&self) -> Vec<InstanceRequest> {
        creating(&self.plan)
    }
}

/// Plan cluster `name`: validate its stored spec, connect to its cloud, list what the cluster
/// owns there, diff, ask the adapter for repairs, and refuse (exit 2, nothing changed) a spec
/// the cloud cannot hold or whose user-data the provider cannot deliver.
pub async fn plan(repo: &Repo, name: &str) -> anyhow::Result<PlanReport> {
    let stored = repo.require(name).await?;
    let mut loaded = repo.as_loaded(&stored);
    spec::validate(&mut loaded)?;
    let config = loaded.config;
    let cloud = crate::cloud::connect(name, &config.cluster.spec).await?;
    let desired = plan::desired(&config);
    let observed = cloud.list_instances(name).await?;
    let mut plan = plan::diff(&desired, &observed);
    plan.repairs = cloud.pending_repairs(name, &observed).await?;
    check_load_balancer(cloud.as_ref(), name, &mut plan).await?;

    let mut report = PlanReport {
        cluster: name.to_string(),
        generation: stored.generation,
        config,
        cloud,
        plan,
        renderer: None,
    };
    let creating = creating(&report.plan);
    if !creating.is_empty() {
        report.prepare_creates(repo, &creating).await?;
    }
    Ok(report)
}

impl PlanReport {
    /// Before `creating` is created (the plan's creates, or a rolling update's replacements):
    /// refuse (exit 2, nothing changed) what the cloud cannot hold or whose user-data the
    /// provider cannot deliver, and keep the renderer that passed the size check.
    pub async fn prepare_creates(
        &mut self,
        repo: &Repo,
        creating: &[InstanceRequest],
    ) -> anyhow::Result<()> {
        let name = self.cluster.as_str();
        check_capacity(self.cloud.as_ref(), name, creating).await?;
        let renderer = crate::bootstrap::renderer(repo, &self.config)
            .await?
            .with_user_data_limit(self.cloud.user_data_limit())
            .with_restore(super::restore::node_restore(repo, name).await?)
            .with_unexpired_token()?;
        check_user_data_fits(&renderer, name, creating)?;
        self.renderer = Some(renderer);
        Ok(())
    }
}

/// The provider's load balancer in front of the control planes: when the cluster wants one
/// that does not exist (completely), making it is part of the plan, after the provider found
/// nothing wrong with it (exit 2 otherwise, nothing changed). A running control plane without
/// one is refused: its certificates and kubeconfigs name its own address, not the new VIP.
async fn check_load_balancer(cloud: &dyn Cloud, name: &str, plan: &mut Plan) -> anyhow::Result<()> {
    let Some(req) = &plan.api_load_balancer else {
        return Ok(());
    };
    if let Some(endpoint) = cloud.control_plane_endpoint(name).await? {
        plan.control_plane_endpoint = Some(endpoint);
        return Ok(());
    }
    if plan.live_control_planes > 0 {
        return Err(ExitError::usage(format!(
            "cluster {name} runs {} control plane(s) without the API load balancer its spec asks for (spec.controlPlane.loadBalancer, or more than one control plane); nothing was changed. Its certificates and kubeconfigs name the first control plane's address, so nodes cannot be moved to a new VIP in place. fix: set spec.controlPlane.loadBalancer: none (`kprov edit cluster {name}`) to keep joining the first control plane, or create the cluster with its control planes behind a load balancer from the start",
            plan.live_control_planes
        )));
    }
    let problems = cloud.check_control_plane_endpoint(req).await?;
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("- {}\n  fix: {}", p.problem, p.fix))
            .collect();
        return Err(ExitError::usage(format!(
            "the {} cloud cannot make the API load balancer of cluster {name} as specified; nothing was changed:\n{}",
            cloud.name(),
            lines.join("\n")
        )));
    }
    plan.api_load_balancer_missing = true;
    Ok(())
}

fn creating(plan: &Plan) -> Vec<InstanceRequest> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The adapter's check of what is about to be created (images, flavors, GPUs, quotas).
async fn check_capacity(
    cloud: &dyn Cloud,
    name: &str,
    creating: &[InstanceRequest],
) -> anyhow::Result<()> {
    let problems = cloud.check(creating).await?;
    if problems.is_empty() {
        return Ok(());
    }
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
    Err(ExitError::usage(format!(
        "the {} cloud cannot hold cluster {name} as specified; nothing was changed:\n{}",
        cloud.name(),
        lines.join("\n")
    )))
}

/// User-data must fit the provider's limit: render one instance per group (and every
/// first-of-group control plane, which carries the most) now, so an oversized spec fails here
/// and not half-way through an apply.
fn check_user_data_fits(
    renderer: &dyn UserData,
    name: &str,
    creating: &[InstanceRequest],
) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for r in creating {
        if !seen.insert((r.instance_group.clone(), r.index == 0)) {
            continue;
        }
        // Joining nodes always get an endpoint; a first control plane may get none.
        let mut endpoints = vec!["255.255.255.255:65535".to_string()];
        if r.role == Role::ControlPlane && r.index == 0 {
            endpoints.push(String::new());
        }
        for endpoint in endpoints {
            let ctx = RenderContext {
                control_plane_endpoint: endpoint,
            };
            if let Err(e) = renderer.render(r, &ctx) {
                problems.push(format!("- {}: {e}", r.name));
                break;
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.dedup();
    Err(ExitError::usage(format!(
        "the user-data of cluster {name} cannot be delivered as specified; nothing was changed:\n{}",
        problems.join("\n")
    )))
}
