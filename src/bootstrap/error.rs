//! What rendering a node's user-data can fail on.

/// What rendering user-data can fail on.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A template failed to parse or render (a kprov bug, or a versions-table entry a template
    /// expects is missing).
    #[error("template {name}: {message}")]
    Template {
        /// Template name.
        name: String,
        /// What tera said.
        message: String,
    },
    /// The cluster's Kubernetes version is not in the versions table.
    #[error("Kubernetes version {version} is not in kprov's versions table (supported: {supported}); set spec.kubernetesVersion to one of them")]
    UnknownVersion {
        /// The spec's version.
        version: String,
        /// Supported versions.
        supported: String,
    },
    /// The versions table lacks a binary the bootstrap needs.
    #[error("the versions table has no {binary} for Kubernetes {version}")]
    MissingBinary {
        /// Release.
        version: String,
        /// Binary name.
        binary: String,
    },
    /// A node's instance group has a setting the bootstrap cannot express.
    #[error("instance group {instance_group}: {problem}; {fix}")]
    InstanceGroup {
        /// Instance group.
        instance_group: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A node must join but no control-plane endpoint is known.
    #[error("{node} must join the cluster but no control-plane endpoint is known; set spec.controlPlane.endpoint or create the first control plane first")]
    NoEndpoint {
        /// Instance name.
        node: String,
    },
    /// The stored bootstrap token has expired.
    #[error("the bootstrap token of cluster {cluster} expired at {expires}, so new nodes could not join with it; a new token must be issued (and created in the running cluster) before nodes are added")]
    TokenExpired {
        /// Cluster.
        cluster: String,
        /// When it expired (RFC 3339).
        expires: String,
    },
    /// The user-data does not fit the provider's limit even gzip-compressed.
    #[error(
        "user-data of {instance} (instance group {instance_group}) is {gzip} bytes gzip-compressed ({raw} bytes raw), over the {provider} limit of {limit} bytes; {fix}"
    )]
    TooLarge {
        /// Instance name.
        instance: String,
        /// Instance group.
        instance_group: String,
        /// Provider.
        provider: String,
        /// Uncompressed size.
        raw: usize,
        /// Compressed size.
        gzip: usize,
        /// The limit.
        limit: usize,
        /// What to change.
        fix: String,
    },
    /// Compressing or decompressing failed.
    #[error("user-data compression: {0}")]
    Io(#[from] std::io::Error),
}
