//! The cluster's Kubernetes API, through kube-rs with k8s-openapi's types: connecting as the
//! administrator ([`client`]), validating that the cluster works ([`validate`]), cordoning and
//! draining nodes through the Eviction API ([`drain`]), bootstrap tokens ([`token`]) and etcd
//! reached through a port-forward to a control plane's etcd pod ([`etcd_forward`]).
//!
//! The engine (`crate::ops`) decides when to call these; nothing here touches the cloud or the
//! state store.

pub mod client;
pub mod drain;
pub mod etcd_forward;
pub mod token;
pub mod validate;

/// What went wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The client could not be configured (bad kubeconfig, bad certificate).
    #[error("{what}: {source}")]
    Config {
        /// Which configuration.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call (verb and object).
        what: String,
        /// kube-rs's error (an API status or a transport error).
        #[source]
        source: kube::Error,
    },
    /// A wait ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// Anything else the API answered that kprov cannot go on with.
    #[error("{0}")]
    Refused(String),
}

impl K8sError {
    /// An API error for `what`.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        K8sError::Api {
            what: what.into(),
            source,
        }
    }
}

/// The HTTP status of an API answer, when the error is one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
