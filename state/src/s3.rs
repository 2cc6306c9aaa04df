//! `s3://BUCKET[/PREFIX]` backend on AWS S3 or an S3-compatible store.
//!
//! - **Versions are ETags.** `Condition::IfAbsent` is sent as `If-None-Match: *` and
//!   `Condition::IfVersion` as `If-Match: <etag>`, on PutObject and (for deletes) DeleteObject.
//!   `412 PreconditionFailed` and `409 ConditionalRequestConflict` become
//!   [`StateError::Conflict`]. Nothing here relies on CopyObject preconditions: S3-compatible
//!   stores (moto among them) ignore those.
//! - **Conditional-write probe.** A store that silently ignores those headers would make the
//!   cluster lock useless, and nothing in a successful response tells. So before the first
//!   conditional write of a process the store writes a probe object
//!   `PREFIX/.kprov-probe/<random>` with `If-None-Match: *` twice and with `If-Match` and a
//!   wrong ETag, and refuses to go on if either write got through
//!   ([`S3Store::verify_conditional_writes`]). The result is cached per endpoint and bucket for
//!   the life of the process. `--unsafe-no-conditional-writes` /
//!   `KPROV_UNSAFE_NO_CONDITIONAL_WRITES=1` turns the refusal into a warning.
//! - **Lost responses.** The SDK retries a request whose response was lost (connection reset,
//!   5xx). If the first attempt of a conditional write was applied, the retry fails its own
//!   precondition; the store then reads the object back and, if it holds exactly the bytes it
//!   wrote, reports success instead of a false conflict (which would, say, report the lock as
//!   held by ourselves).
//! - **Secrets** (`.../pki/...`, `.../secrets/...`) are written with server-side encryption
//!   (SSE-S3, AES256). For client-side encryption wrap the store in
//!   [`crate::crypt::EncryptedStore`].
//! - **Multi-object updates** are not atomic in S3 and are not made so here: callers write new
//!   objects first and switch the object that points at them (the cluster `config.yaml`) last,
//!   under the cluster lease, so a crash leaves at worst unreferenced new objects.
//! - Endpoint, region and credentials come from the standard AWS chain
//!   (`aws_config::defaults`), plus `KPROV_S3_ENDPOINT` / `KPROV_S3_FORCE_PATH_STYLE`; see
//!   [`S3Options`] and `docs/state.md`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ServerSideEncryption};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use crate::{
    is_secret_key, validate_key, Condition, Object, StateError, StateResult, StateStore, Version,
};

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

fn parse_bool(name: &str, value: Option<String>) -> StateResult<bool> {
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

/// What [`S3Store::verify_conditional_writes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// Both `If-None-Match: *` and `If-Match` were enforced.
    Honoured,
    /// At least one was ignored; only returned (with a warning) when the unsafe override is set.
    Ignored {
        /// `If-None-Match: *` let a second create through.
        if_none_match_ignored: bool,
        /// `If-Match` with a wrong ETag let a write through.
        if_match_ignored: bool,
    },
}

/// Probe results per endpoint and bucket: "once per process", and one probe at a time so 16
/// racing first writers do not probe 16 times.
static PROBES: LazyLock<AsyncMutex<HashMap<String, ConditionalWrites>>> =
    LazyLock::new(|| AsyncMutex::new(HashMap::new()));

/// Buckets already warned about (versioning off), so the warning shows once per process.
static VERSIONING_WARNED: LazyLock<StdMutex<HashSet<String>>> =
    LazyLock::new(|| StdMutex::new(HashSet::new()));

/// Counts the requests an operation actually put on the wire (1 + retries), to tell a genuine
/// precondition failure from our own earlier attempt whose response was lost.
#[derive(Debug, Clone, Default)]
struct AttemptCounter(Arc<AtomicU32>);

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "kprov-attempt-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl AttemptCounter {
    fn retried(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 1
    }
}

/// How an S3 error is to be treated.
enum Failure {
    /// 412 PreconditionFailed / 409 ConditionalRequestConflict.
    Precondition,
    /// 404 NoSuchKey (or a bare 404).
    NotFound,
    /// Anything else, already turned into a user-facing error.
    Other(StateError),
}

