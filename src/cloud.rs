//! Building the provider adapter a cluster spec names.

use std::sync::Arc;

use kprov_providers::Cloud;

use crate::error::{ExitError, EXIT_USAGE};
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

/// Refuse a provider this binary was built without (exit 2), saying how to get a build with it.
/// `what` says where the choice came from (`--provider`, `FILE: spec.provider`, `cluster NAME`).
pub fn require_compiled(provider: &str, what: &str) -> Result<(), ExitError> {
    let compiled = compiled_providers();
    if compiled.contains(&provider) {
        return Ok(());
    }
    let needs = match provider {
        "libvirt" => " (it links libvirt: `apt-get install libvirt-dev pkg-config` first)",
        _ => "",
    };
    Err(ExitError {
        code: EXIT_USAGE,
        message: format!(
            "{what}: provider {provider} is not compiled into this kprov (it has: {}); fix: install a build \
             with it, `cargo install --locked --path . --features {provider}`{needs}, or choose one of \
             the compiled providers",
            compiled.join(", ")
        ),
    })
}

/// The user-data limit of the provider a spec names, as its adapter reports it
/// ([`Cloud::user_data_limit`]), known without connecting (for `get userdata`, which works
/// offline). `None` for libvirt, and for a provider not compiled in (it cannot be used anyway).
pub fn user_data_limit(provider: &ProviderSpec) -> Option<usize> {
    match provider {
        #[cfg(feature = "aws")]
        ProviderSpec::Aws(_) => Some(kprov_providers::aws::USER_DATA_LIMIT),
        #[cfg(feature = "zstack")]
        ProviderSpec::Zstack(_) => Some(kprov_providers::zstack::USER_DATA_LIMIT),
        _ => None,
    }
}

/// Connect to the cloud of cluster `cluster`. Credentials come from the environment or the files
/// the spec names, never from the spec itself.
pub async fn connect(cluster: &str, spec: &ClusterSpec) -> anyhow::Result<Arc<dyn Cloud>> {
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
            if let Some(t) = std::env::var("KPROV_ZSTACK_JOB_TIMEOUT")
                .ok()
                .and_then(|s| crate::spec::quantity::parse_duration(&s).ok())
            {
                cfg.job_timeout = t;
            }
            if let Some(t) = env_duration("KPROV_ZSTACK_REQUEST_TIMEOUT")? {
                cfg.request_timeout = t;
            }
            Ok(Arc::new(ZStackCloud::new(cfg)?))
        }
        #[cfg(feature = "aws")]
        ProviderSpec::Aws(a) => {
            use kprov_providers::aws::{AwsCloud, AwsConfig};
            let mut cfg = AwsConfig::new(a.region.clone());
            cfg.vpc_id = a.vpc_id.clone();
            cfg.subnet_ids = a.subnet_ids.clone();
            if let Some(c) = &a.vpc_cidr {
                cfg.vpc_cidr = c.to_string();
            }
            cfg.api_access = a.api_access.iter().map(|c| c.to_string()).collect();
            cfg.ssh_access = a.ssh_access.iter().map(|c| c.to_string()).collect();
            cfg.api_port = spec.control_plane.port;
            cfg.ami_owner = a.ami_owner.clone();
            cfg.ami_name = a.ami_name.clone();
            cfg.zones = a.zones.clone();
            cfg.ssh_public_key = spec.ssh_public_key.clone();
            // connect() sees only the cluster spec, not the instance groups: 0 lets the adapter
            // infer an HA control plane from the requests it is given.
            cfg.control_plane_count = 0;
            if let Some(t) = env_duration("KPROV_AWS_CALL_TIMEOUT")? {
                cfg.call_timeout = t;
            }
            // Missing credentials or an unknown region are setup problems the user fixes before
            // anything happens (exit 2); an unreachable cloud is not.
            let cloud = AwsCloud::new(cfg).await.map_err(|e| match e {
                kprov_providers::CloudError::Auth { .. }
                | kprov_providers::CloudError::Fatal { .. } => ExitError::usage(e.to_string()),
                e => anyhow::Error::new(e),
            })?;
            Ok(Arc::new(cloud))
        }
        #[cfg(feature = "libvirt")]
        ProviderSpec::Libvirt(l) => {
            use kprov_providers::libvirt::{self as lv, LibvirtCloud};
            let cfg = lv::config_from_parts(
                &l.uri,
                l.pool.clone(),
                match &l.network {
                    // a kube-vip VIP the user chose fixes the NAT network's /24 (its .1 is
                    // the host, .2-.199 are leased, .200-.254 are free for VIPs)
                    crate::spec::LibvirtNetwork::Nat => lv::NetworkMode::Nat {
                        cidr: spec.control_plane.vip.map(|ip| {
                            let o = ip.octets();
                            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                        }),
                    },
                    crate::spec::LibvirtNetwork::Existing(n) => {
                        lv::NetworkMode::Existing(n.clone())
                    }
                    crate::spec::LibvirtNetwork::User(u) => lv::NetworkMode::User {
                        forwards: u.forwards.clone(),
                    },
                },
                match l.domain_type {
                    crate::spec::LibvirtDomainType::Auto => lv::DomainType::Auto,
                    crate::spec::LibvirtDomainType::Kvm => lv::DomainType::Kvm,
                    crate::spec::LibvirtDomainType::Qemu => lv::DomainType::Qemu,
                },
                &l.images,
            )
            .map_err(|e| ExitError::usage(e.to_string()))?;
            Ok(Arc::new(LibvirtCloud::connect(cfg)?))
        }
        // unreachable when every provider is compiled in
        #[allow(unreachable_patterns)]
        other => {
            require_compiled(other.name(), &format!("cluster {cluster}: spec.provider"))?;
            anyhow::bail!("provider {} has no adapter in this build", other.name())
        }
    }
}

/// A duration from the environment (`30s`, `2m`); a malformed value is a usage error naming the
/// variable, never silently ignored.
#[allow(dead_code)] // unused when no provider reading one is compiled in
fn env_duration(var: &str) -> anyhow::Result<Option<std::time::Duration>> {
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => crate::spec::quantity::parse_duration(s.trim())
            .map(Some)
            .map_err(|e| ExitError::usage(format!("{var}={s:?}: {e}"))),
        _ => Ok(None),
    }
}
