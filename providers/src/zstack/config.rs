//! Configuration of the ZStack adapter: endpoint, credentials, placement defaults, timeouts.
//!
//! Credentials are never taken from the command line: they come from the environment
//! ([`ZStackCredentials::from_env`]) or from a file ([`ZStackCredentials::from_file`]), and every
//! secret is wrapped in [`Secret`], whose `Debug` and `Display` print `***`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::CloudError;

use super::PROVIDER;

/// Environment variable holding the ZStack account name (account login).
pub const ENV_ACCOUNT: &str = "ZSTACK_ACCOUNT";
/// Environment variable holding the ZStack account password (plain text; hashed before sending).
pub const ENV_PASSWORD: &str = "ZSTACK_PASSWORD";
/// Environment variable holding the AccessKey id (AccessKey mode).
pub const ENV_ACCESS_KEY_ID: &str = "ZSTACK_ACCESS_KEY_ID";
/// Environment variable holding the AccessKey secret (AccessKey mode).
pub const ENV_ACCESS_KEY_SECRET: &str = "ZSTACK_ACCESS_KEY_SECRET";

/// A secret string (password, AccessKey secret). `Debug` and `Display` print `***`; the value is
/// only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call sites must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// How kprov authenticates to the ZStack management node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZStackCredentials {
    /// Account login (`PUT /zstack/v1/accounts/login`, session in `Authorization: OAuth ...`).
    Account {
        /// Account name, e.g. `admin`.
        name: String,
        /// Plain-text password; only its SHA-512 hex digest is sent.
        password: Secret,
    },
    /// AccessKey: every request is signed with HMAC-SHA1 (`Authorization: ZStack id:sig`).
    AccessKey {
        /// AccessKey id.
        id: String,
        /// AccessKey secret.
        secret: Secret,
    },
}