/// A state store in an S3 bucket (see the module docs).
#[derive(Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `""` or `"a/b/"`: prepended to state keys.
    prefix: String,
    /// The endpoint as users configured it, or a description of the AWS default, for messages.
    endpoint: String,
    max_attempts: u32,
    unsafe_no_conditional_writes: bool,
    /// Set once this store passed (or was allowed past) the conditional-write probe.
    verified: AtomicBool,
    /// The once-per-store bucket check (existence, versioning).
    checked_bucket: OnceCell<()>,
}

fn is_ip_or_localhost(endpoint: &str) -> bool {
    let after_scheme = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok()
}

/// The endpoint the SDK will use, as far as kprov can tell, for messages and path-style.
fn configured_endpoint(opts: &S3Options, sdk: &aws_config::SdkConfig) -> Option<String> {
    if let Some(e) = &opts.endpoint {
        return Some(e.clone());
    }
    let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if ignore {
        return None;
    }
    std::env::var("AWS_ENDPOINT_URL_S3")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| sdk.endpoint_url().map(str::to_string))
}

/// An S3 client as [`s3_client`] and [`S3Store::open`] make it, with what the store names in
/// its messages.
struct Connection {
    /// The SDK client.
    client: aws_sdk_s3::Client,
    /// The endpoint as configured ([`configured_endpoint`]); `None`: the AWS default.
    endpoint: Option<String>,
    /// The region requests are signed for.
    region: String,
}

/// Build the client from the AWS chain plus `opts` (see [`s3_client`]).
async fn connect(opts: &S3Options) -> Connection {
    let retry = RetryConfig::standard()
        .with_max_attempts(opts.max_attempts.max(1))
        .with_initial_backoff(opts.initial_backoff);
    // Without an attempt timeout a server that accepts the connection and never answers
    // would hang kprov forever; state objects are small, so a minute per attempt is ample.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(c) = &opts.credentials {
        loader = loader.credentials_provider(c.clone());
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
    let region = sdk
        .region()
        .map_or(DEFAULT_REGION.to_string(), |r| r.to_string());
    if sdk.region().is_none() {
        conf = conf.region(Region::new(DEFAULT_REGION));
    }
    let endpoint = configured_endpoint(opts, &sdk);
    if let Some(e) = &opts.endpoint {
        conf = conf.endpoint_url(e.clone());
    }
    let path_style = opts.force_path_style || endpoint.as_deref().is_some_and(is_ip_or_localhost);
    conf = conf.force_path_style(path_style);
    Connection {
        client: aws_sdk_s3::Client::from_conf(conf.build()),
        endpoint,
        region,
    }
}

/// An S3 client configured exactly as [`S3Store::open`] configures its own: the standard AWS
/// chain plus `opts` (endpoint, path-style addressing, region, credentials, retries with
/// backoff, a 5 s connect timeout and a 60 s limit per attempt). For tools that need raw object
/// access to a bucket (e.g. mirroring files into it) without opening a state store. Loads the
/// AWS configuration but makes no request.
pub async fn s3_client(opts: &S3Options) -> StateResult<aws_sdk_s3::Client> {
    Ok(connect(opts).await.client)
}

