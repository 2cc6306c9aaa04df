//! Taking instances out of a running cluster (everything but `--cloudonly`): for a rolling
//! update, wait for each replacement's Node to be Ready; for it, a scale-down and a deleted
//! group alike, cordon and drain the old node through the Eviction API, remove a control
//! plane's etcd member through a port-forward to a remaining control plane's etcd pod, delete
//! the old Node; validate the cluster after each step of a roll. Every step is idempotent
//! against the cluster's state, so a re-run after kill -9 redoes what is unfinished.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kprov_providers::{Cloud, Instance, Role};

use crate::etcd::{Access, Etcd, EtcdError, Removal};
use crate::k8s::drain::{self, DrainOptions};
use crate::k8s::etcd_forward::{etcd_pod, forward, Forward};
use crate::repo::Repo;
use crate::report::Progress;

use crate::ops::access::{api_client, ApiAccess};
use crate::ops::validate::Target;

/// How the Kubernetes side of a roll behaves (kops' flags).
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// How the API server is reached.
    pub api: ApiAccess,
    /// How nodes are drained.
    pub drain: DrainOptions,
    /// How long a replacement may take to become a Ready Node, and the cluster to validate
    /// after a step.
    pub validation_timeout: Duration,
    /// Stop when a drain fails (else go on and delete the node anyway, as kops does).
    pub fail_on_drain_error: bool,
    /// Stop when the cluster does not validate after a step (else go on).
    pub fail_on_validate_error: bool,
    /// How often waits ask the API again.
    pub poll: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            api: ApiAccess::default(),
            drain: DrainOptions::default(),
            validation_timeout: Duration::from_secs(15 * 60),
            fail_on_drain_error: true,
            fail_on_validate_error: true,
            poll: Duration::from_secs(2),
        }
    }
}

/// A connection to the cluster being rolled.
pub(crate) struct Live<'a> {
    repo: &'a Repo,
    cluster: String,
    client: kube::Client,
    /// The API client and cloud validation reads, and the instances the roll is taking out.
    target: Target,
    opts: &'a LiveOptions,
}