impl ZStackCredentials {
    /// Read credentials from the environment: `ZSTACK_ACCOUNT` + `ZSTACK_PASSWORD`, or
    /// `ZSTACK_ACCESS_KEY_ID` + `ZSTACK_ACCESS_KEY_SECRET`. Account credentials win when both
    /// pairs are complete.
    pub fn from_env() -> Result<Self, CloudError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`ZStackCredentials::from_env`], with a custom variable lookup (for tests and for
    /// callers that merge several sources).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CloudError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let (account, password) = (get(ENV_ACCOUNT), get(ENV_PASSWORD));
        let (key_id, key_secret) = (get(ENV_ACCESS_KEY_ID), get(ENV_ACCESS_KEY_SECRET));
        match (account, password, key_id, key_secret) {
            (Some(name), Some(pw), _, _) => Ok(ZStackCredentials::Account {
                name,
                password: Secret::new(pw),
            }),
            (_, _, Some(id), Some(secret)) => Ok(ZStackCredentials::AccessKey {
                id,
                secret: Secret::new(secret),
            }),
            (account, password, key_id, key_secret) => {
                let mut missing = Vec::new();
                if account.is_some() && password.is_none() {
                    missing.push(ENV_PASSWORD);
                } else if password.is_some() && account.is_none() {
                    missing.push(ENV_ACCOUNT);
                } else if key_id.is_some() && key_secret.is_none() {
                    missing.push(ENV_ACCESS_KEY_SECRET);
                } else if key_secret.is_some() && key_id.is_none() {
                    missing.push(ENV_ACCESS_KEY_ID);
                }
                let message = if missing.is_empty() {
                    format!(
                        "no ZStack credentials in the environment: neither {ENV_ACCOUNT}/{ENV_PASSWORD} nor {ENV_ACCESS_KEY_ID}/{ENV_ACCESS_KEY_SECRET} is set"
                    )
                } else {
                    format!(
                        "incomplete ZStack credentials in the environment: {} is not set",
                        missing.join(", ")
                    )
                };
                Err(CloudError::Auth {
                    provider: PROVIDER,
                    message,
                    fix: format!(
                        "export {ENV_ACCOUNT} and {ENV_PASSWORD} (or {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET}), or use a credentials file; never pass them on the command line"
                    ),
                })
            }
        }
    }

    /// Read credentials from a file of `key: value` (or `key = value`) lines; `#` starts a
    /// comment and values may be quoted. Keys: `account` + `password`, or `access_key_id` +
    /// `access_key_secret` (`accessKeyId` / `accessKeySecret` and the `ZSTACK_*` variable names
    /// are accepted too). A file readable by group or others is used but warned about.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, CloudError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CloudError::Auth {
            provider: PROVIDER,
            message: format!("cannot read credentials file {}: {e}", path.display()),
            fix: "check the path and its permissions".into(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "ZStack credentials file is readable by other users; chmod 600 it"
                    );
                }
            }
        }
        Self::parse_file(&text).map_err(|message| CloudError::Auth {
            provider: PROVIDER,
            message: format!("credentials file {}: {message}", path.display()),
            fix: "write `account: NAME` and `password: PASSWORD` (or `access_key_id:` and `access_key_secret:`) lines".into(),
        })
    }

    /// Parse the text of a credentials file (see [`ZStackCredentials::from_file`]).
    pub fn parse_file(text: &str) -> Result<Self, String> {
        let mut account = None;
        let mut password = None;
        let mut key_id = None;
        let mut key_secret = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty()
                || line.starts_with('#')
                || line.starts_with(';')
                || line.starts_with('[')
                || line == "---"
            {
                continue;
            }
            let split = match (line.find(':'), line.find('=')) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return Err(format!("line {}: expected `key: value`", n + 1)),
            };
            let key = line[..split].trim().to_ascii_lowercase().replace('-', "_");
            let value = unquote(line[split + 1..].trim()).to_string();
            match key.as_str() {
                "account" | "account_name" | "accountname" | "zstack_account" => {
                    account = Some(value)
                }
                "password" | "zstack_password" => password = Some(value),
                "access_key_id" | "accesskeyid" | "zstack_access_key_id" => key_id = Some(value),
                "access_key_secret" | "accesskeysecret" | "zstack_access_key_secret" => {
                    key_secret = Some(value)
                }
                // Unknown keys (endpoint, zone, ...) are ignored so one file can hold more.
                _ => {}
            }
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        match (
            nonempty(account),
            nonempty(password),
            nonempty(key_id),
            nonempty(key_secret),
        ) {
            (Some(name), Some(pw), _, _) => Ok(ZStackCredentials::Account {
                name,
                password: Secret::new(pw),
            }),
            (_, _, Some(id), Some(secret)) => Ok(ZStackCredentials::AccessKey {
                id,
                secret: Secret::new(secret),
            }),
            (Some(_), None, _, _) => Err("`account` is set but `password` is missing".into()),
            (None, Some(_), _, _) => Err("`password` is set but `account` is missing".into()),
            (_, _, Some(_), None) => {
                Err("`access_key_id` is set but `access_key_secret` is missing".into())
            }
            (_, _, None, Some(_)) => {
                Err("`access_key_secret` is set but `access_key_id` is missing".into())
            }
            _ => Err("no credentials found".into()),
        }
    }

    /// A loggable description (`account admin` / `access key AK...`), without secrets.
    pub fn describe(&self) -> String {
        match self {
            ZStackCredentials::Account { name, .. } => format!("account {name}"),
            ZStackCredentials::AccessKey { id, .. } => format!("access key {id}"),
        }
    }
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// How GPUs are requested at VM creation. Which of the two ZStack honours for passthrough of
/// specific devices is "unconfirmed" in the API notes (the PCI plugin is closed source), hence
/// the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuAttach {
    /// `pciDevice::<uuid>` (or `mdevDevice::<uuid>` for mdev) system tags naming free devices
    /// on one host, plus `hostUuid` so placement matches. The default.
    #[default]
    PciDeviceTags,
    /// `pciDeviceSpec::<specUuid>::<n>` (or `mdevDeviceSpec::<specUuid>::<n>`) system tags;
    /// ZStack's allocator picks host and devices.
    SpecTags,
}

