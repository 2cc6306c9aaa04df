//! A small OCI distribution client on reqwest: exactly the calls mirroring needs (HEAD/GET/PUT of
//! manifests, HEAD/GET of blobs, monolithic streamed uploads, cross-repository mounts).
//!
//! Why not `oci-client` (0.18, re-measured with `benches/oci-client-spike`; figures
//! in docs/benchmarks.md, reasons in docs/mirror.md "Why not oci-client"): its raw-manifest and
//! streamed-blob calls do copy byte-identically in bounded memory now, but against an open or
//! Basic-auth registry it sends a `GET /v2/` before every request (2.26x the requests of this
//! client on the benchmark's full mirror, 2x on a no-op re-mirror), its bearer tokens cannot
//! carry the `repository:FROM:pull` scope a cross-repository mount needs (so mounts fail on
//! token registries), a declined mount (`202`) is an error, token-service errors are dropped,
//! nothing is retried, and a pulled manifest's `Content-Type` is not returned. So the wire
//! protocol is done here, and manifests are only *read* (descriptors pulled out with serde,
//! never re-serialised: their digest is their identity).
//!
//! Auth follows the docker conventions: anonymous first; on `401` with
//! `WWW-Authenticate: Basic` the registry's credentials (docker `config.json`, its credential
//! helpers run once per registry by [`super::credentials`]) are sent; with
//! `Bearer realm=…,service=…,scope=…` a token is fetched from the realm (with those credentials
//! when present) and cached per registry and scope.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::{sha256_digest, ImageRef, MirrorError};

pub use super::credentials::{Credentials, DockerConfig};
pub use super::manifest::{
    ManifestHead, RawManifest, DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES,
    OCI_INDEX, OCI_MANIFEST,
};

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registry hosts (`host[:port]`) spoken to over plain HTTP. Everything else is HTTPS.
    pub insecure: BTreeSet<String>,
    /// Extra PEM CA certificates trusted for HTTPS registries and file servers.
    pub ca_pems: Vec<Vec<u8>>,
    /// Registry credentials: the docker `config.json` and its credential helpers.
    pub docker_config: DockerConfig,
    /// Attempts per operation (first try included) for transient failures.
    pub attempts: u32,
    /// First retry delay; doubled each retry.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: BTreeSet::new(),
            ca_pems: Vec::new(),
            docker_config: DockerConfig::default(),
            attempts: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// An OCI distribution client for any number of registries.
pub struct RegistryClient {
    http: reqwest::Client,
    opts: ClientOptions,
    auth: Mutex<HashMap<String, HostAuth>>,
    /// Resolved credentials per registry (`None`: anonymous), so a helper runs once per registry.
    creds: Mutex<HashMap<String, Option<Credentials>>>,
    /// Held while a helper runs, so concurrent requests to one registry do not run it twice.
    resolving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.opts.insecure)
            .finish_non_exhaustive()
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn body_excerpt(resp: Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let t = text.trim();
    if t.len() > 300 {
        format!("{}…", &t[..t.floor_char_boundary(300)])
    } else {
        t.to_string()
    }
}

impl RegistryClient {
    /// A client with these options.
    pub fn new(opts: ClientOptions) -> Result<RegistryClient, MirrorError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("kprov/", env!("CARGO_PKG_VERSION")));
        for pem in &opts.ca_pems {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| MirrorError::Usage(format!("CA bundle: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| MirrorError::Usage(format!("HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            opts,
            auth: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The underlying HTTP client (for file transfers that share CA and timeouts).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http://host` for insecure registries, else `https://host` (Docker Hub's API host for
    /// `docker.io`).
    pub fn base_url(&self, registry: &str) -> String {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        if self.opts.insecure.contains(registry) {
            format!("http://{host}")
        } else {
            format!("https://{host}")
        }
    }

    fn unreachable(&self, registry: &str, url: &str, e: &reqwest::Error) -> MirrorError {
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(&format!(": {s}"));
            src = s.source();
        }
        let lower = message.to_lowercase();
        let fix = if url.starts_with("https://") && lower.contains("certificate") {
            format!("the TLS certificate of {registry} is not trusted: add its CA with --ca-bundle FILE (or the cluster's assets.caBundle); only if {registry} is a plain-HTTP registry on a trusted network pass --insecure-registry {registry}")
        } else if url.starts_with("https://")
            && (lower.contains("corrupt message") || lower.contains("invalidcontenttype"))
        {
            format!("{registry} does not speak HTTPS; kprov uses plain HTTP only for registries named insecure: if it is a plain-HTTP registry on a trusted network pass --insecure-registry {registry} (or set the cluster's assets.insecure)")
        } else if url.starts_with("https://") {
            format!("check that it is up; if {registry} speaks plain HTTP pass --insecure-registry {registry}")
        } else {
            "check that it is up and the address is right".to_string()
        };
        MirrorError::Unreachable {
            registry: registry.to_string(),
            url: url.to_string(),
            message,
            fix,
        }
    }

    /// Send a request built by `build` (called again after authenticating), adding auth.
    /// Connection failures become [`MirrorError::Unreachable`]; HTTP errors are returned as the
    /// response for the caller to map.
    pub async fn send(
        &self,
        registry: &str,
        scope: &Scope,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, MirrorError> {
        self.ensure_fresh(registry, scope, what).await?;
        for round in 0..3 {
            let mut req = build(&self.http);
            if let Some(h) = self.auth_header(registry, scope) {
                req = req.header(AUTHORIZATION, h);
            }
            let req = req
                .build()
                .map_err(|e| MirrorError::Usage(format!("{what}: {e}")))?;
            let url = req.url().to_string();
            let resp = self
                .http
                .execute(req)
                .await
                .map_err(|e| self.unreachable(registry, &url, &e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && round < 2 {
                let ch = header(&resp, "www-authenticate");
                if self
                    .authenticate(registry, scope, ch.as_deref(), what)
                    .await?
                {
                    continue;
                }
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its last round")
    }

    /// Run `op` up to `attempts` times while it fails transiently.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, MirrorError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, MirrorError>>,
    {
        let mut delay = self.opts.backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.opts.attempts.max(1) => {
                    tracing::debug!("{what}: attempt {attempt} failed ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn error_for(
        &self,
        registry: &str,
        what: &str,
        url: &str,
        resp: Response,
    ) -> MirrorError {
        let status = resp.status().as_u16();
        let message = body_excerpt(resp).await;
        match status {
            401 | 403 => MirrorError::Auth {
                registry: registry.into(),
                what: what.into(),
                status,
                message: {
                    let origin = self.credentials_origin(registry);
                    let how = match self.resolved_credentials(registry) {
                        Some(_) => format!("credentials from {origin} were refused"),
                        None => format!("sent anonymously: no credentials for it from {origin}"),
                    };
                    if message.is_empty() {
                        how
                    } else {
                        format!("{message} ({how})")
                    }
                },
            },
            _ => MirrorError::Http {
                what: what.into(),
                url: url.into(),
                status,
                message,
            },
        }
    }
}

mod auth;
use auth::HostAuth;
mod calls;
pub use auth::{parse_challenge, Scope};
#[cfg(test)]
mod tests;