impl<'a> Live<'a> {
    /// Connect to cluster `cluster`'s API server; `cloud` is the cloud the plan was made from,
    /// and `leaving` the old instances whose replacements exist (an interrupted run's).
    pub(crate) async fn connect(
        repo: &'a Repo,
        cluster: &str,
        cloud: Arc<dyn Cloud>,
        leaving: BTreeSet<String>,
        opts: &'a LiveOptions,
    ) -> anyhow::Result<Live<'a>> {
        let client = api_client(repo, cluster, &opts.api).await?;
        // fail fast on an unreachable API server instead of validating until the timeout
        client.apiserver_version().await.map_err(|e| {
            crate::k8s::K8sError::api(format!("reaching cluster {cluster}'s API server"), e)
        })?;
        Ok(Live {
            repo,
            cluster: cluster.to_string(),
            client: client.clone(),
            target: Target {
                name: cluster.to_string(),
                client,
                cloud,
                leaving,
            },
            opts,
        })
    }

    /// The cloud's control planes of the cluster, by name.
    pub(crate) async fn control_planes(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .target
            .machines()
            .await?
            .into_iter()
            .filter(|m| m.role == Role::ControlPlane)
            .map(|m| m.name)
            .collect())
    }

    /// Delete the Nodes whose machines the cloud no longer holds (they come back with an etcd
    /// snapshot taken while those machines ran).
    pub(crate) async fn delete_lost_nodes(&self) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Node;
        let machines: BTreeSet<String> = self
            .target
            .machines()
            .await?
            .into_iter()
            .map(|m| m.name)
            .collect();
        let nodes: kube::Api<Node> = kube::Api::all(self.client.clone());
        let list = nodes
            .list(&Default::default())
            .await
            .map_err(|e| crate::k8s::K8sError::api("listing nodes".to_string(), e))?;
        for n in list.items {
            let Some(name) = n.metadata.name else {
                continue;
            };
            if !machines.contains(&name) {
                tracing::info!("node {name} has no machine left: deleting it");
                self.delete_node(&name).await?;
            }
        }
        Ok(())
    }

    /// Old instances this roll is taking out: validation leaves them (and their Nodes) out.
    pub(crate) fn leaving(&mut self, names: impl IntoIterator<Item = String>) {
        self.target.leaving.extend(names);
    }

    /// Validate the cluster, waiting up to the validation timeout. With
    /// `fail_on_validate_error` a cluster still invalid stops the roll (exit 1, the failures
    /// named); without, it is logged and the roll goes on.
    pub(crate) async fn validate(&self, when: &str, progress: &Progress) -> anyhow::Result<()> {
        let v = self
            .target
            .validate(self.opts.validation_timeout, self.opts.poll, progress)
            .await?;
        if v.is_valid() {
            return Ok(());
        }
        let list: Vec<String> = v.failures.iter().map(|f| f.message.clone()).collect();
        let msg = format!(
            "cluster {} did not validate {when} within {:?}: {}",
            self.cluster,
            self.opts.validation_timeout,
            list.join("; ")
        );
        if self.opts.fail_on_validate_error {
            anyhow::bail!(
                "{msg}; nothing more was replaced. fix: repair what is named, or re-run with \
                 --validation-timeout longer, or --fail-on-validate-error=false to go on regardless"
            );
        }
        tracing::warn!("{msg}; going on (--fail-on-validate-error=false)");
        progress.note(&format!("warning: {msg}"));
        Ok(())
    }

    /// Wait until every Node in `names` is Ready.
    pub(crate) async fn wait_ready(
        &self,
        names: &[String],
        progress: &Progress,
    ) -> anyhow::Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let phase = progress.phase(
            "Waiting for replacement nodes to be Ready",
            names.len() as u64,
        );
        for n in names {
            drain::wait_ready(
                &self.client,
                n,
                self.opts.validation_timeout,
                self.opts.poll,
            )
            .await?;
            phase.inc(1);
        }
        phase.finish(format!("{} replacement node(s) Ready", names.len()));
        Ok(())
    }

    /// Take `old` out of the cluster before its instance is deleted: cordon, drain, (control
    /// planes) remove its etcd member once `replacement` is a caught-up member, delete its Node.
    pub(crate) async fn take_out(
        &self,
        old: &Instance,
        role: Role,
        replacement: Option<&str>,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let node = old.name.as_str();
        self.cordon_and_drain(node, progress).await?;
        if role == Role::ControlPlane {
            self.remove_etcd_member(node, replacement, progress).await?;
        }
        self.delete_node(node).await
    }

    /// Cordon `node` and drain it through the Eviction API; with `fail_on_drain_error` off a
    /// failed drain is logged and the caller goes on.
    pub(crate) async fn cordon_and_drain(
        &self,
        node: &str,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        drain::cordon(&self.client, node).await?;
        let phase = progress.phase(&format!("Draining node {node}"), 0);
        let shown = phase.clone();
        let left = move |n: usize| {
            shown.shrink(u64::MAX);
            shown.grow(n as u64);
        };
        match drain::drain(&self.client, node, &self.opts.drain, &left).await {
            Ok(d) => phase.finish(format!(
                "node {node} drained: {} pod(s) evicted, {} eviction(s) refused by a disruption budget and retried",
                d.evicted, d.refused
            )),
            Err(e) if !self.opts.fail_on_drain_error => {
                phase.clear();
                tracing::warn!("{e}; deleting node {node} anyway (--fail-on-drain-error=false)");
                progress.note(&format!("warning: {e}; deleting node {node} anyway"));
            }
            Err(e) => {
                phase.clear();
                return Err(anyhow::Error::new(e).context(format!(
                    "node {node} stays cordoned and its instance is kept; fix: re-run when the pods can move, \
                     or pass --fail-on-drain-error=false to delete it anyway"
                )));
            }
        }
        Ok(())
    }

    /// Delete `node`'s Node object (absent is fine).
    pub(crate) async fn delete_node(&self, node: &str) -> anyhow::Result<()> {
        drain::delete_node(&self.client, node).await?;
        Ok(())
    }

    /// Stream a snapshot of control plane `node`'s etcd (`Maintenance.Snapshot`) to `dest`
    /// (0600) through a port-forward to its etcd pod; returns its size.
    pub(crate) async fn snapshot_etcd(
        &self,
        node: &str,
        dest: &std::path::Path,
    ) -> anyhow::Result<u64> {
        let secrets = crate::secrets::load(self.repo, &self.cluster).await?;
        let f = forward(&self.client, &etcd_pod(node)).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot reach control plane {node}'s etcd for a snapshot; nothing was replaced. \
                 fix: check `kprov validate cluster {}`, then re-run",
                self.cluster
            ))
        })?;
        let access = Access::from_ca(&secrets.etcd_ca, vec![f.endpoint.clone()])?;
        let mut etcd = Etcd::connect(&access).await?;
        Ok(etcd.snapshot(dest).await?)
    }

    /// Remove control plane `node`'s etcd member through port-forwards to the other control
    /// planes' etcd pods, after the checks of [`Etcd::remove_member`].
    async fn remove_etcd_member(
        &self,
        node: &str,
        replacement: Option<&str>,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let secrets = crate::secrets::load(self.repo, &self.cluster).await?;
        let mut forwards: Vec<(String, Forward)> = Vec::new();
        for m in self.target.machines().await? {
            if m.role == Role::ControlPlane && m.name != node {
                match forward(&self.client, &etcd_pod(&m.name)).await {
                    Ok(f) => forwards.push((m.name, f)),
                    Err(e) => tracing::debug!("no port-forward to {}: {e}", etcd_pod(&m.name)),
                }
            }
        }
        if forwards.is_empty() {
            anyhow::bail!(
                "cannot reach etcd of cluster {}: no other control plane's etcd pod answers a port-forward; \
                 control plane {node} is kept. fix: check `kprov validate cluster {}`, then re-run",
                self.cluster, self.cluster
            );
        }
        // ask through members that were there before this step (a replacement's etcd may
        // not serve yet); its own forward is only for checking that it caught up
        let established: Vec<String> = forwards
            .iter()
            .filter(|(n, _)| Some(n.as_str()) != replacement)
            .map(|(_, f)| f.endpoint.clone())
            .collect();
        let mut access = Access::from_ca(
            &secrets.etcd_ca,
            if established.is_empty() {
                forwards.iter().map(|(_, f)| f.endpoint.clone()).collect()
            } else {
                established
            },
        )?;
        access.member_endpoints = forwards
            .iter()
            .map(|(n, f)| (n.clone(), f.endpoint.clone()))
            .collect();
        // kubeadm adds the replacement's member after its kubelet registers the Node, and a
        // port-forward may drop: give both the validation timeout
        let deadline = tokio::time::Instant::now() + self.opts.validation_timeout;
        let removal = loop {
            let attempt = match Etcd::connect(&access).await {
                Ok(mut etcd) => etcd.remove_member(node, replacement).await,
                Err(e) => Err(e),
            };
            match attempt {
                Err(
                    e @ (EtcdError::ReplacementNotReady { .. }
                    | EtcdError::Connect { .. }
                    | EtcdError::Call { .. }),
                ) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("etcd member {node} not removable yet: {e}");
                    tokio::time::sleep(self.opts.poll).await;
                }
                other => break other,
            }
        };
        match removal.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "removing control plane {node}'s etcd member; the control plane is kept"
            ))
        })? {
            Removal::Removed(m) => {
                progress.note(&format!("etcd member {} ({:x}) removed", m.name, m.id))
            }
            Removal::AlreadyGone => tracing::info!("etcd member {node} already removed"),
        }
        Ok(())
    }
}
