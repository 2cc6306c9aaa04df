//! The executor: runs a plan's changes as a DAG of tasks (network → instances; delete before
//! re-create on replace) with bounded parallelism, retries with exponential backoff and jitter on
//! retryable errors only, an overall deadline, a journal in the state store, and progress.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use kprov_providers::{Cloud, CloudError, Instance, InstanceRequest, Resource, ResourceKind};
use tokio::sync::Semaphore;

use crate::plan::{Change, Plan};

pub mod journal;
pub mod retry;

pub use crate::report::{Phase, Progress};
pub use journal::Journal;
pub use retry::RetryPolicy;

/// Facts known only at apply time that user-data needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    /// `host:port` of the API server the node joins (or serves, for the first control plane).
    pub control_plane_endpoint: String,
}

/// Renders the user-data of an instance right before it is created.
pub trait UserData: Send + Sync {
    /// User-data for `req`.
    fn render(&self, req: &InstanceRequest, ctx: &RenderContext) -> Result<Vec<u8>, String>;
}

impl<F: Fn(&InstanceRequest, &RenderContext) -> Result<Vec<u8>, String> + Send + Sync> UserData
    for F
{
    fn render(&self, req: &InstanceRequest, ctx: &RenderContext) -> Result<Vec<u8>, String> {
        self(req, ctx)
    }
}

/// Executor settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Mutating calls in flight at once.
    pub concurrency: usize,
    /// Retries of retryable errors.
    pub retry: RetryPolicy,
    /// The whole apply must finish within this.
    pub deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 8,
            retry: RetryPolicy::default(),
            deadline: Duration::from_secs(3600),
        }
    }
}

/// Errors of an apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Some tasks failed; the others finished. Re-running resumes.
    #[error("{failed} of {total} changes failed or were not attempted; the rest were applied. Fix the cause and re-run `kprov update cluster {cluster} --yes` to resume:\n{details}")]
    Failed {
        /// The cluster the error is about.
        cluster: String,
        /// Failed tasks.
        failed: usize,
        /// All tasks.
        total: usize,
        /// One line per failure.
        details: String,
    },
    /// The deadline passed.
    #[error("apply of cluster {cluster} did not finish within {deadline:?}; re-run `kprov update cluster {cluster} --yes` to resume (a longer --timeout may help)")]
    Deadline {
        /// The cluster the error is about.
        cluster: String,
        /// The `--timeout` that ran out.
        deadline: Duration,
    },
    /// Creating the network (or the control planes' load balancer) failed, so no instance
    /// was attempted.
    #[error("could not prepare the network of cluster {cluster}: {source}")]
    Network {
        /// The cluster the error is about.
        cluster: String,
        /// The cloud error that stopped it.
        #[source]
        source: CloudError,
    },
}

/// What an apply did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Instances created (or found already created).
    pub created: Vec<Instance>,
    /// Instances deleted.
    pub deleted: usize,
    /// Calls retried.
    pub retries: usize,
}

/// Apply a plan.
pub async fn apply(
    cloud: Arc<dyn Cloud>,
    plan: &Plan,
    user_data: Arc<dyn UserData>,
    settings: &Settings,
    journal: &Journal,
    progress: &Progress,
) -> Result<Outcome, ApplyError> {
    let cluster = plan.cluster.clone();
    match tokio::time::timeout(
        settings.deadline,
        run(cloud, plan, user_data, settings, journal, progress),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ApplyError::Deadline {
            cluster,
            deadline: settings.deadline,
        }),
    }
}

async fn run(
    cloud: Arc<dyn Cloud>,
    plan: &Plan,
    user_data: Arc<dyn UserData>,
    settings: &Settings,
    journal: &Journal,
    progress: &Progress,
) -> Result<Outcome, ApplyError> {
    let creates: Vec<InstanceRequest> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let mut ex = Executor {
        sem: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        cloud,
        plan,
        user_data,
        settings,
        journal,
        progress,
        network_id: None,
        provider_endpoint: None,
        outcome: Outcome::default(),
        failures: Vec::new(),
        not_attempted: 0,
    };
    // Phase 1: network, and the control planes' load balancer. Every instance depends on them.
    if !creates.is_empty() || plan.api_load_balancer_missing {
        ex.network().await?;
        ex.load_balancer().await?;
    }
    // Phase 2: deletes, then creates. A running instance whose spec changed is not in the plan's
    // changes: `rolling-update` replaces it with a surge instance first.
    ex.delete_instances().await;
    if !creates.is_empty() {
        ex.create_instances(creates).await?;
    }
    if !plan.repairs.is_empty() && ex.failures.is_empty() {
        ex.repair().await;
    }
    journal.flush().await;
    ex.finish()
}

