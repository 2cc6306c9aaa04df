//! Registry authentication: anonymous first, then Basic with the docker credentials, or a
//! Bearer token fetched from the challenge's realm and cached per registry and scope.

use super::*;

/// A bearer token and when to fetch a new one (before it expires).
#[derive(Clone)]
pub(super) struct Token {
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
pub(super) enum HostAuth {
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
    pub(super) fn key(&self) -> String {
        self.0.join(" ")
    }
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

impl RegistryClient {
    /// The credentials for `registry` (running its docker credential helper on first use).
    /// `Ok(None)`: anonymous.
    pub(super) async fn credentials(
        &self,
        registry: &str,
    ) -> Result<Option<Credentials>, MirrorError> {
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
    pub(super) fn resolved_credentials(&self, registry: &str) -> Option<Credentials> {
        self.creds
            .lock()
            .expect("creds lock")
            .get(registry)
            .cloned()
            .flatten()
    }

    /// Where the credentials of `registry` came from, for messages.
    pub(super) fn credentials_origin(&self, registry: &str) -> String {
        use crate::mirror::credentials::CredentialSource;
        match self.opts.docker_config.source(registry) {
            CredentialSource::Helper { name, setting } => {
                format!("credential helper docker-credential-{name} ({setting})")
            }
            _ => "config.json".to_string(),
        }
    }

    pub(super) fn auth_header(&self, registry: &str, scope: &Scope) -> Option<HeaderValue> {
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
    pub(super) async fn authenticate(
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
    pub(super) async fn fetch_token(
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
    pub(super) async fn ensure_fresh(
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
}
