//! The tera templates under `templates/`, compiled into the binary and parsed once.

use std::sync::OnceLock;

use tera::Tera;

use super::BootstrapError;

/// Every template, by name (its path under `templates/`).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "cloud-config.yaml.tera",
        include_str!("../../templates/cloud-config.yaml.tera"),
    ),
    (
        "bootstrap.sh.tera",
        include_str!("../../templates/bootstrap.sh.tera"),
    ),
    (
        "containerd.service.tera",
        include_str!("../../templates/containerd.service.tera"),
    ),
    (
        "kubeadm-init.yaml.tera",
        include_str!("../../templates/kubeadm-init.yaml.tera"),
    ),
    (
        "kubeadm-join.yaml.tera",
        include_str!("../../templates/kubeadm-join.yaml.tera"),
    ),
    (
        "node-registration.yaml.tera",
        include_str!("../../templates/node-registration.yaml.tera"),
    ),
    (
        "containerd-config.toml.tera",
        include_str!("../../templates/containerd-config.toml.tera"),
    ),
    (
        "kubelet.service.tera",
        include_str!("../../templates/kubelet.service.tera"),
    ),
    (
        "kubelet-10-kubeadm.conf.tera",
        include_str!("../../templates/kubelet-10-kubeadm.conf.tera"),
    ),
    (
        "manifests/flannel.yaml.tera",
        include_str!("../../templates/manifests/flannel.yaml.tera"),
    ),
    (
        "manifests/calico.yaml.tera",
        include_str!("../../templates/manifests/calico.yaml.tera"),
    ),
    (
        "manifests/metallb.yaml.tera",
        include_str!("../../templates/manifests/metallb.yaml.tera"),
    ),
    (
        "manifests/metallb-config.yaml.tera",
        include_str!("../../templates/manifests/metallb-config.yaml.tera"),
    ),
    (
        "manifests/dashboard.yaml.tera",
        include_str!("../../templates/manifests/dashboard.yaml.tera"),
    ),
    (
        "manifests/nfs-provisioner.yaml.tera",
        include_str!("../../templates/manifests/nfs-provisioner.yaml.tera"),
    ),
    (
        "manifests/nvidia-device-plugin.yaml.tera",
        include_str!("../../templates/manifests/nvidia-device-plugin.yaml.tera"),
    ),
    (
        "static-pods/kube-vip.yaml.tera",
        include_str!("../../templates/static-pods/kube-vip.yaml.tera"),
    ),
];

/// The error chain of a tera error as one line (tera's own message is only "Failed to render").
pub fn describe(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// The parsed templates (parsed on first use).
pub fn tera() -> Result<&'static Tera, BootstrapError> {
    static TERA: OnceLock<Result<Tera, String>> = OnceLock::new();
    let parsed = TERA.get_or_init(|| {
        let mut t = Tera::default();
        t.autoescape_on(vec![]);
        t.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| describe(&e))?;
        Ok(t)
    });
    parsed.as_ref().map_err(|message| BootstrapError::Template {
        name: "templates/".into(),
        message: message.clone(),
    })
}

/// Render one template (without the blank lines a leading `{# comment #}` leaves).
pub fn render(name: &str, ctx: &tera::Context) -> Result<String, BootstrapError> {
    let out = tera()?
        .render(name, ctx)
        .map_err(|e| BootstrapError::Template {
            name: name.into(),
            message: describe(&e),
        })?;
    Ok(out.trim_start_matches('\n').to_string())
}

/// A shell script without its comment lines, except the header block at the top and the
/// `# --- kprov:` markers: comments would cost user-data bytes on every node (EC2 allows 16 KiB).
pub fn strip_shell_comments(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut header = true;
    for line in script.lines() {
        let t = line.trim_start();
        let comment = t.starts_with('#');
        if !comment {
            header = false;
        }
        if comment && !header && !t.starts_with("# --- kprov:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