/// One apply in progress: what every task needs, and what the run has done so far.
struct Executor<'a> {
    cloud: Arc<dyn Cloud>,
    plan: &'a Plan,
    user_data: Arc<dyn UserData>,
    settings: &'a Settings,
    journal: &'a Journal,
    progress: &'a Progress,
    /// Bounds the mutating calls in flight (`Settings::concurrency`).
    sem: Arc<Semaphore>,
    /// The cluster network, once ensured: every instance is created in it.
    network_id: Option<String>,
    /// The provider's load balancer's `host:port`, once ensured.
    provider_endpoint: Option<String>,
    outcome: Outcome,
    /// One line per change that failed, for [`ApplyError::Failed`].
    failures: Vec<String>,
    /// Changes not attempted beyond those with a line in `failures`.
    not_attempted: usize,
}

impl Executor<'_> {
    /// Changes of the plan the executor counts (the network is a prerequisite, not a change).
    fn total(&self) -> usize {
        self.plan
            .changes
            .iter()
            .filter(|c| !matches!(c, Change::CreateNetwork(_)))
            .count()
    }

    /// Ensure the cluster network (the plan's request, or the default one tagged with the
    /// cluster when the plan found it present).
    async fn network(&mut self) -> Result<(), ApplyError> {
        let plan = self.plan;
        let req = plan
            .changes
            .iter()
            .find_map(|c| match c {
                Change::CreateNetwork(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| kprov_providers::NetworkRequest {
                cluster: plan.cluster.clone(),
                tags: BTreeMap::from([(
                    kprov_providers::TAG_CLUSTER.to_string(),
                    plan.cluster.clone(),
                )]),
            });
        let bar = self.progress.phase("network", 1);
        self.journal.started("network").await;
        let cloud = &self.cloud;
        let (net, retries) = retry::with_retry(&self.settings.retry, "ensure network", || {
            cloud.ensure_network(&req)
        })
        .await
        .map_err(|(source, _)| ApplyError::Network {
            cluster: plan.cluster.clone(),
            source,
        })?;
        self.outcome.retries += retries;
        self.journal.done("network").await;
        bar.inc(1);
        bar.finish(format!("network {} ready", net.name));
        self.network_id = Some(net.id);
        Ok(())
    }

    /// Ensure the provider's load balancer in front of the control planes, when the cluster
    /// has one: its endpoint is known before the first instance, so every node starts at once.
    async fn load_balancer(&mut self) -> Result<(), ApplyError> {
        let Some(req) = &self.plan.api_load_balancer else {
            return Ok(());
        };
        let bar = self.progress.phase("API load balancer", 1);
        self.journal.started("load-balancer").await;
        let cloud = &self.cloud;
        let (endpoint, retries) =
            retry::with_retry(&self.settings.retry, "ensure the API load balancer", || {
                cloud.ensure_control_plane_endpoint(req)
            })
            .await
            .map_err(|(source, _)| ApplyError::Network {
                cluster: self.plan.cluster.clone(),
                source,
            })?;
        self.outcome.retries += retries;
        self.journal.done("load-balancer").await;
        bar.inc(1);
        bar.finish(format!("API load balancer at {endpoint}"));
        self.provider_endpoint = Some(endpoint);
        Ok(())
    }

    /// Delete the instances the plan removes.
    async fn delete_instances(&mut self) {
        let deletes: Vec<(String, Instance)> = self
            .plan
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete { old, .. } => Some((format!("delete/{}", old.id), old.clone())),
                _ => None,
            })
            .collect();
        if deletes.is_empty() {
            return;
        }
        let bar = self
            .progress
            .phase("delete instances", deletes.len() as u64);
        let mut tasks = FuturesUnordered::new();
        for (key, old) in deletes {
            let (cloud, sem, policy) = (
                self.cloud.clone(),
                self.sem.clone(),
                self.settings.retry.clone(),
            );
            tasks.push(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                let res = Resource {
                    kind: ResourceKind::Instance,
                    id: old.id.clone(),
                    name: old.name.clone(),
                    tags: old.tags.clone(),
                };
                let r = retry::with_retry(&policy, &format!("delete {}", old.name), || {
                    cloud.delete_resource(&res)
                })
                .await;
                (key, old.name, r)
            });
        }
        while let Some((key, name, r)) = tasks.next().await {
            bar.inc(1);
            match r {
                Ok(((), n)) => {
                    self.outcome.retries += n;
                    self.outcome.deleted += 1;
                    self.journal.done(&key).await;
                }
                Err((e, n)) => {
                    self.outcome.retries += n;
                    self.failures.push(format!("  delete {name}: {e}"));
                }
            }
        }
        bar.finish(format!("{} instances deleted", self.outcome.deleted));
    }

    /// The endpoint new nodes join: the spec's, else the provider's load balancer, else a
    /// running control plane's address; `None` when the first control plane must go first.
    async fn known_endpoint(&self) -> Option<String> {
        if let Some(e) = self
            .plan
            .spec_endpoint
            .as_ref()
            .or(self.provider_endpoint.as_ref())
        {
            return Some(e.clone());
        }
        match self.cloud.control_plane_endpoint(&self.plan.cluster).await {
            Ok(Some(e)) => return Some(e),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("could not ask the provider for a control-plane endpoint: {e}")
            }
        }
        self.plan.control_plane_endpoint.clone()
    }

    /// Create the plan's new instances. Without a known endpoint the first control plane goes
    /// alone: its address becomes the endpoint every other node joins. With one, all at once.
    async fn create_instances(&mut self, creates: Vec<InstanceRequest>) -> Result<(), ApplyError> {
        let bar = self
            .progress
            .phase("create instances", creates.len() as u64);
        let started = Instant::now();
        let mut endpoint = self.known_endpoint().await;
        let mut rest = creates;
        if endpoint.is_none() {
            endpoint = self.first_control_plane(&mut rest, &bar).await?;
        }
        if !rest.is_empty() {
            let ctx = RenderContext {
                control_plane_endpoint: endpoint.unwrap_or_default(),
            };
            self.wave(rest, &ctx, &bar).await;
        }
        bar.finish(format!(
            "{} instances ready in {:.1}s",
            self.outcome.created.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Create the first control plane of `rest` alone (taking it out of `rest`) and return the
    /// endpoint it serves. When it fails or has no address, the others are not attempted:
    /// `rest` is emptied and the reason recorded.
    async fn first_control_plane(
        &mut self,
        rest: &mut Vec<InstanceRequest>,
        bar: &Phase,
    ) -> Result<Option<String>, ApplyError> {
        let first = rest
            .iter()
            .filter(|r| r.role == kprov_providers::Role::ControlPlane)
            .min_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)))
            .map(|r| r.name.clone());
        let Some(first) = first else {
            return Err(ApplyError::Failed {
                cluster: self.plan.cluster.clone(),
                failed: rest.len(),
                total: self.total(),
                details: "  the control plane exists but its address is unknown; set spec.controlPlane.endpoint".into(),
            });
        };
        let pos = rest.iter().position(|r| r.name == first).expect("present");
        let wave1 = vec![rest.remove(pos)];
        let ctx = RenderContext {
            control_plane_endpoint: String::new(),
        };
        let mut created = self.wave(wave1, &ctx, bar).await;
        match created.pop().map(|i| i.address) {
            Some(Some(addr)) => return Ok(Some(format!("{addr}:{}", self.plan.api_port))),
            Some(None) => {
                self.failures.push(format!("  {first} has no address yet, so the other nodes cannot be told where to join; re-run to retry"));
                rest.clear();
            }
            None if !rest.is_empty() => {
                // one line for these, but each is a change not made
                self.not_attempted += rest.len() - 1;
                self.failures.push(format!(
                    "  {} other instances not attempted: they join {first}, which failed",
                    rest.len()
                ));
                rest.clear();
            }
            None => {}
        }
        Ok(None)
    }

    /// Create a set of instances concurrently; returns those created (in completion order).
    async fn wave(
        &mut self,
        reqs: Vec<InstanceRequest>,
        ctx: &RenderContext,
        bar: &Phase,
    ) -> Vec<Instance> {
        let mut tasks = FuturesUnordered::new();
        for mut req in reqs {
            req.network_id = self.network_id.clone();
            let (cloud, sem, policy, ud, ctx) = (
                self.cloud.clone(),
                self.sem.clone(),
                self.settings.retry.clone(),
                self.user_data.clone(),
                ctx.clone(),
            );
            let key = format!("create/{}", req.name);
            self.journal.started(&key).await;
            tasks.push(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                match ud.render(&req, &ctx) {
                    Ok(bytes) => req.user_data = bytes,
                    Err(e) => {
                        let err = CloudError::Fatal {
                            provider: "kprov",
                            code: "USERDATA".into(),
                            message: format!("rendering user-data of {}: {e}", req.name),
                            fix: "fix the spec and re-run".into(),
                        };
                        return (key, req.name.clone(), Err((err, 0)));
                    }
                }
                let r = retry::with_retry(&policy, &format!("create {}", req.name), || {
                    cloud.create_instance(&req)
                })
                .await;
                (key, req.name.clone(), r)
            });
        }
        let mut created = Vec::new();
        while let Some((key, name, r)) = tasks.next().await {
            bar.inc(1);
            match r {
                Ok((inst, n)) => {
                    self.outcome.retries += n;
                    tracing::info!(instance = %name, id = %inst.id, "instance ready");
                    self.outcome.created.push(inst.clone());
                    created.push(inst);
                    self.journal.done(&key).await;
                }
                Err((e, n)) => {
                    self.outcome.retries += n;
                    self.journal.failed(&key, &e.to_string()).await;
                    self.failures.push(format!("  create {name}: {e}"));
                }
            }
        }
        created
    }

    /// Let the adapter repair what it reported (e.g. a stopped VM), on the instances as they
    /// are now.
    async fn repair(&mut self) {
        let (plan, cloud, policy) = (self.plan, &self.cloud, &self.settings.retry);
        let bar = self.progress.phase("repair", plan.repairs.len() as u64);
        let live = retry::with_retry(policy, "list instances", || {
            cloud.list_instances(&plan.cluster)
        })
        .await;
        let r = match live {
            Ok((live, _)) => {
                retry::with_retry(policy, "repair", || cloud.repair(&plan.cluster, &live))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                bar.inc(plan.repairs.len() as u64);
                bar.finish(format!("{} repaired", plan.repairs.len()));
            }
            Err((e, _)) => self.failures.push(format!("  repair: {e}")),
        }
    }

    /// The run's result: its outcome, or every failure in one error.
    fn finish(mut self) -> Result<Outcome, ApplyError> {
        if self.failures.is_empty() {
            return Ok(self.outcome);
        }
        self.failures.sort();
        Err(ApplyError::Failed {
            cluster: self.plan.cluster.clone(),
            failed: self.failures.len() + self.not_attempted,
            total: self.total() + self.plan.repairs.len(),
            details: self.failures.join("\n"),
        })
    }
}

