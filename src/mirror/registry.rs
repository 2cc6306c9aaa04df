//! A small OCI distribution client on reqwest: exactly the calls mirroring needs (HEAD/GET/PUT of
//! manifests, HEAD/GET of blobs, monolithic streamed uploads, cross-repository mounts).
//!
//! Why not `oci-client` (0.18, re-measured for issue 14 with `benches/oci-client-spike`; figures
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

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2) media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `Accept` for manifest requests: every type kprov copies, so a registry never down-converts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest accepted (the distribution spec's recommended limit), so a broken server
/// cannot make kprov buffer an unbounded body.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub use super::credentials::{Credentials, DockerConfig};

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registry hosts (`host[:port]`) spoken to over plain HTTP. Everything else is HTTPS.
    pub insecure: BTreeSet<String>,
    /// Extra PEM CA certificates trusted for HTTPS registries and file servers.
    pub ca_pems: Vec<Vec<u8>>,
    /// Credentials.
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

/// What `HEAD` of a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Option<String>,
    /// `Content-Type`.
    pub media_type: Option<String>,
}

/// A manifest as served: its exact bytes, media type and digest (of those bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    /// The bytes, never re-serialised.
    pub bytes: Vec<u8>,
    /// Media type (the `mediaType` field, else `Content-Type`).
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

/// A bearer token and when to fetch a new one (before it expires).
#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a credential: never printed.
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

#[derive(Debug, Clone)]
enum HostAuth {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        tokens: HashMap<String, Token>,
    },
}

/// Tokens without `expires_in` live 60 s (the distribution token spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;

