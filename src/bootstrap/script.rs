//! `bootstrap.sh`, the script cloud-init runs, and `bootstrap.env`, its settings: which
//! binaries it downloads (with their SHA-256) and what it does with kubeadm.

use kprov_providers::InstanceRequest;
use serde::Serialize;

use super::{
    file_name_of, templates, yaml, BootstrapError, NodeAction, Renderer, LOG_PATH, NVIDIA_RUNTIME,
};
use crate::assets;

/// One download of `bootstrap.sh`: where from (the mirror when set), where to, the SHA-256 it
/// must have, for archives where to unpack which members, and for the container runtime the
/// shell condition under which it is installed at all and what follows the install.
#[derive(Serialize)]
struct BinaryCtx {
    url: String,
    dest: String,
    sha256: String,
    archive: bool,
    extract_to: String,
    members: String,
    when: &'static str,
    then: &'static str,
}

/// When the runtime binaries are installed, and what follows: containerd only when the image
/// has none of a version kprov's config suits (`kprov_image_containerd`), then its systemd unit;
/// runc only when the image has none.
fn runtime_rule(name: &str) -> (&'static str, &'static str) {
    match name {
        "containerd" => ("! kprov_image_containerd", "kprov_containerd_unit"),
        "runc" => ("! command -v runc >/dev/null 2>&1", ""),
        _ => ("", ""),
    }
}

impl Renderer {
    fn binaries(&self, req: &InstanceRequest) -> Vec<BinaryCtx> {
        let bin = &self.options.bin_dir;
        let a = &self.config.cluster.spec.assets;
        self.release
            .files_for(assets::runtime_from_file_repository(a))
            .map(|b| {
                let upstream = b.url_for(req.arch);
                let file = file_name_of(&upstream).to_string();
                let (dest, extract_to, members) = match (b.archive, b.name) {
                    (true, "crictl") => (
                        format!("/var/cache/kprov/{file}"),
                        bin.clone(),
                        "crictl".to_string(),
                    ),
                    (true, "cni-plugins") => (
                        format!("/var/cache/kprov/{file}"),
                        "/opt/cni/bin".to_string(),
                        String::new(),
                    ),
                    (true, "containerd") => (
                        format!("/var/cache/kprov/{file}"),
                        "/usr/local".to_string(),
                        String::new(),
                    ),
                    (false, "runc") => (
                        "/usr/local/sbin/runc".to_string(),
                        String::new(),
                        String::new(),
                    ),
                    (true, other) => (
                        format!("/var/cache/kprov/{file}"),
                        format!("/opt/kprov/{other}"),
                        String::new(),
                    ),
                    (false, name) => (format!("{bin}/{name}"), String::new(), String::new()),
                };
                BinaryCtx {
                    url: assets::file_url(&upstream, a),
                    dest,
                    sha256: self
                        .options
                        .sha256_overrides
                        .get(&file)
                        .cloned()
                        .unwrap_or_else(|| b.sha256_for(req.arch).to_string()),
                    archive: b.archive,
                    extract_to,
                    members,
                    when: runtime_rule(b.name).0,
                    then: runtime_rule(b.name).1,
                }
            })
            .collect()
    }

    /// `bootstrap.sh` for a node.
    pub fn bootstrap_script(
        &self,
        req: &InstanceRequest,
        action: &NodeAction,
    ) -> Result<String, BootstrapError> {
        let mut ctx = self.common_ctx(req, action);
        ctx.insert("binaries", &self.binaries(req));
        ctx.insert(
            "runtime_from_repository",
            &assets::runtime_from_file_repository(&self.config.cluster.spec.assets),
        );
        ctx.insert("nvidia", &Self::is_nvidia(req));
        ctx.insert("nvidia_runtime", NVIDIA_RUNTIME);
        ctx.insert(
            "nfs",
            &self.config.cluster.spec.addons.nfs_provisioner.is_some(),
        );
        ctx.insert("action", action.env_action());
        ctx.insert("init", &action.carries_ca_keys());
        ctx.insert(
            "init_or_join",
            &matches!(action, NodeAction::InitOrJoin { .. }),
        );
        ctx.insert("join", &!matches!(action, NodeAction::Init));
        ctx.insert(
            "static_pods",
            &super::static_pods::kube_vip_endpoint(&self.config, action).is_some(),
        );
        ctx.insert(
            "restore",
            &(action.carries_ca_keys() && self.restore.is_some()),
        );
        Ok(templates::strip_shell_comments(&templates::render(
            "bootstrap.sh.tera",
            &ctx,
        )?))
    }

    /// `/etc/kprov/bootstrap.env`: the script's settings (no secrets).
    pub fn bootstrap_env(&self, req: &InstanceRequest, action: &NodeAction) -> String {
        let q = yaml::shell_quote;
        let mut vars: Vec<(&str, String)> = vec![
            ("KPROV_CLUSTER", self.config.name().to_string()),
            ("KPROV_NODE_NAME", req.name.clone()),
            ("KPROV_INSTANCE_GROUP", req.instance_group.clone()),
            ("KPROV_ROLE", req.role.as_str().to_string()),
            ("KPROV_ARCH", req.arch.as_str().to_string()),
            ("KPROV_ACTION", action.env_action().to_string()),
            (
                "KPROV_API_ENDPOINT",
                action.endpoint().unwrap_or_default().to_string(),
            ),
            ("KPROV_BIN_DIR", self.options.bin_dir.clone()),
            ("KPROV_KUBEADM", self.options.kubeadm()),
            ("KPROV_KUBECTL", format!("{}/kubectl", self.options.bin_dir)),
            (
                "KPROV_INSTALL_BINARIES",
                if self.options.install_binaries {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
            (
                "KPROV_JOIN_TIMEOUT",
                self.options.join_timeout_secs.to_string(),
            ),
            ("KPROV_LOG", LOG_PATH.to_string()),
        ];
        if let Some(url) = &self.options.callback_url {
            vars.push(("KPROV_CALLBACK_URL", url.clone()));
        }
        let mut s = String::from(
            "# kprov bootstrap settings (sourced by bootstrap.sh); no secrets here.\n",
        );
        for (k, v) in vars {
            s.push_str(&format!("{k}={}\n", q(&v)));
        }
        s
    }
}
