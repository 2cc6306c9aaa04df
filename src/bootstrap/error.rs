//! What rendering a node's user-data can fail on.

/// What rendering user-data can fail on.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A template failed to parse or render (a kprov bug, or a versions-table entry a template
    /// expects is missing).
    #[error("template {name}: {message}")]
    Template {
        /// The template's name under `templates/`, e.g. `bootstrap.sh.tera`.
        name: String,
        /// tera's message, with the causes it chains.
        message: String,
    },
    /// The cluster's Kubernetes version is not in the versions table.
    #[error("Kubernetes version {version} is not in kprov's versions table (supported: {supported}); set spec.kubernetesVersion to one of them")]
    UnknownVersion {
        /// `spec.kubernetesVersion` as written.
        version: String,
        /// The versions the table has, comma-separated, for the fix.
        supported: String,
    },
    /// The versions table lacks a binary the bootstrap needs.
    #[error("the versions table has no {binary} for Kubernetes {version}")]
    MissingBinary {
        /// The Kubernetes release whose entry lacks the binary.
        version: String,
        /// The binary, as the versions table names it (`kubeadm`, `cni-plugins`, ...).
        binary: String,
    },
    /// A node's instance group has a setting the bootstrap cannot express.
    #[error("instance group {instance_group}: {problem}; {fix}")]
    InstanceGroup {
        /// The instance group whose setting it is.
        instance_group: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A node must join but no control-plane endpoint is known.
    #[error("{node} must join the cluster but no control-plane endpoint is known; set spec.controlPlane.endpoint or create the first control plane first")]
    NoEndpoint {
        /// The instance that cannot be told where to join.
        node: String,
    },
    /// The stored bootstrap token has expired.
    #[error("the bootstrap token of cluster {cluster} expired at {expires}, so new nodes could not join with it; a new token must be issued (and created in the running cluster) before nodes are added")]
    TokenExpired {
        /// The cluster whose stored token it is.
        cluster: String,
        /// When it expired (RFC 3339).
        expires: String,
    },
    /// The user-data does not fit the provider's limit even gzip-compressed.
    #[error(
        "user-data of {instance} (instance group {instance_group}) is {gzip} bytes gzip-compressed ({raw} bytes raw), over the {provider} limit of {limit} bytes; {fix}"
    )]
    TooLarge {
        /// The instance whose user-data it is.
        instance: String,
        /// Its instance group, which decides what the user-data carries.
        instance_group: String,
        /// The provider whose limit it is (`aws`, `zstack`).
        provider: String,
        /// Bytes of the cloud-config as rendered.
        raw: usize,
        /// Bytes after gzip at the best compression, which is still too many.
        gzip: usize,
        /// The provider's limit in bytes ([`Cloud::user_data_limit`](kprov_providers::Cloud::user_data_limit)).
        limit: usize,
        /// What to change.
        fix: String,
    },
    /// Compressing or decompressing failed.
    #[error("user-data compression: {0}")]
    Io(#[from] std::io::Error),
}
