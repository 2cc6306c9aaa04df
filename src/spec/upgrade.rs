//! A change to a stored spec that is valid on its own but not as a step from the stored one:
//! the Kubernetes version, against kubeadm's version skew policy.

use super::error::{SpecError, SpecErrors};
use super::load::LoadedSpec;
use super::versions;

/// A change of `kubernetesVersion` from the stored spec's, against kubeadm's skew policy: no
/// downgrade, and at most one minor version at a time (control planes first, then nodes: the
/// order `rolling-update` keeps).
pub fn check_upgrade(spec: &LoadedSpec, stored_version: &str) -> Result<(), SpecErrors> {
    let new = &spec.config.cluster.spec.kubernetes_version;
    let parse = |v: &str| -> Option<(u32, u32, u32)> {
        let mut it = v.trim_start_matches('v').split('.').map(|p| p.parse().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    let (Some(from), Some(to)) = (parse(stored_version), parse(new)) else {
        return Ok(()); // an unsupported version is validate()'s error
    };
    let problem = if to < from {
        Some((
            format!("{new} is a downgrade from the cluster's {stored_version}"),
            format!("kubeadm cannot downgrade a cluster; keep kubernetesVersion: {stored_version} (or a later patch)"),
        ))
    } else if to.0 != from.0 || to.1 > from.1 + 1 {
        let next = versions::supported()
            .into_iter()
            .filter(|v| parse(v).is_some_and(|p| p.0 == from.0 && p.1 == from.1 + 1))
            .max_by_key(|v| parse(v))
            .unwrap_or("the next minor version");
        Some((
            format!("{stored_version} to {new} skips a minor version"),
            format!("upgrade one minor at a time: set kubernetesVersion: {next}, run `kprov update cluster --yes` and `kprov rolling-update cluster --yes`, then continue to {new}"),
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some((what, fix)) => Err(SpecErrors(vec![SpecError {
            at: spec.cluster_src.locate("spec.kubernetesVersion"),
            field: "spec.kubernetesVersion".into(),
            problem: what,
            fix,
        }])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(version: &str) -> LoadedSpec {
        let yaml = format!("apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  provider: {{zstack: {{endpoint: \"http://127.0.0.1:9\"}}}}\n  kubernetesVersion: {version}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: cp}}\nspec: {{role: control-plane, count: 1}}\n");
        let docs = super::super::load_documents("c.yaml", &yaml).unwrap();
        let (c, src) = docs.clusters.into_iter().next().unwrap();
        let (groups, group_srcs) = docs.groups.into_iter().unzip();
        LoadedSpec {
            config: super::super::ClusterConfig { cluster: c, groups },
            cluster_src: src,
            group_srcs,
        }
    }

    #[test]
    fn one_minor_or_a_patch_at_a_time_and_never_down() {
        assert!(check_upgrade(&spec("1.32.13"), "1.31.14").is_ok());
        assert!(check_upgrade(&spec("1.33.13"), "1.33.13").is_ok());
        assert!(check_upgrade(&spec("1.33.13"), "1.33.1").is_ok());
        let e = check_upgrade(&spec("1.33.13"), "1.31.14").unwrap_err();
        assert!(e.0[0].problem.contains("skips a minor"), "{e}");
        assert!(e.0[0].fix.contains("set kubernetesVersion: 1.32.13"), "{e}");
        assert!(
            matches!(e.0[0].at, super::super::Where::File { line: 6, .. }),
            "{e}"
        );
        let e = check_upgrade(&spec("1.31.14"), "1.32.13").unwrap_err();
        assert!(e.0[0].problem.contains("downgrade"), "{e}");
    }
}
