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

mod client;
mod options;
mod probe;
#[cfg(test)]
mod tests;

pub use client::s3_client;
use client::{connect, AttemptCounter, Connection};
pub use options::*;
pub use probe::ConditionalWrites;

/// Buckets already warned about (versioning off), so the warning shows once per process.
static VERSIONING_WARNED: LazyLock<StdMutex<HashSet<String>>> =
    LazyLock::new(|| StdMutex::new(HashSet::new()));

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

    async fn share_url(&self, key: &str, ttl: Duration) -> StateResult<Option<String>> {
        validate_key(key)?;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(|e| {
            StateError::Backend {
                location: self.location(key),
                message: format!("cannot presign a GET of {key} for {ttl:?}: {e}"),
            }
        })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .presigned(config)
            .await
            .map_err(|e| self.other(key, "GetObject (presign)", e))?;
        Ok(Some(req.uri().to_string()))
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
