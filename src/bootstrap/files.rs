//! Every file a node's user-data writes, by what the node does: the runtime and kubelet set-up
//! all nodes share, then kubeadm configuration, and for the first control plane the cluster's
//! keys and manifests.

use kprov_providers::{InstanceRequest, Role};

use super::{
    manifests, static_pods, templates, BootstrapError, Manifest, NodeAction, NodeFile, Renderer,
    CONTAINERD_UNIT_PATH, CRI_SOCKET, ENV_PATH, NVIDIA_RUNTIME, RESTORE_ENV_PATH, SCRIPT_PATH,
};
use crate::apply::RenderContext;
use crate::assets;

impl Renderer {
    /// containerd's `config.toml` for a node (`nvidia` runtime as default on NVIDIA GPU nodes).
    pub fn containerd_config(&self, req: &InstanceRequest) -> Result<String, BootstrapError> {
        let nvidia = Self::is_nvidia(req);
        let mut ctx = tera::Context::new();
        ctx.insert("node_name", &req.name);
        ctx.insert(
            "sandbox_image",
            &assets::image_ref(
                &format!("registry.k8s.io/pause:{}", self.release.pause),
                &self.config.cluster.spec.assets,
            ),
        );
        ctx.insert("nvidia", &nvidia);
        ctx.insert("nvidia_runtime", NVIDIA_RUNTIME);
        ctx.insert("default_runtime", if nvidia { "nvidia" } else { "runc" });
        ctx.insert("certs_d", assets::CERTS_D);
        templates::render("containerd-config.toml.tera", &ctx)
    }

    /// The manifests the first control plane applies (CNI first, then add-ons).
    pub fn manifests(&self) -> Result<Vec<Manifest>, BootstrapError> {
        manifests::render_all(&self.config)
    }

