//! `validate cluster`: whether the cluster works, as kops decides it — every instance of the
//! cloud a Ready Node, control-plane and system pods Ready (see [`crate::k8s::validate`]) —
//! optionally waiting until it does. Rolling updates validate between steps with the same code,
//! leaving out the instances they are taking out of the cluster.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kprov_providers::{Cloud, Role, TAG_ROLE};

use crate::k8s::validate::{Machine, Validation};
use crate::repo::Repo;
use crate::report::Progress;

use super::access::{api_client, ApiAccess};

/// How often a waiting validation asks again.
pub const VALIDATE_POLL: Duration = Duration::from_secs(2);

/// A cluster to validate: its API client and its cloud, connected once and reused by every
/// poll (a cloud session per poll would exhaust ZStack's session limit on a long wait).
pub struct Target {
    /// The cluster's name.
    pub name: String,
    /// Its API server.
    pub client: kube::Client,
    /// Its cloud.
    pub cloud: Arc<dyn Cloud>,
    /// Instances (and their Nodes) left out: those a rolling update is taking out.
    pub leaving: BTreeSet<String>,
}

impl Target {
    /// Connect to cluster `name`'s API server (as `access` says) and cloud.
    pub async fn connect(repo: &Repo, name: &str, access: &ApiAccess) -> anyhow::Result<Target> {
        let stored = repo.require(name).await?;
        let cloud = crate::cloud::connect(name, &stored.config.cluster.spec).await?;
        let client = api_client(repo, name, access).await?;
        Ok(Target {
            name: name.to_string(),
            client,
            cloud,
            leaving: BTreeSet::new(),
        })
    }

    /// The instances the cloud holds for the cluster, as the Nodes validation expects.
    pub async fn machines(&self) -> anyhow::Result<Vec<Machine>> {
        let name = &self.name;
        let list = self
            .cloud
            .list_instances(name)
            .await
            .map_err(|e| anyhow::anyhow!("listing the instances of cluster {name}: {e}"))?;
        Ok(list
            .into_iter()
            .map(|i| Machine {
                role: if i.tags.get(TAG_ROLE).map(String::as_str)
                    == Some(Role::ControlPlane.as_str())
                {
                    Role::ControlPlane
                } else {
                    Role::Node
                },
                group: i.instance_group().unwrap_or("-").to_string(),
                name: i.name,
            })
            .collect())
    }

    /// Validate once.
    pub async fn validate_once(&self) -> anyhow::Result<Validation> {
        let machines: Vec<Machine> = self
            .machines()
            .await?
            .into_iter()
            .filter(|m| !self.leaving.contains(&m.name))
            .collect();
        Ok(crate::k8s::validate::validate(&self.client, &machines, &self.leaving).await?)
    }

    /// Validate once per `poll` until the cluster is valid or `wait` has passed; returns the
    /// last validation (valid or not). Errors while waiting count as "not yet" (an API server
    /// still starting); after the wait the last one is returned as the error.
    pub async fn validate(
        &self,
        wait: Duration,
        poll: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Validation> {
        let name = &self.name;
        let deadline = tokio::time::Instant::now() + wait;
        let phase =
            (!wait.is_zero()).then(|| progress.phase(&format!("Validating cluster {name}"), 0));
        let result = loop {
            let attempt = self.validate_once().await;
            let last = tokio::time::Instant::now() >= deadline;
            match attempt {
                Ok(v) if v.is_valid() || last => break Ok(v),
                Err(e) if last => break Err(e),
                Ok(v) => tracing::info!(
                    "cluster {name} is not valid yet: {} failure(s), first: {}",
                    v.failures.len(),
                    v.failures.first().map_or("", |f| f.message.as_str())
                ),
                Err(e) => tracing::debug!("validating cluster {name}: {e:#}"),
            }
            tokio::time::sleep(poll).await;
        };
        if let Some(p) = phase {
            p.clear();
        }
        result
    }
}

/// Validate cluster `name` (see [`Target::validate`]).
pub async fn validate(
    repo: &Repo,
    name: &str,
    access: &ApiAccess,
    wait: Duration,
    poll: Duration,
    progress: &Progress,
) -> anyhow::Result<Validation> {
    Target::connect(repo, name, access)
        .await?
        .validate(wait, poll, progress)
        .await
}
