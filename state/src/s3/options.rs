//! How an S3 store is reached: the options (endpoint, path style, region, credentials,
//! attempts) from the environment, and `s3://BUCKET[/PREFIX]` URLs.

use super::*;

/// Environment variable: endpoint URL of an S3-compatible store (`http://127.0.0.1:9000`).
/// Takes precedence over the SDK's own `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
pub const ENDPOINT_ENV: &str = "KPROV_S3_ENDPOINT";

/// Environment variable: `true` forces path-style requests (`http://host/bucket/key`) instead of
/// virtual-hosted style (`http://bucket.host/key`). Implied when the endpoint host is an IP
/// address or `localhost`, where bucket subdomains cannot resolve.
pub const FORCE_PATH_STYLE_ENV: &str = "KPROV_S3_FORCE_PATH_STYLE";

/// Environment variable: `1` lets kprov use a store that ignores conditional writes (the probe
/// then only warns). Same as the CLI flag [`UNSAFE_NO_CONDITIONAL_WRITES_FLAG`].
pub const UNSAFE_NO_CONDITIONAL_WRITES_ENV: &str = "KPROV_UNSAFE_NO_CONDITIONAL_WRITES";

/// The CLI flag that sets [`S3Options::unsafe_no_conditional_writes`] (named in messages).
pub const UNSAFE_NO_CONDITIONAL_WRITES_FLAG: &str = "--unsafe-no-conditional-writes";

/// Region used when neither the environment nor the AWS config file names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Attempts per request (first try included), with the SDK's standard retry mode.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Folder (under the store prefix) of the conditional-write probe objects. Its `.kprov-` name
/// cannot clash with a state key ([`validate_key`] reserves those) and is hidden from `list`.
pub const PROBE_DIR: &str = ".kprov-probe";

/// Static credentials, for tests and stores outside the AWS credential chain: the AWS SDK's
/// access-key credentials, built with `Credentials::new(key_id, secret, None, None,
/// "kprov-static")`. Their `Debug` redacts the secret. The same type as
/// `kprov_providers::aws::Credentials` (one SDK release train).
pub use aws_sdk_s3::config::Credentials;

/// How to reach the bucket. [`S3Options::from_env`] reads the kprov settings; everything the
/// AWS SDK reads itself (`AWS_PROFILE`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_ENDPOINT_URL[_S3]`, `~/.aws/config`, ...) applies in addition.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible store (`KPROV_S3_ENDPOINT`); `None` uses the SDK's.
    pub endpoint: Option<String>,
    /// Force path-style addressing (`KPROV_S3_FORCE_PATH_STYLE=true`).
    pub force_path_style: bool,
    /// Use the store even if it ignores conditional writes, with a warning
    /// (`KPROV_UNSAFE_NO_CONDITIONAL_WRITES=1` or `--unsafe-no-conditional-writes`).
    pub unsafe_no_conditional_writes: bool,
    /// Region instead of the SDK chain's (the SDK chain still falls back to [`DEFAULT_REGION`]).
    pub region: Option<String>,
    /// Credentials instead of the SDK's credential chain.
    pub credentials: Option<Credentials>,
    /// Attempts per request, first try included ([`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// First retry backoff; the SDK doubles it (with jitter) up to 20 s. Tests shorten it.
    pub initial_backoff: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            force_path_style: false,
            unsafe_no_conditional_writes: false,
            region: None,
            credentials: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Duration::from_secs(1),
        }
    }
}

pub(super) fn parse_bool(name: &str, value: Option<String>) -> StateResult<bool> {
    let Some(v) = value else { return Ok(false) };
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        other => Err(StateError::Backend {
            location: name.into(),
            message: format!("{name}={other:?} is not a boolean; use true or false"),
        }),
    }
}

impl S3Options {
    /// The kprov settings from the process environment.
    pub fn from_env() -> StateResult<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The kprov settings from a variable lookup (testable without touching the environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> StateResult<Self> {
        Ok(S3Options {
            endpoint: get(ENDPOINT_ENV)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            force_path_style: parse_bool(FORCE_PATH_STYLE_ENV, get(FORCE_PATH_STYLE_ENV))?,
            unsafe_no_conditional_writes: parse_bool(
                UNSAFE_NO_CONDITIONAL_WRITES_ENV,
                get(UNSAFE_NO_CONDITIONAL_WRITES_ENV),
            )?,
            ..S3Options::default()
        })
    }
}

/// A parsed `s3://BUCKET[/PREFIX]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty for the bucket root).
    pub prefix: String,
}

impl S3Url {
    /// The object key of `key` under this URL's prefix (`PREFIX/key`, or `key` at the root).
    pub fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Parse `s3://BUCKET[/PREFIX][/]`.
    pub fn parse(url: &str) -> StateResult<Self> {
        let bad = |why: &str| StateError::InvalidUrl {
            url: url.into(),
            why: format!("{why}; use s3://BUCKET or s3://BUCKET/PREFIX"),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
            return Err(bad(
                "query strings, fragments and whitespace are not allowed",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad(
                "the bucket name must be 3-63 letters, digits, '.', '-' or '_'",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad(
                "the prefix must not contain empty, '.' or '..' segments",
            ));
        }
        Ok(S3Url {
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }
}
