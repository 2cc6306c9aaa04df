//! Node labels and taints: the ones kprov adds, which the kubelet may set on its own Node, and
//! who sets the rest.

use kprov_providers::{InstanceRequest, Role};
use serde::Serialize;

use super::{BootstrapError, Renderer};

/// Node label kprov gives NVIDIA GPU nodes through the kubelet; the device plugin selects it.
pub const GPU_NODE_LABEL: &str = "nvidia.com/gpu.present";
/// Node label naming the node's instance group.
pub const INSTANCE_GROUP_LABEL: &str = "kprov.io/instance-group";

/// Node labels as `(key, value)` pairs.
pub(super) type Labels = Vec<(String, String)>;

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Taint {
    key: String,
    value: Option<String>,
    effect: String,
}

/// May the kubelet set this label on its own Node (NodeRestriction admission)?
pub fn kubelet_may_set_label(key: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    ALLOWED.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

fn parse_taint(ig: &str, s: &str) -> Result<Taint, BootstrapError> {
    let bad = || {
        BootstrapError::InstanceGroup {
        instance_group: ig.into(),
        problem: format!("taint {s:?} is not key[=value]:Effect"),
        fix: "write taints like `dedicated=gpu:NoSchedule` (effects: NoSchedule, PreferNoSchedule, NoExecute)".into(),
    }
    };
    let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") || kv.is_empty() {
        return Err(bad());
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string()).filter(|v| !v.is_empty())),
        None => (kv.to_string(), None),
    };
    Ok(Taint {
        key,
        value,
        effect: effect.into(),
    })
}

impl Renderer {
    /// Labels the kubelet sets on the node (sorted `key=value` pairs) and its taints. Labels the
    /// kubelet may not set itself are left to the first control plane ([`Self::restricted_labels`]).
    pub(super) fn group_labels_taints(
        &self,
        req: &InstanceRequest,
    ) -> Result<(Labels, Vec<Taint>), BootstrapError> {
        let group = self
            .config
            .groups
            .iter()
            .find(|g| g.name() == req.instance_group);
        let mut self_set = vec![(INSTANCE_GROUP_LABEL.to_string(), req.instance_group.clone())];
        let mut taints = Vec::new();
        if let Some(g) = group {
            for (k, v) in &g.spec.labels {
                if kubelet_may_set_label(k) {
                    self_set.push((k.clone(), v.clone()));
                }
            }
            for t in &g.spec.taints {
                taints.push(parse_taint(g.name(), t)?);
            }
        }
        if Self::is_nvidia(req) {
            self_set.push((GPU_NODE_LABEL.to_string(), "true".into()));
        }
        if req.role == Role::ControlPlane
            && !taints.is_empty()
            && !taints
                .iter()
                .any(|t| t.key == "node-role.kubernetes.io/control-plane")
        {
            // Custom taints replace kubeadm's default; keep the control-plane taint.
            taints.insert(
                0,
                Taint {
                    key: "node-role.kubernetes.io/control-plane".into(),
                    value: None,
                    effect: "NoSchedule".into(),
                },
            );
        }
        self_set.sort();
        self_set.dedup_by(|a, b| a.0 == b.0);
        Ok((self_set, taints))
    }

    /// `NODE key=value` lines for labels the kubelet may not set itself, applied by the first
    /// control plane as the nodes appear.
    pub(super) fn restricted_labels(&self) -> String {
        let mut s = String::new();
        for g in &self.config.groups {
            let restricted: Vec<_> = g
                .spec
                .labels
                .iter()
                .filter(|(k, _)| !kubelet_may_set_label(k))
                .collect();
            for i in 0..g.spec.count.max(0) as u32 {
                for (k, v) in &restricted {
                    s.push_str(&format!(
                        "{} {k}={v}\n",
                        crate::plan::instance_name(self.config.name(), g.name(), i)
                    ));
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_label_rules() {
        assert!(kubelet_may_set_label("gpu"));
        assert!(kubelet_may_set_label("example.com/team"));
        assert!(kubelet_may_set_label("node.kubernetes.io/instance-type"));
        assert!(kubelet_may_set_label("foo.node.kubernetes.io/x"));
        assert!(!kubelet_may_set_label("node-role.kubernetes.io/gpu"));
        assert!(!kubelet_may_set_label("x.k8s.io/y"));
    }

    #[test]
    fn taints_parse() {
        assert_eq!(
            parse_taint("g", "a=b:NoSchedule").unwrap(),
            Taint {
                key: "a".into(),
                value: Some("b".into()),
                effect: "NoSchedule".into()
            }
        );
        assert_eq!(parse_taint("g", "a:NoExecute").unwrap().value, None);
        assert!(parse_taint("g", "a=b").is_err());
        assert!(parse_taint("g", "a:Sometimes").is_err());
    }
}
