//! A kube-rs client as the cluster's administrator: either from credentials kprov mints (a
//! short-lived client certificate signed by the cluster CA, the server verified against that
//! CA) or from the user's kubeconfig (`--kubeconfig`, `KUBECONFIG`), which is also how an API
//! server only reachable through a tunnel is used.

use std::time::Duration;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::K8sError;

/// How long connecting and each answer may take before a call fails (and is retried by the
/// caller's loop): API servers answer in milliseconds; a dead address must not hang a roll.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn config_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> K8sError {
    K8sError::Config {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// A client for `server` (`https://HOST:PORT`) that trusts only `ca_pem` and presents the
/// client certificate `cert_pem`/`key_pem` (the key stays in memory).
pub fn from_certificate(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<kube::Client, K8sError> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| config_error(&format!("API server address {server}"), e))?;
    let ca = pem::parse_many(ca_pem)
        .map_err(|e| config_error("cluster CA certificate", e))?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(ca);
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    // kube-rs retries 429s itself for minutes by default; an eviction a disruption budget
    // refuses must come back at once, so the drain's own loop (and --drain-timeout) decides
    config.default_retry = false;
    let b64 = base64::engine::general_purpose::STANDARD;
    config.auth_info.client_certificate_data = Some(b64.encode(cert_pem));
    config.auth_info.client_key_data = Some(b64.encode(key_pem).into());
    kube::Client::try_from(config).map_err(|e| config_error("Kubernetes client", e))
}

/// A client from the kubeconfig file(s) `path` (a `:`-separated list, as `KUBECONFIG`),
/// using `context` or the file's current context.
pub async fn from_kubeconfig(path: &str, context: Option<&str>) -> Result<kube::Client, K8sError> {
    let mut merged: Option<Kubeconfig> = None;
    for p in std::env::split_paths(path).filter(|p| !p.as_os_str().is_empty()) {
        let one = Kubeconfig::read_from(&p)
            .map_err(|e| config_error(&format!("kubeconfig {}", p.display()), e))?;
        merged = Some(match merged {
            None => one,
            Some(m) => m
                .merge(one)
                .map_err(|e| config_error(&format!("kubeconfig {}", p.display()), e))?,
        });
    }
    let kc =
        merged.ok_or_else(|| K8sError::Refused(format!("kubeconfig {path:?} names no file")))?;
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| config_error(&format!("kubeconfig {path}"), e))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    // kube-rs retries 429s itself for minutes by default; an eviction a disruption budget
    // refuses must come back at once, so the drain's own loop (and --drain-timeout) decides
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| config_error("Kubernetes client", e))
}