/// Delete every resource the cluster owns, found by tag, in dependency order, in passes until
/// nothing is left or `wait` expires. Returns the number of resources deleted.
pub async fn delete_all(
    cloud: Arc<dyn Cloud>,
    cluster: &str,
    settings: &Settings,
    wait: Duration,
    progress: &Progress,
) -> Result<usize, DeleteError> {
    let until = Instant::now() + wait;
    let mut deleted = 0;
    let mut last_errors: Vec<String> = Vec::new();
    loop {
        let found = retry::with_retry(&settings.retry, "list resources", || {
            cloud.list_resources(cluster)
        })
        .await
        .map_err(|(e, _)| DeleteError::List {
            cluster: cluster.into(),
            source: e,
        })?
        .0;
        if found.is_empty() {
            return Ok(deleted);
        }
        if Instant::now() >= until {
            let left = found
                .iter()
                .map(|r| format!("  {} {} ({})", r.kind, r.name, r.id))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(DeleteError::Remaining {
                cluster: cluster.into(),
                left,
                errors: last_errors.join("\n"),
            });
        }
        last_errors.clear();
        let mut by_kind: BTreeMap<ResourceKind, Vec<Resource>> = BTreeMap::new();
        for r in found {
            by_kind.entry(r.kind).or_default().push(r);
        }
        // One kind per pass: later kinds usually depend on earlier ones being gone.
        let (kind, batch) = by_kind.into_iter().next().expect("non-empty");
        let bar = progress.phase(&format!("delete {kind}s"), batch.len() as u64);
        let sem = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let mut tasks = FuturesUnordered::new();
        for r in batch {
            let (cloud, sem, policy) = (cloud.clone(), sem.clone(), settings.retry.clone());
            tasks.push(async move {
                let _p = sem.acquire_owned().await.expect("semaphore open");
                let out =
                    retry::with_retry(&policy, &format!("delete {} {}", r.kind, r.name), || {
                        cloud.delete_resource(&r)
                    })
                    .await;
                (r, out)
            });
        }
        let mut ok = 0;
        while let Some((r, out)) = tasks.next().await {
            bar.inc(1);
            match out {
                Ok(_) => {
                    ok += 1;
                    deleted += 1;
                }
                Err((e, _)) => last_errors.push(format!("  {} {}: {e}", r.kind, r.name)),
            }
        }
        bar.finish(format!("{ok} {kind}s deleted"));
        if ok == 0 {
            // Nothing moved this pass (e.g. a dependency not gone yet): wait a little.
            tokio::time::sleep(
                Duration::from_millis(500).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
}

/// Errors of `delete_all`.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// Listing the cluster's resources failed.
    #[error("could not list the resources of cluster {cluster}: {source}")]
    List {
        /// The cluster the error is about.
        cluster: String,
        /// The cloud error that stopped it.
        #[source]
        source: CloudError,
    },
    /// Resources remain after the wait.
    #[error("cluster {cluster}: these resources are still there after the wait; re-run `kprov delete cluster {cluster} --yes` (or raise --wait):\n{left}\nlast errors:\n{errors}")]
    Remaining {
        /// The cluster the error is about.
        cluster: String,
        /// Remaining resources.
        left: String,
        /// Last errors seen.
        errors: String,
    },
}

#[cfg(test)]
mod tests;
