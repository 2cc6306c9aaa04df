//! Storing specs: a new cluster, a replaced spec, instance groups added to a stored cluster. A
//! spec is validated before it is stored and the cluster's secrets (CAs, bootstrap token) are
//! made complete right after, so a stored cluster always has what its nodes need.

use crate::error::ExitError;
use crate::repo::{config_key, Repo, RepoError, Stored};
use crate::spec::load::Source;
use crate::spec::{self, InstanceGroup, LoadedSpec};

/// Store `spec` (validated) as a new cluster (`previous: None`, refused with exit 2 when one of
/// that name exists) or as the next generation after `previous`, then ensure its secrets.
pub async fn store(
    repo: &Repo,
    spec: &LoadedSpec,
    previous: Option<&Stored>,
) -> anyhow::Result<Stored> {
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
