//! Typed access to a cluster's objects in the state store.
//!
//! Layout per cluster (see `docs/state.md`): `NAME/config.yaml` (the Cluster document),
//! `NAME/instancegroup/IG.yaml`, `NAME/history/GEN.yaml` (every spec generation, all documents),
//! `NAME/pki/…`, `NAME/secrets/…`, `NAME/lock`, `NAME/journal/…`.
//!
//! A spec write is several objects, and a crash can stop it half-way. The order makes that
//! harmless: `history/GEN.yaml` (complete, new generation) first, then the instance-group
//! objects, then `config.yaml` by compare-and-swap last. Readers take the generation from
//! `config.yaml` and read that generation's complete snapshot from `history/`, so they always see
//! the old or the new spec, never a mix.

use std::sync::Arc;

use kprov_state::{Condition, StateError, StateStore, Version};

use crate::spec::load::Source;
use crate::spec::{load_documents, Cluster, ClusterConfig, LoadedSpec, SpecErrors};

/// Errors reading or writing cluster objects.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stored spec does not parse (someone edited it by hand, or a newer kprov wrote it).
    #[error(
        "the stored spec of cluster {cluster} in {store} is invalid (edited by hand, or written by a newer kprov):\n{errors}\n\
         fix: repair the object named above in the store, or write a new generation over it with \
         `kprov --state {store} create -f CLUSTER.yaml --replace` (every generation is kept under {cluster}/history/)"
    )]
    Corrupt {
        /// The cluster the error is about.
        cluster: String,
        /// Store URL.
        store: String,
        /// What is wrong with the stored spec, located in it.
        errors: SpecErrors,
    },
    /// The cluster does not exist.
    #[error("cluster {cluster:?} not found in {store}; list clusters with `kprov get clusters`, or create it with `kprov create cluster {cluster} --provider ...`")]
    NotFound {
        /// The cluster the error is about.
        cluster: String,
        /// Store URL.
        store: String,
    },
    /// The cluster exists already.
    #[error("cluster {cluster:?} already exists in {store}; use `kprov create -f FILE --replace` to replace its spec, or `kprov delete cluster {cluster} --yes` first")]
    Exists {
        /// The cluster the error is about.
        cluster: String,
        /// Store URL.
        store: String,
    },
}

/// A cluster spec as stored, with the version to compare-and-swap against.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The spec.
    pub config: ClusterConfig,
    /// Its generation.
    pub generation: u64,
    /// Version of `config.yaml`.
    pub version: Version,
}

/// Cluster objects in a state store.
#[derive(Clone)]
pub struct Repo {
    /// The store.
    pub store: Arc<dyn StateStore>,
}

/// Key of a cluster's config object.
pub fn config_key(cluster: &str) -> String {
    format!("{cluster}/config.yaml")
}

