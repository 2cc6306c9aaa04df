//! `validate cluster`: whether the cluster works, as kops decides it — every instance of the
//! cloud a Ready Node, control-plane and system pods Ready (see [`crate::k8s::validate`]) —
//! optionally waiting until it does. Rolling updates validate between steps with the same code.

use std::time::Duration;

use kprov_providers::{Role, TAG_ROLE};

use crate::k8s::validate::{Machine, Validation};
use crate::repo::Repo;
use crate::report::Progress;

use super::access::{api_client, ApiAccess};

/// How often a waiting validation asks again.
pub const VALIDATE_POLL: Duration = Duration::from_secs(2);

/// The instances the cloud holds for cluster `name`, as the Nodes validation expects.
pub async fn machines(repo: &Repo, name: &str) -> anyhow::Result<Vec<Machine>> {
    let stored = repo.require(name).await?;
    let cloud = crate::cloud::connect(name, &stored.config.cluster.spec).await?;
    let list = cloud
        .list_instances(name)
        .await
        .map_err(|e| anyhow::anyhow!("listing the instances of cluster {name}: {e}"))?;
    Ok(list
        .into_iter()
        .map(|i| Machine {
            role: if i.tags.get(TAG_ROLE).map(String::as_str) == Some(Role::ControlPlane.as_str()) {
                Role::ControlPlane
            } else {
                Role::Node
            },
            group: i.instance_group().unwrap_or("-").to_string(),
            name: i.name,
        })
        .collect())
}

/// Validate cluster `name` once per `poll` until it is valid or `wait` has passed; returns the
/// last validation (valid or not). API errors while waiting count as "not yet" (an API server
/// still starting); after the wait the last one is returned as the error.
pub async fn validate(
    repo: &Repo,
    name: &str,
    access: &ApiAccess,
    wait: Duration,
    poll: Duration,
    progress: &Progress,
) -> anyhow::Result<Validation> {
    let deadline = tokio::time::Instant::now() + wait;
    let phase = (!wait.is_zero()).then(|| progress.phase(&format!("Validating cluster {name}"), 0));
    let result = loop {
        let attempt = async {
            let client = api_client(repo, name, access).await?;
            let machines = machines(repo, name).await?;
            Ok::<_, anyhow::Error>(crate::k8s::validate::validate(&client, &machines).await?)
        }
        .await;
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
