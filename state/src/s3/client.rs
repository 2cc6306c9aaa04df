//! Building the SDK client a store (or a tool) uses: the standard AWS chain plus kprov's
//! endpoint and path-style settings, retries, timeouts and an attempt counter.

use super::*;

/// Counts the requests an operation actually put on the wire (1 + retries), to tell a genuine
/// precondition failure from our own earlier attempt whose response was lost.
#[derive(Debug, Clone, Default)]
pub(super) struct AttemptCounter(Arc<AtomicU32>);

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
    pub(super) fn retried(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 1
    }
}

pub(super) fn is_ip_or_localhost(endpoint: &str) -> bool {
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
pub(super) fn configured_endpoint(opts: &S3Options, sdk: &aws_config::SdkConfig) -> Option<String> {
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
pub(super) struct Connection {
    /// The SDK client.
    pub(super) client: aws_sdk_s3::Client,
    /// The endpoint as configured ([`configured_endpoint`]); `None`: the AWS default.
    pub(super) endpoint: Option<String>,
    /// The region requests are signed for.
    pub(super) region: String,
}

/// Build the client from the AWS chain plus `opts` (see [`s3_client`]).
pub(super) async fn connect(opts: &S3Options) -> Connection {
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
