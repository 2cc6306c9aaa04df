//! Deleting a cluster: what it owns (found by tag in its cloud, plus its state objects), and
//! removing all of it, cloud first, state last, so a killed delete can always be run again.

use std::sync::Arc;
use std::time::Duration;

use kprov_providers::{Cloud, Resource};

use crate::apply::{self, Settings};
use crate::repo::Repo;
use crate::report::Progress;

/// What a cluster owns.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Cloud resources tagged with the cluster, sorted by kind (deletion order) then name.
    pub resources: Vec<Resource>,
    /// Objects under the cluster's prefix in the state store.
    pub state_objects: usize,
    /// The state store's URL, for messages.
    pub store_url: String,
}

/// A cluster about to be deleted: its stored spec was found and its cloud answers. Made before
/// the lock is taken, so a missing cluster or an unreachable cloud changes nothing at all.
pub struct Target {
    name: String,
    cloud: Arc<dyn Cloud>,
}

/// Find cluster `name` in the store and connect to its cloud.
pub async fn target(repo: &Repo, name: &str) -> anyhow::Result<Target> {
    let stored = repo.require(name).await?;
    let cloud = crate::cloud::connect(name, &stored.config.cluster.spec).await?;
    Ok(Target {
        name: name.to_string(),
        cloud,
    })
}

impl Target {
    /// List what the cluster owns, changing nothing.
    pub async fn inventory(&self, repo: &Repo) -> anyhow::Result<Inventory> {
        let name = &self.name;
        let mut resources = self.cloud.list_resources(name).await?;
        resources.sort_by(|x, y| x.kind.cmp(&y.kind).then(x.name.cmp(&y.name)));
        let keys = repo.store.list(&format!("{name}/")).await?;
        Ok(Inventory {
            resources,
            state_objects: keys.len(),
            store_url: repo.store.url(),
        })
    }

    /// Delete everything the cluster owns: every cloud resource found by its tag, in dependency
    /// order, in passes until nothing is left or `wait` expires; then its state objects. The
    /// caller holds the cluster's lock.
    pub async fn delete(
        self,
        repo: &Repo,
        wait: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Deleted> {
        let settings = Settings {
            concurrency: self.cloud.default_concurrency(),
            ..Default::default()
        };
        let resources =
            apply::delete_all(self.cloud, &self.name, &settings, wait, progress).await?;
        let state_objects = repo.delete_cluster(&self.name).await?;
        Ok(Deleted {
            resources,
            state_objects,
        })
    }
}

/// What a delete removed.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    /// Cloud resources deleted.
    pub resources: usize,
    /// State objects deleted.
    pub state_objects: usize,
}
