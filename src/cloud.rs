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

/// Connect to the cloud of a cluster. Credentials come from the environment or the files the
/// spec names, never from the spec itself.
pub async fn connect(spec: &ClusterSpec) -> anyhow::Result<Arc<dyn Cloud>> {
    match &spec.provider {
        #[cfg(feature = "zstack")]
        ProviderSpec::Zstack(z) => {
            use kprov_providers::zstack::{ZStackCloud, ZStackConfig, ZStackCredentials};
            let creds = match &z.credentials_file {
                Some(f) => ZStackCredentials::from_file(f),
                None => ZStackCredentials::from_env(),
            }
            .map_err(|e| ExitError::usage(e.to_string()))?;
            let mut cfg = ZStackConfig::new(z.endpoint.clone(), creds);
            cfg.zone = z.zone.clone();
            cfg.l3_network = z.l3_network.clone();
            if let Some(t) = std::env::var("KPROV_ZSTACK_JOB_TIMEOUT").ok().and_then(|s| crate::spec::quantity::parse_duration(&s).ok()) {
                cfg.job_timeout = t;
            }
            Ok(Arc::new(ZStackCloud::new(cfg)?))
        }
        other => Err(ExitError::usage(format!(
            "provider {} is not available in this build of kprov (compiled: {})",
            other.name(),
            compiled_providers().join(", ")
        ))),
    }
}
