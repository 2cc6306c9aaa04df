//! Registry credentials from the docker `config.json`, looked up the way the docker CLI does:
//! a `credHelpers` entry for the registry wins, else the `credsStore`, else the plain `auths`
//! entry. Helpers are run as docker runs them (`docker-credential-NAME get`, the server URL on
//! stdin, `{"ServerURL","Username","Secret"}` JSON on stdout), so ECR, ACR, GCR, Harbor and the
//! desktop keychains work unchanged.
//!
//! Why not the `docker_credential` crate (1.4.0): it consults plain `auths` entries before the
//! `credsStore` (docker does the opposite), reports "credentials not found" as a helper failure
//! instead of "anonymous", and drops the cause of a helper that cannot be started (not on
//! `PATH`), so kprov could not say which helper for which registry failed and why.
//!
//! Secrets are only ever read from the helper's stdout; the helper's argv is `get` alone, and no
//! message quotes what a helper printed on success.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use super::MirrorError;

/// The message docker-credential-helpers print (exit status 1) for a server they hold nothing
/// for (`credentials.errCredentialsNotFoundMessage`): docker then goes on anonymously.
pub const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// The server URL docker uses for Docker Hub (`registry.IndexServer`).
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A username/password (or identity token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (`<token>` for an identity token, docker's convention).
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: options and clients are debug-logged.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Where the credentials of one registry come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource<'a> {
    /// Run `docker-credential-NAME`; `setting` says which config.json key chose it.
    Helper {
        /// Helper name (the part after `docker-credential-`).
        name: &'a str,
        /// `credHelpers` or `credsStore`.
        setting: &'static str,
    },
    /// A plain `auths` entry.
    Static(&'a Credentials),
    /// Nothing: anonymous.
    None,
}

/// The docker `config.json`: `auths`, `credsStore` and `credHelpers`.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// Registry host → credentials written in the file.
    pub auths: HashMap<String, Credentials>,
    /// Default helper for every registry (`credsStore`).
    pub creds_store: Option<String>,
    /// Registry host → helper (`credHelpers`), overriding `creds_store`.
    pub cred_helpers: HashMap<String, String>,
    /// The file it was read from (for messages).
    pub path: Option<PathBuf>,
}

/// `registry-1.docker.io`, `https://index.docker.io/v1/` … → the registry host kprov uses.
pub fn normalise_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// The server URL a helper is asked about for a registry host (docker's: the index URL for
/// Docker Hub, the bare host otherwise).
pub fn server_url(registry: &str) -> String {
    match normalise_host(registry).as_str() {
        "docker.io" => DOCKER_HUB_SERVER.to_string(),
        other => other.to_string(),
    }
}

fn static_credentials(key: &str, e: DockerAuthEntry) -> Result<Option<Credentials>, String> {
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| format!("auths[{key}].auth is not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| format!("auths[{key}].auth is not UTF-8"))?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| format!("auths[{key}].auth is not user:password"))?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    if let Some(t) = e.identitytoken.filter(|t| !t.is_empty()) {
        // An identity token is exchanged at the token endpoint as the password of the
        // pseudo-user `<token>` (docker's convention).
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: t,
        }));
    }
    Ok(match (e.username, e.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u,
            password: p,
        }),
        _ => None,
    })
}

