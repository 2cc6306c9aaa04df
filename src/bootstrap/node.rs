//! What the user-data puts on a node: where kprov's files live there, what the node does with
//! kubeadm ([`NodeAction`]) and the files it writes ([`NodeFile`]).

/// Where the bootstrap script lives on the node.
pub const SCRIPT_PATH: &str = "/usr/local/lib/kprov/bootstrap.sh";
/// The bootstrap's settings file on the node (sourced by the script; no secrets in it).
pub const ENV_PATH: &str = "/etc/kprov/bootstrap.env";
/// The unit of the containerd installed from the file repository (`bootstrap.sh` copies it to
/// `/etc/systemd/system/` only when it installs that containerd).
pub const CONTAINERD_UNIT_PATH: &str = "/etc/kprov/containerd.service";
/// The bootstrap log on the node.
pub const LOG_PATH: &str = "/var/log/kprov-bootstrap.log";
/// containerd's CRI socket.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// The NVIDIA Container Toolkit runtime binary containerd runs on GPU nodes.
pub const NVIDIA_RUNTIME: &str = "/usr/bin/nvidia-container-runtime";
/// Marker lines around the download function in `bootstrap.sh` (tests run it on its own).
pub const FETCH_BEGIN: &str = "# --- kprov:fetch begin ---";
/// See [`FETCH_BEGIN`].
pub const FETCH_END: &str = "# --- kprov:fetch end ---";
/// Marker lines around the phase-reporting functions in `bootstrap.sh`.
pub const REPORT_BEGIN: &str = "# --- kprov:report begin ---";
/// See [`REPORT_BEGIN`].
pub const REPORT_END: &str = "# --- kprov:report end ---";

/// What a node does with kubeadm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// `kubeadm init`: the first control plane, no endpoint known yet.
    Init,
    /// The first control plane when the spec names the endpoint: `kubeadm init` with that
    /// endpoint, unless an API server already answers there (a replacement), then join.
    InitOrJoin {
        /// `host:port` from the spec.
        endpoint: String,
    },
    /// `kubeadm join --control-plane` at the endpoint.
    JoinControlPlane {
        /// `host:port`.
        endpoint: String,
    },
    /// `kubeadm join` of a worker.
    JoinWorker {
        /// `host:port`.
        endpoint: String,
    },
}

impl NodeAction {
    /// Does this node's user-data carry the CA private keys?
    pub fn carries_ca_keys(&self) -> bool {
        matches!(self, NodeAction::Init | NodeAction::InitOrJoin { .. })
    }
    pub(super) fn env_action(&self) -> &'static str {
        match self {
            NodeAction::Init => "init",
            NodeAction::InitOrJoin { .. } => "init-or-join",
            _ => "join",
        }
    }
    pub(super) fn endpoint(&self) -> Option<&str> {
        match self {
            NodeAction::Init => None,
            NodeAction::InitOrJoin { endpoint }
            | NodeAction::JoinControlPlane { endpoint }
            | NodeAction::JoinWorker { endpoint } => Some(endpoint),
        }
    }
}

/// A file the user-data writes on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path.
    pub path: String,
    /// Octal mode, e.g. `0600`.
    pub permissions: &'static str,
    /// What the file holds, as text (compressed only when embedded, see `compress`).
    pub content: String,
    /// Embed gzip-compressed and base64-encoded (`encoding: gz+b64`) instead of as text.
    pub compress: bool,
}

impl NodeFile {
    pub(super) fn text(
        path: impl Into<String>,
        permissions: &'static str,
        content: impl Into<String>,
    ) -> NodeFile {
        NodeFile {
            path: path.into(),
            permissions,
            content: content.into(),
            compress: false,
        }
    }
}