    /// Every file the node's user-data writes, in order.
    pub fn files(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<Vec<NodeFile>, BootstrapError> {
        self.check_token()?;
        let action = self.action(req, ctx)?;
        let mut files = self.runtime_files(req)?;
        files.push(NodeFile::text(
            ENV_PATH,
            "0644",
            self.bootstrap_env(req, &action),
        ));
        match &action {
            NodeAction::Init | NodeAction::InitOrJoin { .. } => {
                self.push_first_control_plane_files(req, &action, &mut files)?;
            }
            NodeAction::JoinControlPlane { endpoint } | NodeAction::JoinWorker { endpoint } => {
                files.push(NodeFile::text(
                    "/etc/kprov/kubeadm-join.yaml",
                    "0600",
                    self.kubeadm_join_config(req, endpoint)?,
                ));
                // `kubeadm join --control-plane` takes the cluster's CAs and service-account
                // keys from disk: no certificates uploaded into the cluster (whose Secret
                // kubeadm deletes after 2 h, which would fail a later replacement)
                if req.role == Role::ControlPlane {
                    self.push_key_files(&mut files);
                }
            }
        }
        files.extend(static_pods::files(&self.config, &action)?);
        files.push(NodeFile::text(
            SCRIPT_PATH,
            "0700",
            self.bootstrap_script(req, &action)?,
        ));
        Ok(files)
    }

    /// What every node needs before kubeadm runs: kernel modules and sysctls, containerd (with
    /// the mirror's `hosts.toml` files and CA bundle), crictl's config and the kubelet units.
    fn runtime_files(&self, req: &InstanceRequest) -> Result<Vec<NodeFile>, BootstrapError> {
        let spec = &self.config.cluster.spec;
        let mut files = vec![
            NodeFile::text("/etc/modules-load.d/kprov-k8s.conf", "0644", "# kprov: modules Kubernetes networking needs\noverlay\nbr_netfilter\n"),
            NodeFile::text(
                "/etc/sysctl.d/99-kprov-k8s.conf",
                "0644",
                "# kprov: bridged traffic through iptables, and forwarding\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n",
            ),
            NodeFile::text("/etc/containerd/config.toml", "0644", self.containerd_config(req)?),
        ];
        for (host, toml) in assets::certs_d(&spec.assets) {
            files.push(NodeFile::text(
                format!("{}/{host}/hosts.toml", assets::CERTS_D),
                "0644",
                toml,
            ));
        }
        if let Some(ca) = &spec.assets.ca_bundle {
            files.push(NodeFile::text(assets::MIRROR_CA_PATH, "0644", ca.clone()));
        }
        files.push(NodeFile::text(
            "/etc/crictl.yaml",
            "0644",
            format!("runtime-endpoint: {CRI_SOCKET}\nimage-endpoint: {CRI_SOCKET}\ntimeout: 10\n"),
        ));
        let mut uctx = tera::Context::new();
        uctx.insert("bin_dir", &self.options.bin_dir);
        if assets::runtime_from_file_repository(&spec.assets) {
            files.push(NodeFile::text(
                CONTAINERD_UNIT_PATH,
                "0644",
                templates::render("containerd.service.tera", &uctx)?,
            ));
        }
        files.push(NodeFile::text(
            "/etc/systemd/system/kubelet.service",
            "0644",
            templates::render("kubelet.service.tera", &uctx)?,
        ));
        files.push(NodeFile::text(
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            "0644",
            templates::render("kubelet-10-kubeadm.conf.tera", &uctx)?,
        ));
        Ok(files)
    }

    /// The first control plane's files: its kubeadm configs (`init`, and `join` for when an API
    /// server already answers at the endpoint), the cluster's keys, the manifests it applies and
    /// the node labels it sets for the kubelets.
    fn push_first_control_plane_files(
        &self,
        req: &InstanceRequest,
        action: &NodeAction,
        files: &mut Vec<NodeFile>,
    ) -> Result<(), BootstrapError> {
        files.push(NodeFile::text(
            "/etc/kprov/kubeadm-init.yaml",
            "0600",
            self.kubeadm_init_config(req, action)?,
        ));
        if let NodeAction::InitOrJoin { endpoint } = action {
            files.push(NodeFile::text(
                "/etc/kprov/kubeadm-join.yaml",
                "0600",
                self.kubeadm_join_config(req, endpoint)?,
            ));
        }
        self.push_key_files(files);
        if let Some(r) = &self.restore {
            files.push(NodeFile::text(
                RESTORE_ENV_PATH,
                "0600",
                r.env_file(&self.etcd_image()),
            ));
        }
        for m in self.manifests()? {
            let dir = if m.deferred {
                "/etc/kprov/manifests-deferred"
            } else {
                "/etc/kprov/manifests"
            };
            files.push(NodeFile {
                path: format!("{dir}/{}", m.file_name),
                permissions: "0644",
                content: m.content,
                compress: true,
            });
        }
        let labels = self.restricted_labels();
        if !labels.is_empty() {
            files.push(NodeFile::text("/etc/kprov/node-labels", "0644", labels));
        }
        Ok(())
    }

    /// The cluster's etcd image, from the mirror when the spec names one: its `etcdutl`
    /// restores a snapshot on the node.
    pub(super) fn etcd_image(&self) -> String {
        let upstream = format!("registry.k8s.io/etcd:{}", self.release.etcd);
        assets::image_ref(&upstream, &self.config.cluster.spec.assets)
    }

    /// The three CAs (certificate and key) and the service-account key pair, where kubeadm looks
    /// for them: with them in place `kubeadm init` uses the cluster's CAs instead of making new
    /// ones, so the discovery hash kprov computed stays right.
    fn push_key_files(&self, files: &mut Vec<NodeFile>) {
        let s = &self.secrets;
        let pki = "/etc/kubernetes/pki";
        for (name, pair) in [
            ("ca", &s.ca),
            ("front-proxy-ca", &s.front_proxy_ca),
            ("etcd/ca", &s.etcd_ca),
        ] {
            files.push(NodeFile::text(
                format!("{pki}/{name}.crt"),
                "0644",
                pair.cert_pem.clone(),
            ));
            files.push(NodeFile::text(
                format!("{pki}/{name}.key"),
                "0600",
                pair.key_pem.clone(),
            ));
        }
        files.push(NodeFile::text(
            format!("{pki}/sa.key"),
            "0600",
            s.service_account.key_pem.clone(),
        ));
        files.push(NodeFile::text(
            format!("{pki}/sa.pub"),
            "0644",
            s.service_account.cert_pem.clone(),
        ));
    }
}
