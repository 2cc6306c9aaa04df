//! The node's kubeadm configuration: `kubeadm-init.yaml` for the first control plane,
//! `kubeadm-join.yaml` for every other node, with the node's registration (name, kubelet
//! arguments, taints).

use kprov_providers::{InstanceRequest, Role};
use serde::Serialize;

use super::render::endpoint_host;
use super::{templates, BootstrapError, NodeAction, Renderer, CRI_SOCKET};
use crate::assets;

/// One kubelet flag in `nodeRegistration.kubeletExtraArgs`, which kubeadm v1beta4 takes as a
/// list of name/value pairs.
#[derive(Serialize)]
struct KubeletArg {
    name: String,
    value: String,
}

impl Renderer {
    fn node_registration(
        &self,
        req: &InstanceRequest,
        ctx: &mut tera::Context,
    ) -> Result<(), BootstrapError> {
        let (labels, taints) = self.group_labels_taints(req)?;
        let node_labels = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let args = vec![
            KubeletArg {
                name: "node-ip".into(),
                value: "@KPROV_NODE_IP@".into(),
            },
            KubeletArg {
                name: "node-labels".into(),
                value: node_labels,
            },
        ];
        ctx.insert("node_name", &req.name);
        ctx.insert("cri_socket", CRI_SOCKET);
        ctx.insert("kubelet_args", &args);
        ctx.insert("taints", &taints);
        Ok(())
    }

    /// `kubeadm-init.yaml` for the first control plane (`@KPROV_NODE_IP@` is filled in on the
    /// node).
    pub fn kubeadm_init_config(
        &self,
        req: &InstanceRequest,
        action: &NodeAction,
    ) -> Result<String, BootstrapError> {
        let spec = &self.config.cluster.spec;
        let a = &spec.assets;
        let mut ctx = tera::Context::new();
        self.node_registration(req, &mut ctx)?;
        let multi = self.control_plane_count() > 1;
        let endpoint = match action {
            NodeAction::InitOrJoin { endpoint } => Some(endpoint.clone()),
            // Several control planes and no endpoint: the others join at this node's address.
            _ if multi => Some(format!("@KPROV_NODE_IP@:{}", spec.control_plane.port)),
            _ => None,
        };
        let sans: Vec<String> = match action {
            NodeAction::InitOrJoin { endpoint } => vec![endpoint_host(endpoint).to_string()],
            _ => vec![],
        };
        ctx.insert("cluster_name", self.config.name());
        ctx.insert("token", &self.secrets.token.token);
        ctx.insert(
            "token_expires",
            &self
                .secrets
                .token
                .expires
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        ctx.insert("api_port", &spec.control_plane.port);
        ctx.insert("kubernetes_version", &format!("v{}", self.release.version));
        ctx.insert("image_repository", &assets::kubeadm_image_repository(a));
        ctx.insert(
            "dns_image_repository",
            &assets::kubeadm_dns_image_repository(a),
        );
        ctx.insert("coredns_tag", self.release.coredns);
        ctx.insert("etcd_tag", self.release.etcd);
        ctx.insert("control_plane_endpoint", &endpoint.unwrap_or_default());
        ctx.insert("cert_sans", &sans);
        ctx.insert("pod_subnet", &spec.networking.pod_cidr.to_string());
        ctx.insert("service_subnet", &spec.networking.service_cidr.to_string());
        templates::render("kubeadm-init.yaml.tera", &ctx)
    }

    /// `kubeadm-join.yaml` for a worker or an extra control plane joining `endpoint`.
    pub fn kubeadm_join_config(
        &self,
        req: &InstanceRequest,
        endpoint: &str,
    ) -> Result<String, BootstrapError> {
        let mut ctx = tera::Context::new();
        self.node_registration(req, &mut ctx)?;
        ctx.insert("token", &self.secrets.token.token);
        ctx.insert("api_server_endpoint", endpoint);
        ctx.insert("ca_cert_hash", &self.discovery_hash);
        ctx.insert("control_plane", &(req.role == Role::ControlPlane));
        ctx.insert("api_port", &self.config.cluster.spec.control_plane.port);
        templates::render("kubeadm-join.yaml.tera", &ctx)
    }
}
