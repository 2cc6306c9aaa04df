//! The AWS EC2 adapter: [`AwsCloud`] implements [`crate::Cloud`] with `aws-sdk-ec2` and
//! `aws-sdk-elasticloadbalancingv2`; user documentation is in `docs/providers/aws.md`.
//!
//! Submodules:
//! * [`config`]: [`AwsConfig`] (everything the adapter needs from the spec) and credentials;
//! * [`partition`]: partitions (`aws`, `aws-cn`, `aws-us-gov`), ARNs and SDK endpoint resolution
//!   without sending a request;
//! * [`errors`]: classification of AWS error codes into [`crate::CloudError`];
//! * [`select`]: pure helpers: instance-type selection, user-data encoding, client tokens,
//!   subnet CIDRs, load-balancer names;
//! * [`stats`]: an SDK interceptor counting API calls per action;
//! * [`cloud`]: the adapter [`AwsCloud`] and its [`crate::Cloud`] implementation, which
//!   delegates to the private modules `choice` (instance type and image of a request, and the
//!   plan check), `network` (VPC, gateway, route table, subnets, security group, key pair),
//!   `load_balancer` (the NLB of an HA control plane), `instances` (find, create, terminate)
//!   and `resources` (everything a cluster owns: list and delete).

mod choice;
pub mod cloud;
pub mod config;
pub mod errors;
mod instances;
mod load_balancer;
mod network;
pub mod partition;
mod resources;
pub mod select;
pub mod stats;

pub use cloud::AwsCloud;

/// The largest user-data EC2 accepts: 16384 bytes of raw user-data (EC2's documented 16 KB,
/// before the base64 encoding `RunInstances` carries it in).
pub const USER_DATA_LIMIT: usize = 16384;
pub use config::AwsConfig;
pub use stats::ApiStats;

/// The AWS SDK's access-key credentials, for [`AwsConfig::credentials`]: build them with
/// `Credentials::new(key_id, secret, None, None, "kprov-static")`. Its `Debug` redacts the
/// secret. The same type as `kprov_state::s3::Credentials` (one SDK release train).
pub use aws_sdk_ec2::config::Credentials;

/// The EC2 SDK this adapter is built on, re-exported so tests and tools inspect the cloud with
/// exactly the same client (and without depending on the SDK themselves).
pub use aws_sdk_ec2;
/// The ELBv2 SDK this adapter is built on (see [`aws_sdk_ec2`] for why it is re-exported).
pub use aws_sdk_elasticloadbalancingv2;

/// Provider name used in errors and by [`crate::Cloud::name`].
pub const PROVIDER: &str = "aws";

/// Tag naming what a network resource is for (`vpc`, `subnet`, `igw`, `route-table`,
/// `security-group`, `key-pair`, `load-balancer`, `target-group`), so lookups find exactly the
/// resource a step created even when several of a kind exist.
pub const TAG_RESOURCE: &str = "kprov.io/resource";

/// The tag key Kubernetes' AWS cloud provider uses to find a cluster's resources
/// (`kubernetes.io/cluster/NAME = owned`).
pub fn k8s_cluster_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}