impl DockerConfig {
    /// The file docker uses: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d).join("config.json"));
        }
        directories::BaseDirs::new().map(|b| b.home_dir().join(".docker").join("config.json"))
    }

    /// Load the default file; a missing file means no credentials.
    pub fn load_default() -> Result<DockerConfig, MirrorError> {
        match Self::default_path() {
            Some(p) if p.exists() => Self::load(&p),
            _ => Ok(DockerConfig::default()),
        }
    }

    /// Load a `config.json`.
    pub fn load(path: &Path) -> Result<DockerConfig, MirrorError> {
        let text = std::fs::read_to_string(path).map_err(|e| MirrorError::io(path.display(), e))?;
        let mut c = Self::parse(&text)
            .map_err(|m| MirrorError::Usage(format!("{}: {m}", path.display())))?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parse a `config.json` text.
    pub fn parse(text: &str) -> Result<DockerConfig, String> {
        let f: DockerConfigFile =
            serde_json::from_str(text).map_err(|e| format!("not a docker config.json: {e}"))?;
        let mut auths = HashMap::new();
        for (key, e) in f.auths {
            if let Some(c) = static_credentials(&key, e)? {
                auths.insert(normalise_host(&key), c);
            }
        }
        Ok(DockerConfig {
            auths,
            creds_store: f.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: f
                .cred_helpers
                .into_iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(k, h)| (normalise_host(&k), h))
                .collect(),
            path: None,
        })
    }

    /// The credentials written in the file's `auths` for a registry host (helpers not run).
    pub fn for_registry(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalise_host(registry))
    }

    /// Where a registry's credentials come from, in docker's order: `credHelpers`, then
    /// `credsStore`, then `auths`.
    pub fn source(&self, registry: &str) -> CredentialSource<'_> {
        let host = normalise_host(registry);
        if let Some(h) = self.cred_helpers.get(&host) {
            return CredentialSource::Helper {
                name: h,
                setting: "credHelpers",
            };
        }
        if let Some(h) = &self.creds_store {
            return CredentialSource::Helper {
                name: h,
                setting: "credsStore",
            };
        }
        match self.auths.get(&host) {
            Some(c) => CredentialSource::Static(c),
            None => CredentialSource::None,
        }
    }

    /// The credentials for a registry, running its helper if one is configured. `Ok(None)`
    /// means anonymous (nothing configured, or the helper has nothing for it). Blocking.
    pub fn resolve(&self, registry: &str) -> Result<Option<Credentials>, MirrorError> {
        match self.source(registry) {
            CredentialSource::Helper { name, setting } => {
                let r = run_helper(name, &server_url(registry));
                r.map_err(|problem| MirrorError::CredentialHelper {
                    helper: format!("docker-credential-{name}"),
                    registry: registry.to_string(),
                    problem,
                    fix: format!(
                        "check it by hand with `echo {} | docker-credential-{name} get`, or remove it from `{setting}` in {}",
                        server_url(registry),
                        self.path
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "config.json".into())
                    ),
                })
            }
            CredentialSource::Static(c) => Ok(Some(c.clone())),
            CredentialSource::None => Ok(None),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// A helper's error output, shortened, for a message. Its stdout on failure is an error text
/// (the protocol puts errors there); anything that looks like a credential answer is withheld.
fn helper_output_excerpt(stdout: &[u8], stderr: &[u8]) -> String {
    let mut parts = Vec::new();
    for b in [stdout, stderr] {
        let t = String::from_utf8_lossy(b).trim().to_string();
        if t.is_empty() {
            continue;
        }
        if t.contains("\"Secret\"") {
            parts.push("(output withheld: it looks like credentials)".to_string());
            continue;
        }
        let cut = t.floor_char_boundary(200);
        parts.push(if cut < t.len() {
            format!("{}…", &t[..cut])
        } else {
            t
        });
    }
    if parts.is_empty() {
        "no output".into()
    } else {
        parts.join(" / ")
    }
}

/// Run `docker-credential-NAME get` for `server` (on stdin). `Ok(None)`: the helper has no
/// credentials for it. `Err`: why the helper failed (without any secret).
pub fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{name}");
    tracing::debug!("running {program} get for {server}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} is not on PATH (install it)"),
            _ => format!("{program} could not be started: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper may exit without reading stdin; its exit status says what happened.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if !out.status.success() {
        if String::from_utf8_lossy(&out.stdout).trim() == HELPER_NOT_FOUND {
            tracing::debug!("{program} has no credentials for {server}: anonymous");
            return Ok(None);
        }
        return Err(format!(
            "{program} get failed ({}): {}",
            out.status,
            helper_output_excerpt(&out.stdout, &out.stderr)
        ));
    }
    // Not quoted on error: a half-broken answer may still hold the secret.
    let a: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!("{program} get answered something that is not {{\"Username\",\"Secret\"}} JSON")
    })?;
    if a.username.is_empty() && a.secret.is_empty() {
        return Ok(None);
    }
    tracing::debug!("{program} gave credentials for {server}");
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_forms() {
        let c = DockerConfig::parse(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}, "127.0.0.1:5000": {"username": "a", "password": "b"}, "q.io": {}}}"#,
        )
        .unwrap();
        assert_eq!(c.for_registry("docker.io").unwrap().username, "u");
        assert_eq!(c.for_registry("127.0.0.1:5000").unwrap().password, "b");
        assert!(c.for_registry("q.io").is_none());
        assert!(DockerConfig::parse(r#"{"auths": {"x": {"auth": "!!"}}}"#).is_err());
    }

    #[test]
    fn helpers_take_precedence_in_docker_order() {
        let c = DockerConfig::parse(
            r#"{"auths": {"a.io": {"auth": "dTpw"}}, "credsStore": "store", "credHelpers": {"b.io": "ecr-login", "https://index.docker.io/v1/": "hub"}}"#,
        )
        .unwrap();
        let helper = |r| match c.source(r) {
            CredentialSource::Helper { name, setting } => Some((name.to_string(), setting)),
            _ => None,
        };
        assert_eq!(helper("b.io"), Some(("ecr-login".into(), "credHelpers")));
        assert_eq!(helper("docker.io"), Some(("hub".into(), "credHelpers")));
        // credsStore beats a plain auths entry, as in docker.
        assert_eq!(helper("a.io"), Some(("store".into(), "credsStore")));
        let plain = DockerConfig::parse(r#"{"auths": {"a.io": {"auth": "dTpw"}}}"#).unwrap();
        assert!(matches!(plain.source("a.io"), CredentialSource::Static(_)));
        assert_eq!(plain.source("c.io"), CredentialSource::None);
    }

    #[test]
    fn server_urls_are_dockers() {
        assert_eq!(server_url("docker.io"), DOCKER_HUB_SERVER);
        assert_eq!(server_url("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2-secret".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