impl Repo {
    /// Wrap a store.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Repo { store }
    }

    /// Names of all clusters in the store.
    pub async fn clusters(&self) -> Result<Vec<String>, RepoError> {
        let keys = self.store.list("").await?;
        Ok(keys
            .iter()
            .filter_map(|k| k.strip_suffix("/config.yaml"))
            .filter(|n| !n.contains('/'))
            .map(str::to_string)
            .collect())
    }

    /// Load a cluster, or `None` if absent.
    pub async fn load(&self, cluster: &str) -> Result<Option<Stored>, RepoError> {
        let key = config_key(cluster);
        let Some(obj) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&obj.bytes).into_owned();
        let docs = load_documents(&key, &text).map_err(|errors| RepoError::Corrupt {
            cluster: cluster.into(),
            store: self.store.url(),
            errors,
        })?;
        let Some((c, _)) = docs.clusters.into_iter().next() else {
            return Err(RepoError::Corrupt {
                cluster: cluster.into(),
                store: self.store.url(),
                errors: SpecErrors(vec![crate::spec::SpecError {
                    at: crate::spec::Where::Store(key.clone()),
                    field: "kind".into(),
                    problem: "no Cluster document".into(),
                    fix: "restore the object from the store's history or re-create the cluster"
                        .into(),
                }]),
            });
        };
        let generation = c.metadata.generation.unwrap_or(0);
        let snap_key = format!("{cluster}/history/{generation}.yaml");
        let groups = match self.store.get(&snap_key).await? {
            Some(snap) => {
                let text = String::from_utf8_lossy(&snap.bytes).into_owned();
                let docs =
                    load_documents(&snap_key, &text).map_err(|errors| RepoError::Corrupt {
                        cluster: cluster.into(),
                        store: self.store.url(),
                        errors,
                    })?;
                docs.groups.into_iter().map(|(g, _)| g).collect()
            }
            None => {
                // No snapshot (hand-made store): fall back to the instance-group objects.
                let mut groups = Vec::new();
                for k in self
                    .store
                    .list(&format!("{cluster}/instancegroup/"))
                    .await?
                {
                    if let Some(o) = self.store.get(&k).await? {
                        let text = String::from_utf8_lossy(&o.bytes).into_owned();
                        let docs =
                            load_documents(&k, &text).map_err(|errors| RepoError::Corrupt {
                                cluster: cluster.into(),
                                store: self.store.url(),
                                errors,
                            })?;
                        groups.extend(docs.groups.into_iter().map(|(g, _)| g));
                    }
                }
                groups
            }
        };
        let mut config = ClusterConfig { cluster: c, groups };
        config
            .groups
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(Some(Stored {
            config,
            generation,
            version: obj.version,
        }))
    }

    /// Load a cluster or fail with a helpful "not found".
    pub async fn require(&self, cluster: &str) -> Result<Stored, RepoError> {
        self.load(cluster)
            .await?
            .ok_or_else(|| RepoError::NotFound {
                cluster: cluster.into(),
                store: self.store.url(),
            })
    }

    /// Re-validate a stored spec (positions point at the store key).
    pub fn as_loaded(&self, stored: &Stored) -> LoadedSpec {
        LoadedSpec::from_config(
            stored.config.clone(),
            Source::Store(config_key(stored.config.name())),
        )
    }

    /// Write a spec. `previous` is the version read before (compare-and-swap), or `None` to
    /// create a new cluster (fails if it exists). Returns the new stored state.
    pub async fn save(
        &self,
        config: &ClusterConfig,
        previous: Option<&Stored>,
    ) -> Result<Stored, RepoError> {
        let name = config.name().to_string();
        let generation = previous.map(|p| p.generation + 1).unwrap_or(1);
        if previous.is_none() && self.store.get(&config_key(&name)).await?.is_some() {
            return Err(RepoError::Exists {
                cluster: name,
                store: self.store.url(),
            });
        }
        let mut config = config.clone();
        config.cluster.metadata.generation = Some(generation);
        for g in &mut config.groups {
            g.metadata.generation = Some(generation);
        }
        // 1. the complete snapshot of the new generation
        self.store
            .put(
                &format!("{name}/history/{generation}.yaml"),
                config.to_yaml().as_bytes(),
                Condition::None,
            )
            .await?;
        // 2. instance-group objects (a convenience view; readers use the snapshot)
        let wanted: Vec<String> = config
            .groups
            .iter()
            .map(|g| format!("{name}/instancegroup/{}.yaml", g.metadata.name))
            .collect();
        for (g, key) in config.groups.iter().zip(&wanted) {
            let text = serde_yaml::to_string(g).expect("spec serialises");
            self.store
                .put(key, text.as_bytes(), Condition::None)
                .await?;
        }
        // 3. the switch: config.yaml, compare-and-swap
        let cond = match previous {
            Some(p) => Condition::IfVersion(p.version.clone()),
            None => Condition::IfAbsent,
        };
        let text = serde_yaml::to_string(&config.cluster).expect("spec serialises");
        let version = match self
            .store
            .put(&config_key(&name), text.as_bytes(), cond)
            .await
        {
            Ok(v) => v,
            Err(StateError::Conflict { .. }) if previous.is_none() => {
                return Err(RepoError::Exists {
                    cluster: name,
                    store: self.store.url(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        for k in self.store.list(&format!("{name}/instancegroup/")).await? {
            if !wanted.contains(&k) {
                self.store.delete(&k, Condition::None).await?;
            }
        }
        Ok(Stored {
            config,
            generation,
            version,
        })
    }

    /// Remove what an interrupted `delete` left under a cluster name whose `config.yaml` is
    /// gone (its state is deleted config first): a new cluster of that name must not inherit
    /// half of the old one's secrets (a `sa.pub` without its `sa.key` would stop it, an old CA
    /// key would be reused). The lock is kept (its holder releases it). Returns the objects
    /// removed; nothing when the cluster exists.
    pub async fn clear_leftovers(&self, cluster: &str) -> Result<usize, RepoError> {
        if self.store.get(&config_key(cluster)).await?.is_some() {
            return Ok(0);
        }
        let lock = kprov_state::lease::lease_key(cluster);
        let mut n = 0;
        for k in self.store.list(&format!("{cluster}/")).await? {
            if k != lock {
                self.store.delete(&k, Condition::None).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Delete every object of a cluster except its lock (released by its holder).
    pub async fn delete_cluster(&self, cluster: &str) -> Result<usize, RepoError> {
        let keys = self.store.list(&format!("{cluster}/")).await?;
        let lock = kprov_state::lease::lease_key(cluster);
        // config.yaml first: from then on the cluster no longer "exists", even if we stop here.
        let cfg = config_key(cluster);
        let mut n = 0;
        if keys.contains(&cfg) {
            self.store.delete(&cfg, Condition::None).await?;
            n += 1;
        }
        for k in keys.iter().filter(|k| **k != lock && **k != cfg) {
            self.store.delete(k, Condition::None).await?;
            n += 1;
        }
        Ok(n)
    }
}

/// Name of the cluster a Cluster document names (helper for messages).
pub fn cluster_name(c: &Cluster) -> &str {
    &c.metadata.name
}
