//! Node bootstrap: each instance's user-data, a `#cloud-config` rendered from `templates/`.
//!
//! Every node gets: its hostname, the SSH key, swap off (now and in fstab), the `overlay` and
//! `br_netfilter` modules and bridge sysctls, containerd's config with the mirror's `hosts.toml`
//! files (and CA bundle), the kubelet unit, a kubeadm config, and `bootstrap.sh`, which cloud-init
//! runs: it downloads kubeadm/kubelet/kubectl/crictl/CNI plugins for the node's arch from the
//! file repository with SHA-256 checked, then runs `kubeadm init` (first control plane, which also
//! applies the CNI and add-on manifests) or `kubeadm join` (retried until the API answers). Each
//! phase reports `KPROV_PHASE <name> ok|failed` (see `docs/bootstrap.md`).
//!
//! Secrets: only the first control plane's user-data carries CA private keys (so kubeadm uses the
//! cluster's existing CAs and the discovery hash stays right). Extra control planes carry the
//! bootstrap token and the certificate key; workers only the token and the CA hash.

// One concept a file; the public items are re-exported below, so callers name them
// `crate::bootstrap::X` whichever file they live in.
mod error; // BootstrapError: what rendering can fail on
mod files; // every file a node's user-data writes, by what the node does
mod kubeadm; // kubeadm-init.yaml / kubeadm-join.yaml and the node's registration
mod labels; // node labels and taints, and which ones the kubelet may set itself
pub mod manifests; // CNI and add-on manifests the first control plane applies
mod node; // paths on the node, NodeAction, NodeFile
mod options; // BootstrapOptions: test/debug hooks from the environment, SHA-256 overrides
mod redact; // taking secrets out of rendered user-data
mod render; // the Renderer: decides a node's action, assembles its #cloud-config
mod restore; // the etcd snapshot a replacement of the only control plane restores
mod script; // bootstrap.sh and bootstrap.env, and the binaries the script downloads
pub mod static_pods; // kube-vip: static pods holding the API VIP on every control plane
pub mod templates; // the tera templates, compiled in
mod user_data; // fitting user-data into a provider's size limit (gzip)
mod yaml; // YAML scalars the templates embed verbatim

pub use error::BootstrapError;
pub use labels::{kubelet_may_set_label, GPU_NODE_LABEL, INSTANCE_GROUP_LABEL};
pub use manifests::Manifest;
pub use node::{
    NodeAction, NodeFile, CONTAINERD_UNIT_PATH, CRI_SOCKET, ENV_PATH, FETCH_BEGIN, FETCH_END,
    LOG_PATH, NVIDIA_RUNTIME, REPORT_BEGIN, REPORT_END, SCRIPT_PATH,
};
pub use options::{file_name_of, BootstrapOptions};
pub use redact::redact;
pub use render::{renderer, Renderer};
pub use restore::{EtcdRestore, SnapshotKey, RESTORE_ENV_PATH};
pub use user_data::{decompress_user_data, fit_user_data};
