//! Storing specs: a new cluster, a replaced spec, instance groups added to a stored cluster. A
//! spec is validated before it is stored and the cluster's secrets (CAs, bootstrap token) are
//! made complete right after, so a stored cluster always has what its nodes need.

use crate::error::ExitError;
use crate::repo::{config_key, Repo, RepoError, Stored};
use crate::spec::load::Source;
use crate::spec::{self, InstanceGroup, LoadedSpec};

/// Store `spec` (validated) as a new cluster (`previous: None`, refused with exit 2 when one of
/// that name exists) or as the next generation after `previous` (a Kubernetes version change
/// must follow kubeadm's skew policy), then ensure its secrets.
pub async fn store(
    repo: &Repo,
    spec: &LoadedSpec,
    previous: Option<&Stored>,
) -> anyhow::Result<Stored> {
    if let Some(prev) = previous {
        spec::upgrade::check_upgrade(spec, &prev.config.cluster.spec.kubernetes_version)?;
    }
    if previous.is_none() {
        let n = repo.clear_leftovers(spec.config.name()).await?;
        if n > 0 {
            tracing::info!(
                "removed {n} objects an interrupted delete of cluster {} left behind",
                spec.config.name()
            );
        }
    }
    let stored = repo
        .save(&spec.config, previous)
        .await
        .map_err(|e| match e {
            RepoError::Exists { .. } => ExitError::usage(e.to_string()),
            e => e.into(),
        })?;
    crate::secrets::ensure(repo, &stored.config).await?;
    Ok(stored)
}

/// The stored cluster `prev` with `groups` added; same-named groups are replaced only with
/// `replace` (else exit 2 naming the group). The result is validated: errors in the new groups
/// point at their sources (file:line, flags), errors in the kept ones at the store.
pub fn with_groups(
    prev: &Stored,
    groups: Vec<(InstanceGroup, Source)>,
    replace: bool,
) -> anyhow::Result<LoadedSpec> {
    let name = prev.config.name();
    let mut all = prev.config.clone();
    for (g, _) in &groups {
        let exists = all
            .groups
            .iter()
            .any(|x| x.metadata.name == g.metadata.name);
        if exists && !replace {
            return Err(ExitError::usage(format!(
                "instance group {:?} already exists in cluster {name}; add --replace to replace it",
                g.metadata.name
            )));
        }
        all.groups.retain(|x| x.metadata.name != g.metadata.name);
    }
    let src = Source::Store(config_key(name));
    let mut group_srcs: Vec<Source> = all.groups.iter().map(|_| src.clone()).collect();
    for (g, s) in groups {
        all.groups.push(g);
        group_srcs.push(s);
    }
    let mut spec = LoadedSpec {
        config: all,
        cluster_src: src,
        group_srcs,
    };
    spec::validate(&mut spec)?;
    Ok(spec)
}

/// What `kprov edit` edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The Cluster document.
    Cluster,
    /// One InstanceGroup document, by name.
    Group(String),
}

/// The stored cluster `prev` with the edited document `text` (the user's file `file`) in
/// place of the one `what` names, validated: errors point at the file's lines. Renaming (the
/// cluster or the group) and other documents in the file are refused.
pub fn edited(prev: &Stored, what: &Edited, file: &str, text: &str) -> anyhow::Result<LoadedSpec> {
    let docs = spec::load_documents(file, text)?;
    let name = prev.config.name();
    match what {
        Edited::Cluster => {
            let [(cluster, src)]: [_; 1] = docs.clusters.try_into().map_err(|v: Vec<_>| {
                ExitError::usage(format!(
                    "{file}: {} Cluster documents; fix: keep exactly the one of cluster {name}",
                    v.len()
                ))
            })?;
            if !docs.groups.is_empty() || cluster.metadata.name != name {
                return Err(ExitError::usage(format!(
                    "{file}: edit cluster {name} changes only its Cluster document, keeping the name {name:?}; fix: undo the rename (or other documents), use `kprov edit instancegroup` for groups"
                )));
            }
            let group_srcs = prev
                .config
                .groups
                .iter()
                .map(|_| Source::Store(config_key(name)))
                .collect();
            let mut spec = LoadedSpec {
                config: spec::ClusterConfig {
                    cluster,
                    groups: prev.config.groups.clone(),
                },
                cluster_src: src,
                group_srcs,
            };
            spec::validate(&mut spec)?;
            // here too, so the editor re-opens with it
            spec::upgrade::check_upgrade(&spec, &prev.config.cluster.spec.kubernetes_version)?;
            Ok(spec)
        }
        Edited::Group(g) => {
            let renamed = docs.groups.len() != 1
                || !docs.clusters.is_empty()
                || docs.groups[0].0.metadata.name != *g;
            if renamed {
                return Err(ExitError::usage(format!(
                    "{file}: edit instancegroup {g} changes only that InstanceGroup document, keeping its name; fix: undo the rename (or other documents), use `kprov create instancegroup` for a new group"
                )));
            }
            with_groups(prev, docs.groups, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delete killed after `config.yaml` went and before `sa.key`'s partner `sa.pub` did
    /// leaves `sa.pub` alone: creating the cluster again starts clean and gets a working PKI.
    #[tokio::test]
    async fn a_new_cluster_does_not_inherit_an_interrupted_deletes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let state = kprov_state::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        let repo = Repo::new(state);
        let yaml = "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\nspec:\n  provider: {zstack: {endpoint: \"http://127.0.0.1:9\"}}\n  kubernetesVersion: 1.33.13\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {name: control-plane}\nspec: {role: control-plane, count: 1, arch: amd64}\n";
        let docs = spec::load_documents("c1.yaml", yaml).unwrap();
        let (c, src) = docs.clusters.into_iter().next().unwrap();
        let (groups, group_srcs) = docs.groups.into_iter().unzip();
        let mut spec = LoadedSpec {
            config: spec::ClusterConfig { cluster: c, groups },
            cluster_src: src,
            group_srcs,
        };
        spec::validate(&mut spec).unwrap();
        store(&repo, &spec, None).await.unwrap();
        // the interrupted delete: config first, then everything up to sa.key
        let keys = repo.store.list("c1/").await.unwrap();
        repo.store
            .delete(&config_key("c1"), kprov_state::Condition::None)
            .await
            .unwrap();
        for k in keys
            .iter()
            .filter(|k| **k <= crate::secrets::keys::sa_key("c1"))
        {
            repo.store
                .delete(k, kprov_state::Condition::None)
                .await
                .unwrap();
        }
        assert!(repo
            .store
            .get(&crate::secrets::keys::sa_pub("c1"))
            .await
            .unwrap()
            .is_some());
        store(&repo, &spec, None)
            .await
            .expect("a new cluster of the name starts clean");
    }
}
