//! [`AwsCloud`]: the [`Cloud`] implementation for AWS EC2 (+ ELBv2 for HA control planes).
//!
//! Mapping (details in `docs/providers/aws.md`):
//! * every resource kprov creates carries `kprov.io/cluster=NAME`, `kubernetes.io/cluster/NAME=
//!   owned` and a `kprov.io/resource` tag naming what it is, set atomically at creation through
//!   `TagSpecifications`, so a crash right after a create leaves a resource the next run finds;
//! * an instance is found by its `kprov.io/instance-id` tag (the request's deterministic id)
//!   before it is created, and again after any ambiguous failure, because a `ClientToken` alone
//!   is not enough (moto ignores it; EC2 honours it only for a while);
//! * the SDK never retries a mutating call (a retry of a `RunInstances` whose response was lost
//!   creates a second instance where the token is not honoured); the executor retries instead,
//!   and every mutation starts with a lookup;
//! * the network is a VPC with one public subnet per zone, an internet gateway, a route table
//!   and one security group, or an existing VPC/subnets; an NLB fronts HA control planes.
//!
//! This file holds the adapter itself (construction, shared helpers) and the [`Cloud`] impl,
//! which delegates to the `impl AwsCloud` blocks of the sibling modules `choice` (instance
//! type and image), `network` (VPC, gateway, routes, subnets, security group, key pair),
//! `load_balancer` (the API NLB), `instances`, and `resources` (listing and deleting what a
//! cluster owns).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{ProvideCredentials, Region};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_elasticloadbalancingv2 as elbv2;

use crate::{
    Arch, Cloud, CloudError, CloudResult, EndpointRequest, FlavorInfo, ImageInfo, Instance,
    InstanceRequest, Inventory, MachineSize, Network, NetworkRequest, PlanProblem, Resource, Role,
    TAG_CLUSTER,
};

use super::choice::ImageChoice;
use super::config::AwsConfig;
use super::errors::from_sdk;
use super::network::NetState;
use super::partition::partition_for;
use super::select::TypeInfo;
use super::stats::ApiStats;
use super::{k8s_cluster_tag, PROVIDER, TAG_RESOURCE};

/// The AWS EC2 adapter.
pub struct AwsCloud {
    pub(super) cfg: AwsConfig,
    /// Read-only calls: the SDK's standard retry with backoff.
    pub(super) ec2: aws_sdk_ec2::Client,
    /// Mutating calls: no SDK retry (see the module doc).
    pub(super) ec2_once: aws_sdk_ec2::Client,
    /// ELBv2 read-only calls, with the SDK's retry like `ec2`.
    pub(super) elb: elbv2::Client,
    /// ELBv2 mutating calls, without SDK retry like `ec2_once`.
    pub(super) elb_once: elbv2::Client,
    /// API calls sent, per action (shared with the clients' interceptor).
    pub(super) stats: ApiStats,
    /// Where calls go, for messages.
    pub(super) endpoint: String,
    /// HA control plane seen in the requests (when `control_plane_count` is 0 = unknown).
    pub(super) ha_seen: AtomicBool,
    /// The network pieces instances need, once `ensure_network` or a lookup found them.
    pub(super) net: tokio::sync::Mutex<Option<NetState>>,
    /// Instance types described so far, by name.
    pub(super) types: Mutex<HashMap<String, TypeInfo>>,
    /// Every current-generation instance type of an architecture, once listed.
    pub(super) all_types: tokio::sync::Mutex<HashMap<Arch, Vec<TypeInfo>>>,
    /// The image chosen per architecture and image setting.
    pub(super) images: Mutex<HashMap<(Arch, Option<String>), ImageChoice>>,
}

/// An EC2 `Filter` on `name` matching any of `values`.
pub(super) fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// An EC2 tag `k=v`.
pub(super) fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// EC2 tags as a map (a tag without a value maps to `""`).
pub(super) fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// A [`CloudError::Protocol`]: EC2 answered something kprov cannot use.
pub(super) fn protocol(message: impl Into<String>) -> CloudError {
    CloudError::Protocol {
        provider: PROVIDER,
        message: message.into(),
    }
}