/// What a request needs access to (for bearer token scopes).
#[derive(Debug, Clone)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Pull access to `repo`.
    pub fn pull(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    /// Pull and push access to `repo`.
    pub fn push(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    /// Push to `repo` and pull from `from` (a cross-repository mount).
    pub fn mount(repo: &str, from: &str) -> Scope {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    /// Registry-level access (`GET /v2/`).
    pub fn none() -> Scope {
        Scope(Vec::new())
    }
    fn key(&self) -> String {
        self.0.join(" ")
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

/// Parse `Bearer realm="…",service="…",scope="…"` (or `Basic realm=…`) into scheme and params.
pub fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, rest) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(k, v.to_string());
        s = rest.trim_start_matches([',', ' ']);
    }
    (scheme.to_ascii_lowercase(), params)
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

    /// The credentials for `registry` (running its docker credential helper on first use).
    /// `Ok(None)`: anonymous.
    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, MirrorError> {
        if let Some(c) = self.creds.lock().expect("creds lock").get(registry) {
            return Ok(c.clone());
        }
        let _one_at_a_time = self.resolving.lock().await;
        if let Some(c) = self.creds.lock().expect("creds lock").get(registry) {
            return Ok(c.clone());
        }
        let config = self.opts.docker_config.clone();
        let host = registry.to_string();
        let c = tokio::task::spawn_blocking(move || config.resolve(&host))
            .await
            .map_err(|e| MirrorError::Usage(format!("credential lookup for {registry}: {e}")))??;
        self.creds
            .lock()
            .expect("creds lock")
            .insert(registry.to_string(), c.clone());
        Ok(c)
    }

    /// Already resolved credentials (auth headers are built synchronously, after
    /// [`Self::authenticate`] resolved them).
    fn resolved_credentials(&self, registry: &str) -> Option<Credentials> {
        self.creds
            .lock()
            .expect("creds lock")
            .get(registry)
            .cloned()
            .flatten()
    }

    /// Where the credentials of `registry` came from, for messages.
    fn credentials_origin(&self, registry: &str) -> String {
        use super::credentials::CredentialSource;
        match self.opts.docker_config.source(registry) {
            CredentialSource::Helper { name, setting } => {
                format!("credential helper docker-credential-{name} ({setting})")
            }
            _ => "config.json".to_string(),
        }
    }

    fn auth_header(&self, registry: &str, scope: &Scope) -> Option<HeaderValue> {
        let state = self.auth.lock().expect("auth lock").get(registry).cloned();
        match state {
            Some(HostAuth::Basic) => {
                let c = self.resolved_credentials(registry)?;
                let v = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password));
                let mut h = HeaderValue::from_str(&format!("Basic {v}")).ok()?;
                h.set_sensitive(true);
                Some(h)
            }
            Some(HostAuth::Bearer { tokens, .. }) => tokens
                .get(&scope.key())
                .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.value)).ok())
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            _ => None,
        }
    }

    /// Learn how `registry` authenticates from a 401 answer and get what is needed for `scope`.
    /// Returns false when there is nothing more to try.
    async fn authenticate(
        &self,
        registry: &str,
        scope: &Scope,
        challenge: Option<&str>,
        what: &str,
    ) -> Result<bool, MirrorError> {
        let Some(ch) = challenge else {
            return Ok(false);
        };
        let (scheme, params) = parse_challenge(ch);
        let creds = self.credentials(registry).await?;
        match scheme.as_str() {
            "basic" => {
                let was = self.auth.lock().expect("auth lock").get(registry).cloned();
                if creds.is_none() || matches!(was, Some(HostAuth::Basic)) {
                    return Ok(false);
                }
                self.auth
                    .lock()
                    .expect("auth lock")
                    .insert(registry.to_string(), HostAuth::Basic);
                Ok(true)
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .cloned()
                    .ok_or_else(|| MirrorError::Auth {
                        registry: registry.into(),
                        what: what.into(),
                        status: 401,
                        message: format!("bearer challenge without realm: {ch}"),
                    })?;
                let service = params.get("service").cloned();
                let mut scopes = scope.0.clone();
                if let Some(s) = params.get("scope") {
                    for s in s.split(' ') {
                        if !scopes.iter().any(|x| x == s) {
                            scopes.push(s.to_string());
                        }
                    }
                }
                let token = self
                    .fetch_token(registry, &realm, service.as_deref(), &scopes, what)
                    .await?;
                let mut map = self.auth.lock().expect("auth lock");
                let entry = map
                    .entry(registry.to_string())
                    .or_insert(HostAuth::Anonymous);
                match entry {
                    HostAuth::Bearer { tokens, .. } => {
                        if tokens.get(&scope.key()).map(|t| &t.value) == Some(&token.value) {
                            // Same token refused again: more tries will not help.
                            return Ok(false);
                        }
                        tokens.insert(scope.key(), token);
                    }
                    _ => {
                        let mut tokens = HashMap::new();
                        tokens.insert(scope.key(), token);
                        *entry = HostAuth::Bearer {
                            realm,
                            service,
                            tokens,
                        };
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Ask the token service `realm` for a token for `scopes` (with the config.json credentials
    /// of `registry` when there are some). Credentials are never sent over plain HTTP unless the
    /// registry itself was named insecure.
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        what: &str,
    ) -> Result<Token, MirrorError> {
        let creds = self.credentials(registry).await?;
        let origin = self.credentials_origin(registry);
        if creds.is_some() && realm.starts_with("http://") && !self.opts.insecure.contains(registry)
        {
            return Err(MirrorError::Usage(format!(
                "registry {registry} sends clients for tokens to {realm}, which is plain HTTP: kprov does not send the credentials for {registry} over it; serve the token service over HTTPS, or pass --insecure-registry {registry} if the network is trusted"
            )));
        }
        tracing::debug!(
            "registry {registry}: requesting a bearer token from {realm} for [{}] ({})",
            scopes.join(" "),
            if creds.is_some() {
                format!("with the credentials from {origin}")
            } else {
                "anonymously".to_string()
            }
        );
        let mut req = self.http.get(realm);
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            q.push(("service", s));
        }
        for s in scopes {
            q.push(("scope", s));
        }
        req = req.query(&q);
        if let Some(c) = &creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(registry, realm, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MirrorError::Auth {
                registry: registry.into(),
                what: what.into(),
                status: status.as_u16(),
                message: format!(
                    "token service {realm} refused {}: {}",
                    if creds.is_some() {
                        format!("the credentials from {origin}")
                    } else {
                        format!("an anonymous request (no credentials for it from {origin})")
                    },
                    body_excerpt(resp).await
                ),
            });
        }
        #[derive(Deserialize)]
        struct Tok {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        // Not `resp.json()`: its error could quote the body, which holds the token.
        let body = resp.bytes().await.map_err(|e| MirrorError::Auth {
            registry: registry.into(),
            what: what.into(),
            status: status.as_u16(),
            message: format!("token service {realm}: answer cut: {e}"),
        })?;
        let t: Tok = serde_json::from_slice(&body).map_err(|_| MirrorError::Auth {
            registry: registry.into(),
            what: what.into(),
            status: status.as_u16(),
            message: format!("token service {realm} answered something that is not a token response (JSON with `token`)"),
        })?;
        let value = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token)
            .ok_or_else(|| MirrorError::Auth {
                registry: registry.into(),
                what: what.into(),
                status: status.as_u16(),
                message: format!("token service {realm} answered no token"),
            })?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(DEFAULT_TOKEN_SECS).max(1));
        let margin = (life / 4).min(Duration::from_secs(30));
        tracing::debug!(
            "registry {registry}: got a bearer token for [{}], valid {} s",
            scopes.join(" "),
            life.as_secs()
        );
        Ok(Token {
            value,
            refresh_at: Instant::now() + life - margin,
        })
    }

    /// For a registry known to want bearer tokens: get a token for `scope` before the request
    /// when there is none yet or it is about to expire (saves a 401 round trip, and a streamed
    /// upload, which cannot be replayed after a 401, never starts with a stale token).
    async fn ensure_fresh(
        &self,
        registry: &str,
        scope: &Scope,
        what: &str,
    ) -> Result<(), MirrorError> {
        let need = {
            let map = self.auth.lock().expect("auth lock");
            match map.get(registry) {
                Some(HostAuth::Bearer {
                    realm,
                    service,
                    tokens,
                }) => match tokens.get(&scope.key()) {
                    Some(t) if t.refresh_at > Instant::now() => None,
                    _ => Some((realm.clone(), service.clone())),
                },
                _ => None,
            }
        };
        let Some((realm, service)) = need else {
            return Ok(());
        };
        let token = self
            .fetch_token(registry, &realm, service.as_deref(), &scope.0, what)
            .await?;
        if let Some(HostAuth::Bearer { tokens, .. }) =
            self.auth.lock().expect("auth lock").get_mut(registry)
        {
            tokens.insert(scope.key(), token);
        }
        Ok(())
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

    fn manifest_url(&self, img: &ImageRef, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(&img.registry),
            img.repository
        )
    }

    /// `GET /v2/`: is the registry there and do we get in?
    pub async fn ping(&self, registry: &str) -> Result<(), MirrorError> {
        let url = format!("{}/v2/", self.base_url(registry));
        let what = format!("registry {registry}");
        self.retry(&what, || async {
            let resp = self
                .send(registry, &Scope::none(), &what, |h| h.get(&url))
                .await?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(self.error_for(registry, &what, &url, resp).await)
            }
        })
        .await
    }

    /// `HEAD` a manifest: `None` when absent.
    pub async fn head_manifest(&self, img: &ImageRef) -> Result<Option<ManifestHead>, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::pull(&img.repository), &what, |h| {
                    h.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(ManifestHead {
                    digest: header(&resp, "docker-content-digest"),
                    media_type: header(&resp, "content-type"),
                })),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(self.error_for(&img.registry, &what, &url, resp).await),
            }
        })
        .await
    }

    /// `GET` a manifest by the reference's digest or tag; verifies the bytes against the digest
    /// when fetched by digest (and against `Docker-Content-Digest` when the registry sends one).
    pub async fn get_manifest(&self, img: &ImageRef) -> Result<RawManifest, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::pull(&img.repository), &what, |h| {
                    h.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(MirrorError::NotFound {
                    image: img.to_string(),
                    registry: img.registry.clone(),
                });
            }
            if !resp.status().is_success() {
                return Err(self.error_for(&img.registry, &what, &url, resp).await);
            }
            let content_type = header(&resp, "content-type");
            let served_digest = header(&resp, "docker-content-digest");
            if resp
                .content_length()
                .is_some_and(|l| l as usize > MAX_MANIFEST_BYTES)
            {
                return Err(MirrorError::Manifest {
                    image: img.to_string(),
                    message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
                });
            }
            let bytes = resp.bytes().await.map_err(|e| MirrorError::Http {
                what: what.clone(),
                url: url.clone(),
                status: 0,
                message: e.to_string(),
            })?;
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(MirrorError::Manifest {
                    image: img.to_string(),
                    message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
                });
            }
            let digest = sha256_digest(&bytes);
            if let Some(expected) = img.digest.as_ref().or(served_digest.as_ref()) {
                if expected.starts_with("sha256:") && *expected != digest {
                    return Err(MirrorError::DigestMismatch {
                        what: what.clone(),
                        expected: expected.clone(),
                        actual: digest,
                    });
                }
            }
            let media_type = super::copy::media_type_of(&bytes)
                .or(content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
                .unwrap_or_default();
            Ok(RawManifest {
                bytes: bytes.to_vec(),
                media_type,
                digest,
            })
        })
        .await
    }

    /// `PUT` manifest bytes as they are under the reference's tag (or digest); checks the
    /// registry stored them under the digest of those bytes. Returns that digest.
    pub async fn put_manifest(
        &self,
        img: &ImageRef,
        manifest: &RawManifest,
    ) -> Result<String, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::push(&img.repository), &what, |h| {
                    h.put(&url)
                        .header(CONTENT_TYPE, &manifest.media_type)
                        .body(manifest.bytes.clone())
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.write_error(&img.registry, &what, &url, resp).await);
            }
            if let Some(d) = header(&resp, "docker-content-digest") {
                if d != manifest.digest {
                    return Err(MirrorError::DigestMismatch {
                        what: format!("{what} as stored by {}", img.registry),
                        expected: manifest.digest.clone(),
                        actual: d,
                    });
                }
            }
            Ok(manifest.digest.clone())
        })
        .await
    }

    async fn write_error(
        &self,
        registry: &str,
        what: &str,
        url: &str,
        resp: Response,
    ) -> MirrorError {
        let status = resp.status().as_u16();
        match status {
            401 | 403 => self.error_for(registry, what, url, resp).await,
            // Read-only mode answers 405; a full disk or quota shows as 5xx/413/507.
            405 | 413 | 507 => MirrorError::WriteRefused {
                target: registry.into(),
                what: what.into(),
                status,
                message: body_excerpt(resp).await,
            },
            s if s >= 500 => {
                let message = body_excerpt(resp).await;
                let lower = message.to_lowercase();
                if lower.contains("no space")
                    || lower.contains("read-only")
                    || lower.contains("readonly")
                {
                    MirrorError::WriteRefused {
                        target: registry.into(),
                        what: what.into(),
                        status,
                        message,
                    }
                } else {
                    MirrorError::Http {
                        what: what.into(),
                        url: url.into(),
                        status,
                        message,
                    }
                }
            }
            _ => self.error_for(registry, what, url, resp).await,
        }
    }

    fn blob_url(&self, registry: &str, repo: &str, digest: &str) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base_url(registry))
    }

    /// `HEAD` a blob: its size when present.
    pub async fn head_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<u64>, MirrorError> {
        let url = self.blob_url(registry, repo, digest);
        let what = format!("blob {digest} in {registry}/{repo}");
        self.retry(&what, || async {
            let resp = self
                .send(registry, &Scope::pull(repo), &what, |h| h.head(&url))
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(
                    header(&resp, "content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0),
                )),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(self.error_for(registry, &what, &url, resp).await),
            }
        })
        .await
    }

    /// `GET` a blob; the caller streams the body (redirects to storage are followed; reqwest
    /// drops the `Authorization` header when a redirect leaves the registry's host).
    pub async fn get_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Response, MirrorError> {
        let url = self.blob_url(registry, repo, digest);
        let what = format!("blob {digest} of {registry}/{repo}");
        let resp = self
            .send(registry, &Scope::pull(repo), &what, |h| h.get(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(MirrorError::NotFound {
                image: format!("{registry}/{repo}@{digest} (blob)"),
                registry: registry.into(),
            }),
            _ => Err(self.error_for(registry, &what, &url, resp).await),
        }
    }

    fn resolve_location(&self, registry: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base_url(registry))
        }
    }

    /// Try a cross-repository mount of `digest` from `from` into `repo`; true when mounted
    /// (false when the registry started an ordinary upload instead, which is then cancelled).
    pub async fn mount_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<bool, MirrorError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base_url(registry));
        let what = format!("mount of blob {digest} from {from} into {registry}/{repo}");
        let resp = self
            .send(registry, &Scope::mount(repo, from), &what, |h| {
                h.post(&url)
                    .query(&[("mount", digest), ("from", from)])
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Some(loc) = header(&resp, "location") {
                    let loc = self.resolve_location(registry, &loc);
                    let _ = self
                        .send(registry, &Scope::push(repo), &what, |h| h.delete(&loc))
                        .await;
                }
                Ok(false)
            }
            _ => Err(self.write_error(registry, &what, &url, resp).await),
        }
    }

    /// Start an upload session in `repo`; returns its absolute location.
    pub async fn start_upload(
        &self,
        registry: &str,
        repo: &str,
        what: &str,
    ) -> Result<String, MirrorError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base_url(registry));
        let resp = self
            .send(registry, &Scope::push(repo), what, |h| {
                h.post(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.write_error(registry, what, &url, resp).await);
        }
        let loc = header(&resp, "location").ok_or_else(|| MirrorError::Http {
            what: what.into(),
            url: url.clone(),
            status: 202,
            message: "upload started without a Location header".into(),
        })?;
        Ok(self.resolve_location(registry, &loc))
    }

    /// Finish an upload with one streamed `PUT …?digest=` of `size` bytes. The registry checks
    /// the digest too; the body stream (see `copy`) refuses to deliver its last bytes when they do
    /// not hash to `digest`, so a bad blob is never committed even by a registry that trusts.
    /// When the body stream fails, the caller finds the real cause in the stream's error slot.
    // The upload's identity (registry, repo, location, digest, size) is all needed here.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_upload(
        &self,
        registry: &str,
        repo: &str,
        location: &str,
        digest: &str,
        size: u64,
        body: reqwest::Body,
        what: &str,
    ) -> Result<(), MirrorError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        self.ensure_fresh(registry, &Scope::push(repo), what)
            .await?;
        let mut req = self
            .http
            .request(Method::PUT, &url)
            .headers(headers)
            .body(body);
        if let Some(h) = self.auth_header(registry, &Scope::push(repo)) {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(registry, &url, &e))?;
        if resp.status() == StatusCode::CREATED || resp.status().is_success() {
            Ok(())
        } else {
            Err(self.write_error(registry, what, &url, resp).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge("Basic realm=x");
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "x"));
    }
}
