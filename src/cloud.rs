//! Building the provider adapter a cluster spec names.

use std::sync::Arc;

use kprov_providers::Cloud;

use crate::cli::ExitError;
use crate::spec::{ClusterSpec, ProviderSpec};

/// Providers compiled into this binary.
pub fn compiled_providers() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "zstack") {
        v.push("zstack");
    }
    if cfg!(feature = "aws") {
        v.push("aws");
    }
    if cfg!(feature = "libvirt") {
        v.push("libvirt");
    }
    v
}

/// Connect to the cloud of a cluster.
pub async fn connect(spec: &ClusterSpec) -> anyhow::Result<Arc<dyn Cloud>> {
    match &spec.provider {
        other => Err(ExitError::usage(format!(
            "provider {} is not available in this build of kprov yet",
            other.name()
        ))),
    }
}

#[allow(dead_code)]
fn _exhaustive(p: &ProviderSpec) -> &'static str {
    p.name()
}