impl S3Store {
    /// Open `s3://BUCKET[/PREFIX]`. Loads the AWS configuration but makes no request: the bucket
    /// is checked on first use.
    pub async fn open(url: &str, opts: S3Options) -> StateResult<Self> {
        let parsed = S3Url::parse(url)?;
        let Connection {
            client,
            endpoint,
            region,
        } = connect(&opts).await;
        Ok(S3Store {
            client,
            bucket: parsed.bucket,
            prefix: if parsed.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", parsed.prefix)
            },
            endpoint: endpoint.unwrap_or_else(|| format!("the AWS S3 endpoint of region {region}")),
            max_attempts: opts.max_attempts.max(1),
            unsafe_no_conditional_writes: opts.unsafe_no_conditional_writes,
            verified: AtomicBool::new(false),
            checked_bucket: OnceCell::new(),
        })
    }

    /// The SDK client (for tools and tests that need to look at raw objects).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The bucket the store lives in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The endpoint requests go to, as configured (or a description of the AWS default).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region requests are signed for.
    pub fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.to_string())
    }

    /// The S3 object key that holds state key `key`.
    pub fn object_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}{}", self.bucket, self.prefix, key)
    }

    fn fix_hint(&self) -> String {
        format!(
            "check the endpoint ({ENDPOINT_ENV}, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; now {}), that it is reachable \
             from here, and the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            self.endpoint
        )
    }

    fn classify<E>(
        &self,
        key: &str,
        op: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location(key);
        let backend = |message: String| {
            Failure::Other(StateError::Backend {
                location: location.clone(),
                message,
            })
        };
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let msg = se.err().message().unwrap_or("");
                match (status, code) {
                    (412, _) | (_, "PreconditionFailed") | (409, "ConditionalRequestConflict") => Failure::Precondition,
                    (_, "NoSuchKey") | (404, "") => Failure::NotFound,
                    (_, "NoSuchBucket") => backend(format!(
                        "bucket {} does not exist at {}: create it (e.g. `aws s3 mb s3://{}`) or fix the state store URL",
                        self.bucket, self.endpoint, self.bucket
                    )),
                    (403, _)
                    | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken") => backend(
                        format!(
                            "S3 {op} was refused ({status} {code}: {msg}): check the credentials (AWS_PROFILE, \
                             AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that they may s3:GetObject, s3:PutObject, \
                             s3:DeleteObject and s3:ListBucket on bucket {}",
                            self.bucket
                        ),
                    ),
                    (301, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException") => {
                        backend(format!(
                            "S3 {op} failed ({status} {code}): bucket {} is in another region than the one configured \
                             ({}); set AWS_REGION to the bucket's region",
                            self.bucket,
                            self.region().unwrap_or_default()
                        ))
                    }
                    _ => backend(format!(
                        "S3 {op} failed at {}: HTTP {status} {code}: {msg}",
                        self.endpoint
                    )),
                }
            }
            // Connection refused/reset, timeouts, unparseable responses, missing credentials:
            // the SDK has already retried these.
            _ => backend(format!(
                "could not complete S3 {op} on bucket {} at {} (tried up to {} times): {}; {}",
                self.bucket,
                self.endpoint,
                self.max_attempts,
                DisplayErrorContext(&err),
                self.fix_hint()
            )),
        }
    }

    fn other<E>(
        &self,
        key: &str,
        op: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(se) => se.raw().status().as_u16(),
            _ => 0,
        };
        match self.classify(key, op, err) {
            Failure::Other(e) => e,
            Failure::Precondition => StateError::Conflict { key: key.into() },
            Failure::NotFound => StateError::Backend {
                location: self.location(key),
                message: format!(
                    "S3 {op} failed at {}: HTTP {status} not found",
                    self.endpoint
                ),
            },
        }
    }

    /// Once per store: check the bucket exists and warn (once per process) when versioning is
    /// off. Failures other than "no such bucket" or an unreachable endpoint are only logged, as
    /// a role may well lack `s3:GetBucketVersioning` and still use the store.
    async fn check_bucket(&self) -> StateResult<()> {
        self.checked_bucket
            .get_or_try_init(|| async {
                let status = match self
                    .client
                    .get_bucket_versioning()
                    .bucket(&self.bucket)
                    .send()
                    .await
                {
                    Ok(out) => out.status().map(|s| s.as_str().to_string()),
                    // A 200 the SDK cannot parse: moto answers an unversioned bucket with a
                    // `<GetBucketVersioningResponse/>` root instead of `<VersioningConfiguration/>`.
                    // Read the status from the body, as "not Enabled" is all that matters here.
                    Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 200 => {
                        let body = se
                            .raw()
                            .body()
                            .bytes()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        ["Enabled", "Suspended"]
                            .into_iter()
                            .find(|s| body.contains(&format!("<Status>{s}</Status>")))
                            .map(str::to_string)
                    }
                    Err(e) => {
                        let network = !matches!(e, SdkError::ServiceError(_));
                        let no_bucket = e.code() == Some("NoSuchBucket");
                        return match self.classify("", "GetBucketVersioning", e) {
                            Failure::Other(err) if network || no_bucket => Err(err),
                            Failure::Other(err) => {
                                tracing::debug!(
                                    "cannot check versioning of state bucket {}: {err}",
                                    self.bucket
                                );
                                Ok(())
                            }
                            Failure::Precondition | Failure::NotFound => Ok(()),
                        };
                    }
                };
                if status.as_deref() != Some(BucketVersioningStatus::Enabled.as_str()) {
                    self.warn_versioning(status.as_deref().unwrap_or("off"));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn warn_versioning(&self, status: &str) {
        let first = VERSIONING_WARNED
            .lock()
            .map(|mut w| w.insert(format!("{}|{}", self.endpoint, self.bucket)))
            .unwrap_or(true);
        if first {
            tracing::warn!(
                "versioning is {status} on state bucket {b}: enable it (`aws s3api put-bucket-versioning --bucket {b} \
                 --versioning-configuration Status=Enabled`) so earlier cluster state can be recovered after a bad \
                 write or delete",
                b = self.bucket
            );
        }
    }

    async fn read(&self, full: &str, key: &str) -> StateResult<Option<Object>> {
        // The SDK retries until response headers arrive; a body cut off after that is retried here.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    return match self.classify(key, "GetObject", e) {
                        Failure::NotFound => Ok(None),
                        Failure::Other(err) => Err(err),
                        Failure::Precondition => Err(StateError::Conflict { key: key.into() }),
                    }
                }
            };
            let etag = out.e_tag().map(str::to_string);
            match out.body.collect().await {
                Ok(body) => {
                    let etag = etag.ok_or_else(|| self.no_etag(key, "GetObject"))?;
                    return Ok(Some(Object {
                        bytes: body.into_bytes().to_vec(),
                        version: Version(etag),
                    }));
                }
                Err(e) if attempt < self.max_attempts => {
                    tracing::debug!("reading {} was cut off ({e}); retrying", self.location(key));
                }
                Err(e) => {
                    return Err(StateError::Backend {
                        location: self.location(key),
                        message: format!(
                            "reading the object body failed {attempt} times: {}; {}",
                            DisplayErrorContext(&e),
                            self.fix_hint()
                        ),
                    })
                }
            }
        }
    }

    fn no_etag(&self, key: &str, op: &str) -> StateError {
        StateError::Backend {
            location: self.location(key),
            message: format!(
                "the store at {} returned no ETag for {op}: kprov needs ETags for compare-and-swap and cannot use this store",
                self.endpoint
            ),
        }
    }

    /// PutObject of `full` (the object key) honouring `cond`; `key` names it in messages.
    async fn write(
        &self,
        full: &str,
        key: &str,
        bytes: &[u8],
        cond: &Condition,
        sse: bool,
    ) -> StateResult<Version> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(bytes.to_vec()));
        if sse {
            req = req.server_side_encryption(ServerSideEncryption::Aes256);
        }
        req = match cond {
            Condition::None => req,
            Condition::IfAbsent => req.if_none_match("*"),
            Condition::IfVersion(v) => req.if_match(v.0.clone()),
        };
        let counter = AttemptCounter::default();
        match req.customize().interceptor(counter.clone()).send().await {
            Ok(out) => match out.e_tag() {
                Some(etag) => Ok(Version(etag.to_string())),
                None => Err(self.no_etag(key, "PutObject")),
            },
            Err(e) => match self.classify(key, "PutObject", e) {
                // If-Match on a missing key is 404 on AWS and moto: the version did not match.
                Failure::Precondition | Failure::NotFound => {
                    if counter.retried() {
                        if let Some(o) = self.read(full, key).await? {
                            if o.bytes == bytes {
                                tracing::debug!(
                                    "conditional write of {} was applied by an attempt whose response was lost",
                                    self.location(key)
                                );
                                return Ok(o.version);
                            }
                        }
                    }
                    Err(StateError::Conflict { key: key.into() })
                }
                Failure::Other(err) => Err(err),
            },
        }
    }

    async fn ensure_conditional_writes(&self) -> StateResult<()> {
        if self.verified.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.verify_conditional_writes().await.map(|_| ())
    }

    /// Check (once per process and endpoint/bucket) that the store enforces `If-None-Match: *`
    /// and `If-Match`, by writing and then deleting a probe object under
    /// `PREFIX/.kprov-probe/`. A store that ignores them yields [`StateError::Backend`]
    /// explaining that locking is unsafe, unless the unsafe override is set, in which case it
    /// warns and returns [`ConditionalWrites::Ignored`].
    ///
    /// The store calls this itself before its first conditional write, so the cluster lease is
    /// protected without callers doing anything.
    pub async fn verify_conditional_writes(&self) -> StateResult<ConditionalWrites> {
        self.check_bucket().await?;
        let result = {
            let mut cache = PROBES.lock().await;
            let id = format!("{}|{}", self.endpoint, self.bucket);
            match cache.get(&id) {
                Some(r) => *r,
                None => {
                    let r = self.probe().await?;
                    cache.insert(id, r);
                    r
                }
            }
        };
        let ConditionalWrites::Ignored {
            if_none_match_ignored,
            if_match_ignored,
        } = result
        else {
            self.verified.store(true, Ordering::SeqCst);
            return Ok(result);
        };
        let what = match (if_none_match_ignored, if_match_ignored) {
            (true, true) => "both If-None-Match: * and If-Match",
            (true, false) => "If-None-Match: *",
            _ => "If-Match",
        };
        let problem = format!(
            "the S3 store at {} ignores conditional writes ({what}: a probe write that had to fail went through), so \
             kprov's cluster lock and compare-and-swap are unsafe: two kprov runs could overwrite each other's state",
            self.endpoint
        );
        if self.unsafe_no_conditional_writes {
            if !self.verified.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "{problem}. Going on because {UNSAFE_NO_CONDITIONAL_WRITES_FLAG} / \
                     {UNSAFE_NO_CONDITIONAL_WRITES_ENV}=1 is set: make sure only one kprov runs against {} at a time",
                    self.url()
                );
            }
            return Ok(result);
        }
        Err(StateError::Backend {
            location: self.url(),
            message: format!(
                "{problem}. Use a store that supports conditional writes (AWS S3 does), or, if you are sure only one \
                 kprov ever runs against this store at a time, pass {UNSAFE_NO_CONDITIONAL_WRITES_FLAG} or set \
                 {UNSAFE_NO_CONDITIONAL_WRITES_ENV}=1"
            ),
        })
    }

    async fn probe(&self) -> StateResult<ConditionalWrites> {
        let full = format!(
            "{}{PROBE_DIR}/{:016x}{:016x}",
            self.prefix,
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let name = full.strip_prefix(&self.prefix).unwrap_or(&full).to_string();
        let outcome = async {
            self.write(
                &full,
                &name,
                b"kprov conditional-write probe: create",
                &Condition::IfAbsent,
                false,
            )
            .await?;
            let if_none_match_ignored = match self
                .write(
                    &full,
                    &name,
                    b"kprov conditional-write probe: second create",
                    &Condition::IfAbsent,
                    false,
                )
                .await
            {
                Ok(_) => true,
                Err(StateError::Conflict { .. }) => false,
                Err(e) => return Err(e),
            };
            // A version no store can have produced for the probe's bodies.
            let wrong = Version("\"00000000000000000000000000000000\"".into());
            let if_match_ignored = match self
                .write(
                    &full,
                    &name,
                    b"kprov conditional-write probe: stale update",
                    &Condition::IfVersion(wrong),
                    false,
                )
                .await
            {
                Ok(_) => true,
                Err(StateError::Conflict { .. }) => false,
                Err(e) => return Err(e),
            };
            Ok(if if_none_match_ignored || if_match_ignored {
                ConditionalWrites::Ignored {
                    if_none_match_ignored,
                    if_match_ignored,
                }
            } else {
                ConditionalWrites::Honoured
            })
        }
        .await;
        // Clean up whatever happened; a leftover probe object is harmless (hidden from list).
        if let Err(e) = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            tracing::debug!(
                "could not delete probe object {full}: {}",
                DisplayErrorContext(&e)
            );
        }
        outcome
    }
}