/// Everything the ZStack adapter needs to talk to one management node.
#[derive(Debug, Clone)]
pub struct ZStackConfig {
    /// Management node base URL, e.g. `http://10.0.0.5:8080`; the adapter appends `/zstack/v1`.
    pub endpoint: String,
    /// Credentials (never logged).
    pub credentials: ZStackCredentials,
    /// Zone name or uuid to place VMs in; `None` = any zone (the first one by name if several).
    pub zone: Option<String>,
    /// L3 network name or uuid; `None` = the first (by name) non-system L3 with the `Userdata`
    /// network service.
    pub l3_network: Option<String>,
    /// How long to wait for one asynchronous API job before giving up with
    /// [`CloudError::Timeout`].
    pub job_timeout: Duration,
    /// Job polling interval (100 ms by default): a job is polled at this interval for its first
    /// `10 × poll_interval`, then each wait is 1.5 times the previous one, up to
    /// [`ZStackConfig::max_poll_interval`]. Also the first wait before the adapter retries a
    /// transient failure; that wait doubles per retry, with ±25 % jitter.
    pub poll_interval: Duration,
    /// Upper bound of the job polling interval and of the retry wait (2 s by default).
    pub max_poll_interval: Duration,
    /// Timeout of one HTTP request (not of a job).
    pub request_timeout: Duration,
    /// How many times the adapter itself retries a call that failed transiently (MN
    /// unavailable, 5xx, connection errors) before returning the retryable error.
    pub max_retries: u32,
    /// Results per query page (`limit`); every page is read until `total` results are in.
    pub page_size: usize,
    /// Mutating calls the executor should run at once (ZStack has 5 API workers per MN).
    pub concurrency: usize,
    /// How GPUs are requested at creation (the one "unconfirmed" switch).
    pub gpu_attach: GpuAttach,
}

impl ZStackConfig {
    /// A configuration with defaults: any zone, the first Userdata-capable L3, jobs time out
    /// after 30 min, polling every 100 ms for the first second, then backing off to 2 s, HTTP requests time out after
    /// 60 s, 4 in-adapter retries, query pages of 1000, concurrency 5, GPUs by `pciDevice::` tags.
    pub fn new(endpoint: impl Into<String>, credentials: ZStackCredentials) -> Self {
        ZStackConfig {
            endpoint: endpoint.into(),
            credentials,
            zone: None,
            l3_network: None,
            job_timeout: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            max_retries: 4,
            page_size: super::query::PAGE_SIZE,
            concurrency: 5,
            gpu_attach: GpuAttach::PciDeviceTags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_printed() {
        let c = ZStackCredentials::Account {
            name: "admin".into(),
            password: Secret::new("hunter2"),
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
        assert_eq!(format!("{}", Secret::new("x")), "***");
        let cfg = ZStackConfig::new("http://127.0.0.1:1", c);
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn env_lookup_prefers_account_and_names_missing_vars() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ZStackCredentials::from_lookup(env(&[
            ("ZSTACK_ACCOUNT", "admin"),
            ("ZSTACK_PASSWORD", "pw"),
        ]))
        .unwrap();
        assert_eq!(
            c,
            ZStackCredentials::Account {
                name: "admin".into(),
                password: "pw".into()
            }
        );
        let c = ZStackCredentials::from_lookup(env(&[
            ("ZSTACK_ACCESS_KEY_ID", "id"),
            ("ZSTACK_ACCESS_KEY_SECRET", "s"),
        ]))
        .unwrap();
        assert_eq!(
            c,
            ZStackCredentials::AccessKey {
                id: "id".into(),
                secret: "s".into()
            }
        );
        let e = ZStackCredentials::from_lookup(env(&[]))
            .unwrap_err()
            .to_string();
        for var in [
            ENV_ACCOUNT,
            ENV_PASSWORD,
            ENV_ACCESS_KEY_ID,
            ENV_ACCESS_KEY_SECRET,
        ] {
            assert!(e.contains(var), "{e}");
        }
        let e = ZStackCredentials::from_lookup(env(&[("ZSTACK_ACCOUNT", "admin")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ZSTACK_PASSWORD is not set"), "{e}");
    }

    #[test]
    fn credentials_file_formats() {
        let c = ZStackCredentials::parse_file("# creds\naccount: admin\npassword: \"p:w=x\"\n")
            .unwrap();
        assert_eq!(
            c,
            ZStackCredentials::Account {
                name: "admin".into(),
                password: "p:w=x".into()
            }
        );
        let c = ZStackCredentials::parse_file(
            "[zstack]\naccess_key_id = AK1\naccess_key_secret = 's3'\n",
        )
        .unwrap();
        assert_eq!(
            c,
            ZStackCredentials::AccessKey {
                id: "AK1".into(),
                secret: "s3".into()
            }
        );
        assert!(ZStackCredentials::parse_file("account: admin\n")
            .unwrap_err()
            .contains("password"));
        assert!(ZStackCredentials::parse_file("nonsense\n").is_err());
    }

    #[test]
    fn credentials_file_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zstack.creds");
        std::fs::write(&p, "account: admin\npassword: password\n").unwrap();
        let c = ZStackCredentials::from_file(&p).unwrap();
        assert_eq!(c.describe(), "account admin");
        let e = ZStackCredentials::from_file(dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, CloudError::Auth { .. }));
    }
}