impl AwsCloud {
    /// Build the adapter: load the SDK configuration (region, endpoint, credentials chain) and
    /// make sure credentials exist, so that a missing key is reported before any plan.
    pub async fn new(cfg: AwsConfig) -> CloudResult<AwsCloud> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let sdk = loader.load().await;
        let no_creds = |why: String| {
            CloudError::Auth {
            provider: PROVIDER,
            message: format!("no AWS credentials found: {why}"),
            fix: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws, or run where an instance/container role is available".into(),
        }
        };
        match sdk.credentials_provider() {
            None => return Err(no_creds("no credential provider configured".into())),
            // The error names the providers tried; it never contains a secret.
            Some(p) => {
                p.provide_credentials()
                    .await
                    .map_err(|e| no_creds(e.to_string()))?;
            }
        }
        let endpoint = match sdk.endpoint_url() {
            Some(u) => u.to_string(),
            None => super::partition::ec2_endpoint(&cfg.region)
                .await
                .unwrap_or_else(|_| format!("EC2 in {}", cfg.region)),
        };
        let stats = ApiStats::default();
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(cfg.call_timeout)
            .build();
        let read_retry = RetryConfig::standard().with_max_attempts(cfg.read_attempts.max(1));
        let ec2_conf = |retry: RetryConfig| {
            aws_sdk_ec2::config::Builder::from(&sdk)
                .retry_config(retry)
                .timeout_config(timeouts.clone())
                .interceptor(stats.clone())
                .build()
        };
        let elb_conf = |retry: RetryConfig| {
            elbv2::config::Builder::from(&sdk)
                .retry_config(retry)
                .timeout_config(timeouts.clone())
                .interceptor(stats.clone())
                .build()
        };
        let anchor = partition_for(&cfg.region).anchor_region;
        let regions_client = aws_sdk_ec2::Client::from_conf(
            ec2_conf(read_retry.clone())
                .to_builder()
                .region(Region::new(anchor))
                .build(),
        );
        let cloud = AwsCloud {
            ec2: aws_sdk_ec2::Client::from_conf(ec2_conf(read_retry.clone())),
            ec2_once: aws_sdk_ec2::Client::from_conf(ec2_conf(RetryConfig::disabled())),
            elb: elbv2::Client::from_conf(elb_conf(read_retry)),
            elb_once: elbv2::Client::from_conf(elb_conf(RetryConfig::disabled())),
            stats,
            endpoint,
            ha_seen: AtomicBool::new(false),
            net: tokio::sync::Mutex::new(None),
            types: Mutex::new(HashMap::new()),
            all_types: tokio::sync::Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            cfg,
        };
        cloud.check_region(&regions_client).await?;
        Ok(cloud)
    }

    /// Fail with `InvalidRegion` when the configured region is not one of the partition's
    /// (a typo like `us-east-7` passes the spec's syntax check but has no endpoint). Asked in the
    /// partition's anchor region, because the mistyped one cannot answer.
    async fn check_region(&self, client: &aws_sdk_ec2::Client) -> CloudResult<()> {
        let out = client
            .describe_regions()
            .all_regions(true)
            .send()
            .await
            .map_err(|e| self.err("DescribeRegions", e))?;
        let names: Vec<&str> = out
            .regions()
            .iter()
            .filter_map(|r| r.region_name())
            .collect();
        if names.is_empty() || names.contains(&self.cfg.region.as_str()) {
            return Ok(());
        }
        let prefix = self.cfg.region.split('-').next().unwrap_or("");
        let mut close: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.split('-').next() == Some(prefix))
            .collect();
        if close.is_empty() {
            close = names;
        }
        close.sort();
        Err(CloudError::fatal(
            PROVIDER,
            "InvalidRegion",
            format!(
                "region {:?} is not an EC2 region of the {} partition",
                self.cfg.region,
                partition_for(&self.cfg.region).name
            ),
            format!(
                "set spec.provider.aws.region to one of: {}",
                close.join(", ")
            ),
        ))
    }

    /// API calls sent so far, by action.
    pub fn stats(&self) -> &ApiStats {
        &self.stats
    }

    /// The settings the adapter was made with.
    pub fn config(&self) -> &AwsConfig {
        &self.cfg
    }

    /// The EC2 client the adapter reads with (for tools and tests that inspect the cloud).
    pub fn ec2_client(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// The ELBv2 client the adapter reads with.
    pub fn elb_client(&self) -> &elbv2::Client {
        &self.elb
    }

    pub(super) fn err<E>(
        &self,
        op: &str,
        e: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    ) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        from_sdk(op, &self.endpoint, e)
    }

    pub(super) fn ha(&self) -> bool {
        self.cfg.control_plane_count > 1 || self.ha_seen.load(Ordering::Relaxed)
    }

    pub(super) fn note_requests(&self, reqs: &[InstanceRequest]) {
        if reqs
            .iter()
            .any(|r| r.role == Role::ControlPlane && r.index >= 1)
        {
            self.ha_seen.store(true, Ordering::Relaxed);
        }
    }

    /// Tags every network resource of `cluster` gets.
    pub(super) fn base_tags(&self, cluster: &str, resource: &str, name: &str) -> Vec<Tag> {
        vec![
            tag(TAG_CLUSTER, cluster),
            tag(&k8s_cluster_tag(cluster), "owned"),
            tag(TAG_RESOURCE, resource),
            tag("Name", name),
        ]
    }

    pub(super) fn tag_spec(&self, rt: ResourceType, tags: Vec<Tag>) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags))
            .build()
    }

    pub(super) fn owned_filters(cluster: &str, resource: &str) -> Vec<Filter> {
        vec![
            filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
            filter(&format!("tag:{TAG_RESOURCE}"), &[resource]),
        ]
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn control_plane_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        self.api_endpoint(cluster).await
    }

    /// The network load balancer, its target group and listener, made with the rest of the
    /// network (which is found, not made again): from now on this process treats the control
    /// plane as load-balanced, so `create_instance` registers every control plane.
    async fn ensure_control_plane_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        self.ha_seen.store(true, Ordering::Relaxed);
        // Usually `ensure_network` made it already (the plan's check saw several control
        // planes): one lookup then, not the whole network again.
        if let Some(endpoint) = self.api_endpoint(&req.cluster).await? {
            return Ok(endpoint);
        }
        let net = NetworkRequest {
            cluster: req.cluster.clone(),
            tags: req.tags.clone(),
        };
        self.ensure_cluster_network(&net).await?;
        self.api_endpoint(&req.cluster)
            .await?
            .ok_or_else(|| CloudError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "the API load balancer of cluster {} has no DNS name after it was made",
                    req.cluster
                ),
            })
    }

    async fn pending_repairs(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<String>> {
        Ok(self
            .unregistered_control_planes(cluster, instances)
            .await?
            .into_iter()
            .map(|(_, i)| format!("register {} ({}) with the API load balancer", i.name, i.id))
            .collect())
    }

    async fn repair(&self, cluster: &str, instances: &[Instance]) -> CloudResult<()> {
        for (tg, i) in self.unregistered_control_planes(cluster, instances).await? {
            self.register_target(&tg, &i.id).await?;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn default_concurrency(&self) -> usize {
        self.cfg.concurrency.max(1)
    }

    /// [`super::USER_DATA_LIMIT`].
    fn user_data_limit(&self) -> Option<usize> {
        Some(super::USER_DATA_LIMIT)
    }

    /// Zones, both architectures, the default image of each, and the cluster VPC when reused.
    /// Instance types are not listed (over a thousand); `check` looks them up by name.
    async fn discover(&self) -> CloudResult<Inventory> {
        let zones = self.zones().await?;
        let mut images = Vec::new();
        for arch in [Arch::Amd64, Arch::Arm64] {
            let probe = InstanceRequest {
                cluster: String::new(),
                name: String::new(),
                id: String::new(),
                instance_group: String::new(),
                index: 0,
                role: Role::Node,
                arch,
                size: MachineSize::Flavor(String::new()),
                image: None,
                root_disk_gib: None,
                gpu: None,
                network_id: None,
                user_data: Vec::new(),
                tags: BTreeMap::new(),
            };
            if let Ok(img) = self.image_for(&probe).await? {
                images.push(ImageInfo {
                    id: img.id,
                    name: img.name,
                    arch: img.arch,
                });
            }
        }
        let flavors: Vec<FlavorInfo> = Vec::new();
        let networks = match &self.cfg.vpc_id {
            Some(v) => vec![Network {
                id: v.clone(),
                name: v.clone(),
                cidr: None,
                owned: false,
            }],
            None => Vec::new(),
        };
        Ok(Inventory {
            zones,
            arches: vec![Arch::Amd64, Arch::Arm64],
            images,
            flavors,
            networks,
            gpus: Vec::new(),
        })
    }

    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        self.note_requests(desired);
        let mut problems = Vec::new();
        // One representative request per instance group: its members share type, image, GPUs.
        let mut seen = std::collections::BTreeSet::new();
        for req in desired {
            if !seen.insert(req.instance_group.clone()) {
                continue;
            }
            problems.extend(self.problems_of(req).await?);
        }
        if let Some(k) = &self.cfg.ssh_public_key {
            let kind = k.split_whitespace().next().unwrap_or("");
            if !matches!(kind, "ssh-rsa" | "ssh-ed25519") {
                problems.push(PlanProblem {
                    instance_group: String::new(),
                    problem: format!("EC2 imports only ssh-rsa and ssh-ed25519 keys, spec.sshPublicKey is {kind:?}"),
                    fix: "set sshPublicKey to an RSA or Ed25519 OpenSSH public key".into(),
                });
            }
        }
        Ok(problems)
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> CloudResult<Network> {
        self.ensure_cluster_network(req).await
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        self.cluster_instances(cluster).await
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        self.create_idempotent(req).await
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        self.owned_resources(cluster).await
    }

    async fn delete_resource(&self, r: &Resource) -> CloudResult<()> {
        self.delete_owned(r).await
    }
}