fn is_hidden(key: &str) -> bool {
    key.split('/').any(|seg| seg.starts_with(".kprov-"))
}

#[async_trait]
impl StateStore for S3Store {
    fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
        }
    }

    async fn get(&self, key: &str) -> StateResult<Option<Object>> {
        validate_key(key)?;
        self.check_bucket().await?;
        self.read(&self.object_key(key), key).await
    }

    async fn put(&self, key: &str, bytes: &[u8], cond: Condition) -> StateResult<Version> {
        validate_key(key)?;
        self.check_bucket().await?;
        if cond != Condition::None {
            self.ensure_conditional_writes().await?;
        }
        self.write(&self.object_key(key), key, bytes, &cond, is_secret_key(key))
            .await
    }

    async fn list(&self, prefix: &str) -> StateResult<Vec<String>> {
        self.check_bucket().await?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{}", self.prefix, prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.other(prefix, "ListObjectsV2", e))?;
            for obj in page.contents() {
                let Some(k) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if !is_hidden(k) {
                    out.push(k.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str, cond: Condition) -> StateResult<()> {
        validate_key(key)?;
        if cond == Condition::IfAbsent {
            return Err(StateError::InvalidKey {
                key: key.into(),
                why: "delete cannot be conditioned on absence".into(),
            });
        }
        self.check_bucket().await?;
        let mut req = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key));
        if let Condition::IfVersion(v) = &cond {
            self.ensure_conditional_writes().await?;
            req = req.if_match(v.0.clone());
        }
        let counter = AttemptCounter::default();
        match req.customize().interceptor(counter.clone()).send().await {
            Ok(_) => Ok(()),
            Err(e) => match self.classify(key, "DeleteObject", e) {
                // Our own earlier attempt deleted it and its response was lost.
                Failure::NotFound if counter.retried() => Ok(()),
                Failure::NotFound if cond == Condition::None => Ok(()),
                Failure::Precondition | Failure::NotFound => {
                    Err(StateError::Conflict { key: key.into() })
                }
                Failure::Other(err) => Err(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            S3Url::parse("s3://bkt").unwrap(),
            S3Url {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert_eq!(S3Url::parse("s3://bkt/").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://bkt/a/b/").unwrap().prefix, "a/b");
        for bad in [
            "s3://",
            "s3://a",
            "s3://bkt/a//b",
            "s3://bkt/../x",
            "s3://bkt?x=1",
            "s3://b kt",
            "file:///x",
        ] {
            assert!(
                matches!(S3Url::parse(bad), Err(StateError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_style_for_ip_and_localhost_endpoints() {
        assert!(is_ip_or_localhost("http://127.0.0.1:5055"));
        assert!(is_ip_or_localhost("http://[::1]:9000/"));
        assert!(is_ip_or_localhost("https://10.0.0.5"));
        assert!(is_ip_or_localhost("http://localhost:9000"));
        assert!(is_ip_or_localhost("http://user@127.0.0.1:9000"));
        assert!(!is_ip_or_localhost("https://s3.example.com"));
        assert!(!is_ip_or_localhost("https://minio.local:9000"));
    }

    #[test]
    fn options_from_lookup() {
        let o = S3Options::from_lookup(|k| match k {
            ENDPOINT_ENV => Some(" http://127.0.0.1:9 ".into()),
            FORCE_PATH_STYLE_ENV => Some("true".into()),
            UNSAFE_NO_CONDITIONAL_WRITES_ENV => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert!(o.force_path_style && o.unsafe_no_conditional_writes);
        assert_eq!(o.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let o = S3Options::from_lookup(|_| None).unwrap();
        assert!(o.endpoint.is_none() && !o.force_path_style && !o.unsafe_no_conditional_writes);
        let e = S3Options::from_lookup(|k| (k == FORCE_PATH_STYLE_ENV).then(|| "maybe".into()))
            .unwrap_err();
        assert!(e.to_string().contains(FORCE_PATH_STYLE_ENV));
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials::new("AKID", "hunter2", None, None, "kprov-static");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn probe_and_internal_keys_are_hidden() {
        assert!(is_hidden(".kprov-probe/abc"));
        assert!(is_hidden("c/.kprov-tmp"));
        assert!(!is_hidden("c/config.yaml"));
    }
}
