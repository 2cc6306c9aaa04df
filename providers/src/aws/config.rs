//! [`AwsConfig`]: everything the adapter needs, taken from the cluster spec by the caller,
//! because [`crate::Cloud::ensure_network`] only receives the cluster name and tags.

use std::fmt;
use std::time::Duration;

use aws_sdk_ec2::config::Credentials;

/// Settings of one [`super::AwsCloud`].
#[derive(Clone)]
pub struct AwsConfig {
    /// Region, e.g. `us-east-1` or `cn-north-1`.
    pub region: String,
    /// Endpoint URL for every service (EC2, ELBv2), e.g. a local moto server. `None` lets the
    /// SDK resolve it: `AWS_ENDPOINT_URL[_EC2|_ELASTIC_LOAD_BALANCING_V2]`, profile, or the
    /// partition's public endpoint for the region.
    pub endpoint_url: Option<String>,
    /// Static credentials (tests, tools), e.g.
    /// `Credentials::new(key_id, secret, None, None, "kprov-static")`. `None` uses the standard
    /// AWS chain (env, profile, SSO, web identity, container or instance role). Never logged:
    /// this struct's `Debug` shows only whether they are set, and the SDK type's own `Debug`
    /// redacts the secret.
    pub credentials: Option<Credentials>,
    /// Reuse this VPC instead of creating one.
    pub vpc_id: Option<String>,
    /// Reuse these subnets (with `vpc_id`); empty with `vpc_id` means every subnet of the VPC.
    pub subnet_ids: Vec<String>,
    /// CIDR of the VPC kprov creates.
    pub vpc_cidr: String,
    /// CIDRs allowed to reach the API server port from outside the VPC.
    pub api_access: Vec<String>,
    /// CIDRs allowed to reach SSH (none: no SSH rule).
    pub ssh_access: Vec<String>,
    /// API server port.
    pub api_port: u16,
    /// Owner (account id or alias such as `amazon`) of the default images. `None`: Canonical's
    /// account of the region's partition.
    pub ami_owner: Option<String>,
    /// Name pattern (`*` wildcards) of the default images; the architecture is filtered
    /// separately. `None`: Ubuntu 22.04 server images.
    pub ami_name: Option<String>,
    /// SSH public key imported as the key pair `kprov-CLUSTER`, if any.
    pub ssh_public_key: Option<String>,
    /// Availability zones for the subnets kprov creates; empty: the first three available.
    pub zones: Vec<String>,
    /// Number of control-plane instances. More than one puts a network load balancer in front
    /// of the API servers. `0` means unknown: inferred from the instance requests seen by
    /// `check` / `create_instance` (a control plane with index ≥ 1 means HA).
    pub control_plane_count: u32,
    /// Mutating calls the executor should run at once.
    pub concurrency: usize,
    /// Attempts (SDK standard retry, with backoff) of read-only calls. Mutating calls are never
    /// retried by the SDK: a retry after a lost response would duplicate what was created.
    pub read_attempts: u32,
    /// Time limit of one attempt of one call.
    pub call_timeout: Duration,
}

impl AwsConfig {
    /// Defaults for `region`: a new VPC `172.20.0.0/16`, API port 6443, default images, no SSH.
    pub fn new(region: impl Into<String>) -> AwsConfig {
        AwsConfig {
            region: region.into(),
            endpoint_url: None,
            credentials: None,
            vpc_id: None,
            subnet_ids: Vec::new(),
            vpc_cidr: "172.20.0.0/16".into(),
            api_access: Vec::new(),
            ssh_access: Vec::new(),
            api_port: 6443,
            ami_owner: None,
            ami_name: None,
            ssh_public_key: None,
            zones: Vec::new(),
            control_plane_count: 0,
            concurrency: 8,
            read_attempts: 3,
            call_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so that credentials can never reach a log line through `{:?}`.
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<static>"),
            )
            .field("vpc_id", &self.vpc_id)
            .field("subnet_ids", &self.subnet_ids)
            .field("vpc_cidr", &self.vpc_cidr)
            .field("api_access", &self.api_access)
            .field("ssh_access", &self.ssh_access)
            .field("api_port", &self.api_port)
            .field("ami_owner", &self.ami_owner)
            .field("ami_name", &self.ami_name)
            .field("zones", &self.zones)
            .field("control_plane_count", &self.control_plane_count)
            .finish_non_exhaustive()
    }
}
