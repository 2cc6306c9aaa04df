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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{Credentials, ProvideCredentials, Region};
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter, InstanceType, IpPermission,
    IpRange, ResourceType, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, TargetDescription, TargetTypeEnum,
};

use crate::{
    Arch, Cloud, CloudError, CloudResult, FlavorInfo, ImageInfo, Instance, InstanceRequest,
    Inventory, MachineSize, Network, NetworkRequest, PlanProblem, Resource, ResourceKind, Role,
    TAG_CLUSTER, TAG_INSTANCE_ID,
};

use super::config::AwsConfig;
use super::errors::{from_sdk, is_gone};
use super::partition::partition_for;
use super::select::{
    cidr_subnet, client_token, ec2_arch, elb_name, encode_user_data, pick_instance_type, TypeInfo,
    DEFAULT_AMI_NAME,
};
use super::stats::ApiStats;
use super::{k8s_cluster_tag, PROVIDER, TAG_RESOURCE};

/// Instance states that count as "exists" for idempotency and planning.
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
/// States listed for deletion: live ones plus `shutting-down`, so a delete waits for it.
const DELETABLE_STATES: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];
/// How many subnets (zones) kprov creates when none are configured.
const DEFAULT_ZONES: usize = 3;

/// An image chosen for an instance group.
#[derive(Debug, Clone)]
struct ImageChoice {
    id: String,
    name: String,
    arch: Option<Arch>,
    root_device: String,
    /// Size of the image's root snapshot, GiB.
    root_size_gib: Option<i32>,
}

/// The network pieces instances need, found or created by `ensure_network`.
#[derive(Debug, Clone)]
struct NetState {
    /// Subnets sorted by zone.
    subnets: Vec<String>,
    security_group: String,
    key_name: Option<String>,
    target_group: Option<String>,
}

/// The AWS EC2 adapter.
pub struct AwsCloud {
    cfg: AwsConfig,
    /// Read-only calls: the SDK's standard retry with backoff.
    ec2: aws_sdk_ec2::Client,
    /// Mutating calls: no SDK retry (see the module doc).
    ec2_once: aws_sdk_ec2::Client,
    elb: elbv2::Client,
    elb_once: elbv2::Client,
    stats: ApiStats,
    /// Where calls go, for messages.
    endpoint: String,
    /// HA control plane seen in the requests (when `control_plane_count` is 0 = unknown).
    ha_seen: AtomicBool,
    net: tokio::sync::Mutex<Option<NetState>>,
    types: Mutex<HashMap<String, TypeInfo>>,
    all_types: tokio::sync::Mutex<HashMap<Arch, Vec<TypeInfo>>>,
    images: Mutex<HashMap<(Arch, Option<String>), ImageChoice>>,
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn fatal(code: &str, message: impl Into<String>, fix: impl Into<String>) -> CloudError {
    CloudError::Fatal {
        provider: PROVIDER,
        code: code.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

fn protocol(message: impl Into<String>) -> CloudError {
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
            loader = loader.credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                None,
                None,
                "kprov-static",
            ));
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
        Err(fatal(
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

    /// The configuration.
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

    fn err<E>(
        &self,
        op: &str,
        e: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    ) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        from_sdk(op, &self.endpoint, e)
    }

    fn ha(&self) -> bool {
        self.cfg.control_plane_count > 1 || self.ha_seen.load(Ordering::Relaxed)
    }

    fn note_requests(&self, reqs: &[InstanceRequest]) {
        if reqs
            .iter()
            .any(|r| r.role == Role::ControlPlane && r.index >= 1)
        {
            self.ha_seen.store(true, Ordering::Relaxed);
        }
    }

    /// Tags every network resource of `cluster` gets.
    fn base_tags(&self, cluster: &str, resource: &str, name: &str) -> Vec<Tag> {
        vec![
            tag(TAG_CLUSTER, cluster),
            tag(&k8s_cluster_tag(cluster), "owned"),
            tag(TAG_RESOURCE, resource),
            tag("Name", name),
        ]
    }

    fn tag_spec(&self, rt: ResourceType, tags: Vec<Tag>) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags))
            .build()
    }

    fn owned_filters(cluster: &str, resource: &str) -> Vec<Filter> {
        vec![
            filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
            filter(&format!("tag:{TAG_RESOURCE}"), &[resource]),
        ]
    }

    // ---------------------------------------------------------------- instance types and images

    /// Instance types by name (cached). Unknown names are absent from the result.
    async fn describe_types(&self, names: &[String]) -> CloudResult<HashMap<String, TypeInfo>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.types.lock().expect("types lock");
            for n in names {
                match cache.get(n) {
                    Some(t) => {
                        out.insert(n.clone(), t.clone());
                    }
                    None => missing.push(n.clone()),
                }
            }
        }
        // One call per type: an unknown name fails the whole batch with InvalidInstanceType,
        // and a per-type call tells which one it is.
        for n in missing {
            match self
                .ec2
                .describe_instance_types()
                .instance_types(InstanceType::from(n.as_str()))
                .send()
                .await
            {
                Ok(o) => {
                    for t in o.instance_types() {
                        let info = type_info(t);
                        self.types
                            .lock()
                            .expect("types lock")
                            .insert(info.name.clone(), info.clone());
                        out.insert(info.name.clone(), info);
                    }
                }
                Err(e) => {
                    let e = self.err("DescribeInstanceTypes", e);
                    if matches!(super::errors::code_of(&e), Some(c) if c.starts_with("InvalidInstanceType"))
                    {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Every current-generation type of `arch` (cached), for shape selection.
    async fn types_of_arch(&self, arch: Arch) -> CloudResult<Vec<TypeInfo>> {
        let mut all = self.all_types.lock().await;
        if let Some(v) = all.get(&arch) {
            return Ok(v.clone());
        }
        let mut pages = self
            .ec2
            .describe_instance_types()
            .filters(filter(
                "processor-info.supported-architecture",
                &[ec2_arch(arch)],
            ))
            .filters(filter("current-generation", &["true"]))
            .max_results(100)
            .into_paginator()
            .send();
        let mut v = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstanceTypes", e))?;
            // Filtered again here: the filters are an optimisation, not something to rely on.
            v.extend(
                page.instance_types()
                    .iter()
                    .map(type_info)
                    .filter(|t| t.arches.contains(&arch)),
            );
        }
        all.insert(arch, v.clone());
        Ok(v)
    }

    /// The instance type of a request: the flavor, or the smallest type fitting the shape.
    async fn instance_type_for(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<Result<TypeInfo, PlanProblem>> {
        match &req.size {
            MachineSize::Flavor(f) => {
                let found = self.describe_types(std::slice::from_ref(f)).await?;
                Ok(found.get(f).cloned().ok_or_else(|| PlanProblem {
                    instance_group: req.instance_group.clone(),
                    problem: format!("instance type {f:?} does not exist in region {}", self.cfg.region),
                    fix: "set flavor to an instance type of this region (aws ec2 describe-instance-types), or use size: {cpu, memory}".into(),
                }))
            }
            MachineSize::Shape { cpus, memory_mib } => {
                let types = self.types_of_arch(req.arch).await?;
                match pick_instance_type(&types, req.arch, *cpus, *memory_mib) {
                    Some(t) => {
                        tracing::info!(
                            "instance group {}: {cpus} vCPU / {memory_mib} MiB {} → instance type {} ({} vCPU, {} MiB)",
                            req.instance_group,
                            req.arch,
                            t.name,
                            t.vcpus,
                            t.memory_mib
                        );
                        self.types.lock().expect("types lock").insert(t.name.clone(), t.clone());
                        Ok(Ok(t.clone()))
                    }
                    None => Ok(Err(PlanProblem {
                        instance_group: req.instance_group.clone(),
                        problem: format!("no current-generation {} instance type has {cpus} vCPU and {memory_mib} MiB", req.arch),
                        fix: "ask for a smaller size, or set flavor to a specific instance type".into(),
                    })),
                }
            }
        }
    }

    /// The image of a request (cached per arch and image setting).
    async fn image_for(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<Result<ImageChoice, PlanProblem>> {
        let key = (req.arch, req.image.clone());
        if let Some(c) = self.images.lock().expect("images lock").get(&key) {
            return Ok(Ok(c.clone()));
        }
        let mut call = self.ec2.describe_images();
        let what;
        match req.image.as_deref() {
            Some(id) if id.starts_with("ami-") => {
                call = call.image_ids(id);
                what = format!("AMI {id}");
            }
            other => {
                let owner =
                    self.cfg.ami_owner.clone().unwrap_or_else(|| {
                        partition_for(&self.cfg.region).canonical_owner.to_string()
                    });
                let name = other
                    .map(str::to_string)
                    .or_else(|| self.cfg.ami_name.clone())
                    .unwrap_or_else(|| DEFAULT_AMI_NAME.into());
                call = call
                    .owners(&owner)
                    .filters(filter("name", &[&name]))
                    .filters(filter("architecture", &[ec2_arch(req.arch)]))
                    .filters(filter("state", &["available"]));
                what = format!(
                    "{} image named {name:?} owned by {owner}",
                    ec2_arch(req.arch)
                );
            }
        }
        let out = match call.send().await {
            Ok(o) => o,
            Err(e) => {
                let e = self.err("DescribeImages", e);
                if matches!(super::errors::code_of(&e), Some(c) if c.starts_with("InvalidAMIID")) {
                    return Ok(Err(PlanProblem {
                        instance_group: req.instance_group.clone(),
                        problem: format!("no {what} in region {}", self.cfg.region),
                        fix: "set image to an AMI id of this region, or unset it to use the default image".into(),
                    }));
                }
                return Err(e);
            }
        };
        let mut images: Vec<_> = out.images().iter().collect();
        // Newest first; the name breaks ties (moto has no creation dates).
        images.sort_by(|a, b| (b.creation_date(), b.name()).cmp(&(a.creation_date(), a.name())));
        let Some(img) = images.first() else {
            return Ok(Err(PlanProblem {
                instance_group: req.instance_group.clone(),
                problem: format!("no {what} in region {}", self.cfg.region),
                fix: "set spec.provider.aws.amiOwner / amiName, or the instance group's image, to an image of this region and architecture".into(),
            }));
        };
        let choice = ImageChoice {
            id: img.image_id().unwrap_or_default().to_string(),
            name: img.name().unwrap_or_default().to_string(),
            arch: img.architecture().and_then(|a| Arch::parse(a.as_str())),
            root_device: img.root_device_name().unwrap_or("/dev/sda1").to_string(),
            root_size_gib: img
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == img.root_device_name())
                .or_else(|| img.block_device_mappings().first())
                .and_then(|m| m.ebs())
                .and_then(|e| e.volume_size()),
        };
        self.images
            .lock()
            .expect("images lock")
            .insert(key, choice.clone());
        Ok(Ok(choice))
    }

    /// Every problem of one request: type exists, fits arch and AMI, has the GPUs asked for.
    async fn problems_of(&self, req: &InstanceRequest) -> CloudResult<Vec<PlanProblem>> {
        let mut out = Vec::new();
        let ig = req.instance_group.clone();
        let ty = match self.instance_type_for(req).await? {
            Ok(t) => Some(t),
            Err(p) => {
                out.push(p);
                None
            }
        };
        let img = match self.image_for(req).await? {
            Ok(i) => Some(i),
            Err(p) => {
                out.push(p);
                None
            }
        };
        if let Some(t) = &ty {
            if !t.arches.is_empty() && !t.arches.contains(&req.arch) {
                out.push(PlanProblem {
                    instance_group: ig.clone(),
                    problem: format!(
                        "instance type {} runs {} but the instance group's arch is {}",
                        t.name,
                        t.arch_list(),
                        req.arch
                    ),
                    fix: format!(
                        "use an {} instance type, or set arch to {}",
                        req.arch,
                        t.arch_list()
                    ),
                });
            }
        }
        if let Some(i) = &img {
            if let Some(a) = i.arch {
                if a != req.arch {
                    out.push(PlanProblem {
                        instance_group: ig.clone(),
                        problem: format!(
                            "image {} ({}) is {a} but the instance group's arch is {}",
                            i.id, i.name, req.arch
                        ),
                        fix: format!("use an {} image, or set arch: {a}", req.arch),
                    });
                }
                if let Some(t) = &ty {
                    if !t.arches.is_empty()
                        && !t.arches.contains(&a)
                        && t.arches.contains(&req.arch)
                    {
                        out.push(PlanProblem {
                            instance_group: ig.clone(),
                            problem: format!(
                                "instance type {} ({}) cannot boot image {} ({a})",
                                t.name,
                                t.arch_list(),
                                i.id
                            ),
                            fix: "pick an image and an instance type of the same architecture"
                                .into(),
                        });
                    }
                }
            }
        }
        if let (Some(want), Some(i)) = (req.root_disk_gib, &img) {
            if let Some(min) = i.root_size_gib.filter(|m| i64::from(want) < i64::from(*m)) {
                out.push(PlanProblem {
                    instance_group: ig.clone(),
                    problem: format!(
                        "rootDisk {want}Gi is smaller than image {}'s root snapshot ({min}Gi)",
                        i.id
                    ),
                    fix: format!("set rootDisk to at least {min}Gi"),
                });
            }
        }
        if let (Some(g), Some(t)) = (&req.gpu, &ty) {
            let matching = if g.vendor.is_none() && g.model.is_none() {
                t.gpus
            } else {
                let probe = |name: &str| {
                    crate::GpuInfo {
                        id: String::new(),
                        vendor: name.to_string(),
                        model: name.to_string(),
                        host: String::new(),
                        arch: None,
                        attached_to: None,
                    }
                    .matches(g)
                };
                if t.gpu_names.iter().any(|n| probe(n)) {
                    t.gpus
                } else {
                    0
                }
            };
            if matching < g.count {
                let has = if t.gpus == 0 {
                    "has no GPUs".to_string()
                } else {
                    format!("has {} GPU(s): {}", t.gpus, t.gpu_names.join(", "))
                };
                let want = [g.vendor.as_deref(), g.model.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(PlanProblem {
                    instance_group: ig.clone(),
                    problem: format!("instance type {} {has}, the instance group asks for {}x{}", t.name, g.count, if want.is_empty() { " GPU".into() } else { format!(" {want}") }),
                    fix: "use a GPU instance type with those GPUs (e.g. g4dn.xlarge: 1x NVIDIA T4, g5g.xlarge: arm64 + T4g), or remove gpu".into(),
                });
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------------------------- network

    async fn zones(&self) -> CloudResult<Vec<String>> {
        if !self.cfg.zones.is_empty() {
            return Ok(self.cfg.zones.clone());
        }
        let out = self
            .ec2
            .describe_availability_zones()
            .filters(filter("state", &["available"]))
            .send()
            .await
            .map_err(|e| self.err("DescribeAvailabilityZones", e))?;
        let mut z: Vec<String> = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        z.sort();
        z.truncate(DEFAULT_ZONES);
        if z.is_empty() {
            return Err(fatal(
                "NoZones",
                format!("region {} lists no available zone", self.cfg.region),
                "set spec.provider.aws.zones",
            ));
        }
        Ok(z)
    }

    async fn find_vpc(&self, cluster: &str) -> CloudResult<Option<(String, Option<String>)>> {
        let out = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(Self::owned_filters(cluster, "vpc")))
            .send()
            .await
            .map_err(|e| self.err("DescribeVpcs", e))?;
        let mut v: Vec<_> = out
            .vpcs()
            .iter()
            .filter_map(|v| Some((v.vpc_id()?.to_string(), v.cidr_block().map(str::to_string))))
            .collect();
        v.sort();
        Ok(v.into_iter().next())
    }

    async fn ensure_vpc(&self, cluster: &str) -> CloudResult<(String, String)> {
        if let Some((id, cidr)) = self.find_vpc(cluster).await? {
            return Ok((id, cidr.unwrap_or_else(|| self.cfg.vpc_cidr.clone())));
        }
        let out = self
            .ec2_once
            .create_vpc()
            .cidr_block(&self.cfg.vpc_cidr)
            .tag_specifications(self.tag_spec(
                ResourceType::Vpc,
                self.base_tags(cluster, "vpc", &format!("kprov-{cluster}")),
            ))
            .send()
            .await
            .map_err(|e| self.err("CreateVpc", e))?;
        let id = out
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| protocol("CreateVpc returned no VPC id"))?
            .to_string();
        tracing::info!(vpc = %id, "created VPC {}", self.cfg.vpc_cidr);
        Ok((id, self.cfg.vpc_cidr.clone()))
    }

    async fn ensure_igw(&self, cluster: &str, vpc: &str) -> CloudResult<String> {
        let out = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(Self::owned_filters(cluster, "igw")))
            .send()
            .await
            .map_err(|e| self.err("DescribeInternetGateways", e))?;
        let mut found: Vec<_> = out.internet_gateways().iter().collect();
        found.sort_by_key(|g| g.internet_gateway_id().map(str::to_string));
        let (id, attached) = match found.first() {
            Some(g) => (
                g.internet_gateway_id().unwrap_or_default().to_string(),
                g.attachments().iter().any(|a| a.vpc_id() == Some(vpc)),
            ),
            None => {
                let out = self
                    .ec2_once
                    .create_internet_gateway()
                    .tag_specifications(self.tag_spec(
                        ResourceType::InternetGateway,
                        self.base_tags(cluster, "igw", &format!("kprov-{cluster}")),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateInternetGateway", e))?;
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| protocol("CreateInternetGateway returned no id"))?
                    .to_string();
                (id, false)
            }
        };
        if !attached {
            match self
                .ec2_once
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    let e = self.err("AttachInternetGateway", e);
                    // Attached by an earlier run whose answer was lost.
                    if super::errors::code_of(&e) != Some("Resource.AlreadyAssociated") {
                        return Err(e);
                    }
                }
            }
        }
        Ok(id)
    }

    async fn ensure_route_table(
        &self,
        cluster: &str,
        vpc: &str,
        igw: &str,
    ) -> CloudResult<(String, Vec<String>)> {
        let out = self
            .ec2
            .describe_route_tables()
            .set_filters(Some(Self::owned_filters(cluster, "route-table")))
            .send()
            .await
            .map_err(|e| self.err("DescribeRouteTables", e))?;
        let mut found: Vec<_> = out.route_tables().iter().collect();
        found.sort_by_key(|r| r.route_table_id().map(str::to_string));
        let (id, has_default, associated) = match found.first() {
            Some(rt) => (
                rt.route_table_id().unwrap_or_default().to_string(),
                rt.routes().iter().any(|r| {
                    r.destination_cidr_block() == Some("0.0.0.0/0") && r.gateway_id() == Some(igw)
                }),
                rt.associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect(),
            ),
            None => {
                let out = self
                    .ec2_once
                    .create_route_table()
                    .vpc_id(vpc)
                    .tag_specifications(self.tag_spec(
                        ResourceType::RouteTable,
                        self.base_tags(cluster, "route-table", &format!("kprov-{cluster}")),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateRouteTable", e))?;
                let id = out
                    .route_table()
                    .and_then(|r| r.route_table_id())
                    .ok_or_else(|| protocol("CreateRouteTable returned no id"))?
                    .to_string();
                (id, false, Vec::new())
            }
        };
        if !has_default {
            if let Err(e) = self
                .ec2_once
                .create_route()
                .route_table_id(&id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(igw)
                .send()
                .await
            {
                let e = self.err("CreateRoute", e);
                if super::errors::code_of(&e) != Some("RouteAlreadyExists") {
                    return Err(e);
                }
            }
        }
        Ok((id, associated))
    }

    async fn ensure_subnets(
        &self,
        cluster: &str,
        vpc: &str,
        cidr: &str,
        route_table: &str,
        associated: &[String],
    ) -> CloudResult<Vec<String>> {
        let zones = self.zones().await?;
        let out = self
            .ec2
            .describe_subnets()
            .set_filters(Some(Self::owned_filters(cluster, "subnet")))
            .send()
            .await
            .map_err(|e| self.err("DescribeSubnets", e))?;
        let mut have: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for s in out.subnets() {
            if let (Some(id), Some(z)) = (s.subnet_id(), s.availability_zone()) {
                let e = have
                    .entry(z.to_string())
                    .or_insert((id.to_string(), s.map_public_ip_on_launch().unwrap_or(false)));
                if id < e.0.as_str() {
                    *e = (id.to_string(), s.map_public_ip_on_launch().unwrap_or(false));
                }
            }
        }
        let mut ids = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let (id, public) = match have.get(zone) {
                Some(x) => x.clone(),
                None => {
                    let block = cidr_subnet(cidr, 4, i as u32).ok_or_else(|| {
                        fatal(
                            "InvalidVpc.Range",
                            format!("cannot carve subnet {i} out of {cidr}"),
                            "use a vpcCidr of /16 to /24",
                        )
                    })?;
                    let out = self
                        .ec2_once
                        .create_subnet()
                        .vpc_id(vpc)
                        .cidr_block(&block)
                        .availability_zone(zone)
                        .tag_specifications(self.tag_spec(
                            ResourceType::Subnet,
                            self.base_tags(cluster, "subnet", &format!("kprov-{cluster}-{zone}")),
                        ))
                        .send()
                        .await
                        .map_err(|e| self.err("CreateSubnet", e))?;
                    let id = out
                        .subnet()
                        .and_then(|s| s.subnet_id())
                        .ok_or_else(|| protocol("CreateSubnet returned no id"))?
                        .to_string();
                    (id, false)
                }
            };
            if !public {
                // Nodes reach the internet (packages, images) through the gateway without a NAT.
                self.ec2_once
                    .modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                    .send()
                    .await
                    .map_err(|e| self.err("ModifySubnetAttribute", e))?;
            }
            if !associated.contains(&id) {
                if let Err(e) = self
                    .ec2_once
                    .associate_route_table()
                    .route_table_id(route_table)
                    .subnet_id(&id)
                    .send()
                    .await
                {
                    let e = self.err("AssociateRouteTable", e);
                    if super::errors::code_of(&e) != Some("Resource.AlreadyAssociated") {
                        return Err(e);
                    }
                }
            }
            ids.push(id);
        }
        Ok(ids)
    }

    async fn find_security_group(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<aws_sdk_ec2::types::SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .set_filters(Some(Self::owned_filters(cluster, "security-group")))
            .send()
            .await
            .map_err(|e| self.err("DescribeSecurityGroups", e))?;
        let mut v: Vec<_> = out.security_groups().to_vec();
        v.sort_by(|a, b| a.group_id().cmp(&b.group_id()));
        Ok(v.into_iter().next())
    }

    async fn ensure_security_group(
        &self,
        cluster: &str,
        vpc: &str,
        vpc_cidr: &str,
    ) -> CloudResult<String> {
        let existing = self.find_security_group(cluster).await?;
        let (id, perms) = match existing {
            Some(sg) => (
                sg.group_id().unwrap_or_default().to_string(),
                sg.ip_permissions().to_vec(),
            ),
            None => {
                let name = format!("kprov-{cluster}");
                let out = self
                    .ec2_once
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("kprov cluster {cluster}: nodes and API server"))
                    .vpc_id(vpc)
                    .tag_specifications(self.tag_spec(
                        ResourceType::SecurityGroup,
                        self.base_tags(cluster, "security-group", &name),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateSecurityGroup", e))?;
                (
                    out.group_id()
                        .ok_or_else(|| protocol("CreateSecurityGroup returned no id"))?
                        .to_string(),
                    Vec::new(),
                )
            }
        };
        let has_self = perms.iter().any(|p| {
            p.ip_protocol() == Some("-1")
                && p.user_id_group_pairs()
                    .iter()
                    .any(|g| g.group_id() == Some(id.as_str()))
        });
        let has_cidr = |port: i32, cidr: &str| {
            perms.iter().any(|p| {
                p.ip_protocol() == Some("tcp")
                    && p.from_port() == Some(port)
                    && p.to_port() == Some(port)
                    && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr))
            })
        };
        let mut want = Vec::new();
        if !has_self {
            // Node-to-node: everything between members (kubelet, CNI overlay, etcd, API).
            want.push(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build())
                    .build(),
            );
        }
        let api = i32::from(self.cfg.api_port);
        // The VPC itself (NLB health checks and traffic), then the configured outside CIDRs.
        let mut api_cidrs = vec![vpc_cidr.to_string()];
        api_cidrs.extend(self.cfg.api_access.iter().cloned());
        for c in api_cidrs.iter().filter(|c| !has_cidr(api, c)) {
            want.push(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(api)
                    .to_port(api)
                    .ip_ranges(IpRange::builder().cidr_ip(c).build())
                    .build(),
            );
        }
        for c in self.cfg.ssh_access.iter().filter(|c| !has_cidr(22, c)) {
            want.push(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(IpRange::builder().cidr_ip(c).build())
                    .build(),
            );
        }
        if !want.is_empty() {
            if let Err(e) = self
                .ec2_once
                .authorize_security_group_ingress()
                .group_id(&id)
                .set_ip_permissions(Some(want))
                .send()
                .await
            {
                let e = self.err("AuthorizeSecurityGroupIngress", e);
                if super::errors::code_of(&e) != Some("InvalidPermission.Duplicate") {
                    return Err(e);
                }
            }
        }
        Ok(id)
    }

    fn key_name(cluster: &str) -> String {
        format!("kprov-{cluster}")
    }

    async fn find_key_pair(&self, cluster: &str) -> CloudResult<Option<(String, Option<String>)>> {
        match self
            .ec2
            .describe_key_pairs()
            .key_names(Self::key_name(cluster))
            .send()
            .await
        {
            Ok(o) => Ok(o.key_pairs().first().map(|k| {
                (
                    k.key_name().unwrap_or_default().to_string(),
                    k.key_pair_id().map(str::to_string),
                )
            })),
            Err(e) => {
                let e = self.err("DescribeKeyPairs", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn ensure_key_pair(&self, cluster: &str) -> CloudResult<Option<String>> {
        let Some(key) = self.cfg.ssh_public_key.as_deref() else {
            return Ok(None);
        };
        let name = Self::key_name(cluster);
        if self.find_key_pair(cluster).await?.is_some() {
            return Ok(Some(name));
        }
        match self
            .ec2_once
            .import_key_pair()
            .key_name(&name)
            .public_key_material(Blob::new(key.trim().as_bytes().to_vec()))
            .tag_specifications(self.tag_spec(
                ResourceType::KeyPair,
                self.base_tags(cluster, "key-pair", &name),
            ))
            .send()
            .await
        {
            Ok(_) => Ok(Some(name)),
            Err(e) => {
                let e = self.err("ImportKeyPair", e);
                if super::errors::code_of(&e) == Some("InvalidKeyPair.Duplicate") {
                    Ok(Some(name))
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn find_target_group(&self, cluster: &str) -> CloudResult<Option<String>> {
        match self
            .elb
            .describe_target_groups()
            .names(elb_name(cluster, "api"))
            .send()
            .await
        {
            Ok(o) => Ok(o
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .map(str::to_string)),
            Err(e) => {
                let e = self.err("DescribeTargetGroups", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn find_load_balancer(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<(String, Option<String>)>> {
        match self
            .elb
            .describe_load_balancers()
            .names(elb_name(cluster, "api"))
            .send()
            .await
        {
            Ok(o) => Ok(o.load_balancers().first().and_then(|l| {
                Some((
                    l.load_balancer_arn()?.to_string(),
                    l.dns_name().map(str::to_string),
                ))
            })),
            Err(e) => {
                let e = self.err("DescribeLoadBalancers", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn elb_tags(cluster: &str, resource: &str) -> CloudResult<Vec<elbv2::types::Tag>> {
        [
            (TAG_CLUSTER.to_string(), cluster.to_string()),
            (k8s_cluster_tag(cluster), "owned".into()),
            (TAG_RESOURCE.into(), resource.into()),
        ]
        .into_iter()
        .map(|(k, v)| Ok(elbv2::types::Tag::builder().key(k).value(v).build()))
        .collect()
    }

    /// The NLB of an HA control plane: target group, load balancer, TCP listener.
    async fn ensure_load_balancer(
        &self,
        cluster: &str,
        vpc: &str,
        subnets: &[String],
    ) -> CloudResult<String> {
        let name = elb_name(cluster, "api");
        let port = i32::from(self.cfg.api_port);
        let tg = match self.find_target_group(cluster).await? {
            Some(a) => a,
            None => {
                let out = self
                    .elb_once
                    .create_target_group()
                    .name(&name)
                    .protocol(ProtocolEnum::Tcp)
                    .port(port)
                    .vpc_id(vpc)
                    .target_type(TargetTypeEnum::Instance)
                    .health_check_protocol(ProtocolEnum::Tcp)
                    .set_tags(Some(Self::elb_tags(cluster, "target-group")?))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateTargetGroup", e))?;
                out.target_groups()
                    .first()
                    .and_then(|t| t.target_group_arn())
                    .ok_or_else(|| protocol("CreateTargetGroup returned no ARN"))?
                    .to_string()
            }
        };
        let lb = match self.find_load_balancer(cluster).await? {
            Some((a, _)) => a,
            None => {
                let out = self
                    .elb_once
                    .create_load_balancer()
                    .name(&name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .scheme(LoadBalancerSchemeEnum::InternetFacing)
                    .set_subnets(Some(subnets.to_vec()))
                    .set_tags(Some(Self::elb_tags(cluster, "load-balancer")?))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateLoadBalancer", e))?;
                out.load_balancers()
                    .first()
                    .and_then(|l| l.load_balancer_arn())
                    .ok_or_else(|| protocol("CreateLoadBalancer returned no ARN"))?
                    .to_string()
            }
        };
        let listeners = self
            .elb
            .describe_listeners()
            .load_balancer_arn(&lb)
            .send()
            .await
            .map_err(|e| self.err("DescribeListeners", e))?;
        if !listeners.listeners().iter().any(|l| l.port() == Some(port)) {
            let action = ElbAction::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg)
                .build();
            if let Err(e) = self
                .elb_once
                .create_listener()
                .load_balancer_arn(&lb)
                .protocol(ProtocolEnum::Tcp)
                .port(port)
                .default_actions(action)
                .send()
                .await
            {
                let e = self.err("CreateListener", e);
                if super::errors::code_of(&e) != Some("DuplicateListener") {
                    return Err(e);
                }
            }
        }
        Ok(tg)
    }

    /// The API endpoint (`DNS-NAME:PORT`) of the cluster's NLB, when it has one. The engine
    /// should hand this to joining nodes instead of the first control plane's address.
    pub async fn api_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        Ok(self
            .find_load_balancer(cluster)
            .await?
            .and_then(|(_, dns)| dns)
            .map(|d| format!("{d}:{}", self.cfg.api_port)))
    }

    /// Look up (never create) the network of `cluster`: for `create_instance` in a process
    /// that has not run `ensure_network`.
    async fn lookup_network(&self, cluster: &str) -> CloudResult<Option<NetState>> {
        let subnets = match &self.cfg.vpc_id {
            Some(v) => self.reused_subnets(v).await?,
            None => {
                if self.find_vpc(cluster).await?.is_none() {
                    return Ok(None);
                }
                let out = self
                    .ec2
                    .describe_subnets()
                    .set_filters(Some(Self::owned_filters(cluster, "subnet")))
                    .send()
                    .await
                    .map_err(|e| self.err("DescribeSubnets", e))?;
                let mut s: Vec<(String, String)> = out
                    .subnets()
                    .iter()
                    .filter_map(|s| {
                        Some((
                            s.availability_zone()?.to_string(),
                            s.subnet_id()?.to_string(),
                        ))
                    })
                    .collect();
                s.sort();
                s.into_iter().map(|(_, id)| id).collect()
            }
        };
        let Some(sg) = self.find_security_group(cluster).await? else {
            return Ok(None);
        };
        if subnets.is_empty() {
            return Ok(None);
        }
        let key_name = match self.cfg.ssh_public_key {
            Some(_) => self.find_key_pair(cluster).await?.map(|(n, _)| n),
            None => None,
        };
        let target_group = if self.ha() {
            self.find_target_group(cluster).await?
        } else {
            None
        };
        Ok(Some(NetState {
            subnets,
            security_group: sg.group_id().unwrap_or_default().to_string(),
            key_name,
            target_group,
        }))
    }

    async fn reused_subnets(&self, vpc: &str) -> CloudResult<Vec<String>> {
        let mut call = self.ec2.describe_subnets();
        if self.cfg.subnet_ids.is_empty() {
            call = call.filters(filter("vpc-id", &[vpc]));
        } else {
            call = call.set_subnet_ids(Some(self.cfg.subnet_ids.clone()));
        }
        let out = call
            .send()
            .await
            .map_err(|e| self.err("DescribeSubnets", e))?;
        let mut s: Vec<(String, String)> = out
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == Some(vpc))
            .filter_map(|s| {
                Some((
                    s.availability_zone()?.to_string(),
                    s.subnet_id()?.to_string(),
                ))
            })
            .collect();
        s.sort();
        if s.is_empty() {
            return Err(fatal(
                "InvalidSubnetID.NotFound",
                format!("VPC {vpc} has none of the subnets asked for"),
                "check spec.provider.aws.vpcId / subnetIds",
            ));
        }
        Ok(s.into_iter().map(|(_, id)| id).collect())
    }

    async fn network(&self, cluster: &str) -> CloudResult<NetState> {
        let mut guard = self.net.lock().await;
        if let Some(n) = guard.as_ref() {
            if !self.ha() || n.target_group.is_some() {
                return Ok(n.clone());
            }
        }
        let found = self.lookup_network(cluster).await?.ok_or_else(|| {
            fatal(
                "NetworkNotReady",
                format!("the network of cluster {cluster} does not exist yet"),
                "run `kprov update cluster --yes`, which creates it first",
            )
        })?;
        *guard = Some(found.clone());
        Ok(found)
    }

    // ------------------------------------------------------------------------------ instances

    async fn describe_instances(
        &self,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<aws_sdk_ec2::types::Instance>> {
        let mut pages = self
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    /// The live instance(s) carrying the deterministic id of `req`; the lowest EC2 id first,
    /// like the planner keeps it when duplicates exist.
    async fn find_instance(&self, cluster: &str, id: &str) -> CloudResult<Option<Instance>> {
        let mut found: Vec<Instance> = self
            .describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter(&format!("tag:{TAG_INSTANCE_ID}"), &[id]),
                filter("instance-state-name", LIVE_STATES),
            ])
            .await?
            .iter()
            .map(to_instance)
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found.into_iter().next())
    }

    /// Live control-plane instances that are not targets of the cluster's API load balancer
    /// (with the target group ARN). Empty when the cluster has no load balancer.
    async fn unregistered_control_planes(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<(String, Instance)>> {
        // Asked whether or not this process saw an HA request: after a crash it may not have.
        let Some(tg) = self.find_target_group(cluster).await? else {
            return Ok(Vec::new());
        };
        let health = self
            .elb
            .describe_target_health()
            .target_group_arn(&tg)
            .send()
            .await
            .map_err(|e| self.err("DescribeTargetHealth", e))?;
        let registered: std::collections::HashSet<&str> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()))
            .collect();
        Ok(instances
            .iter()
            .filter(|i| i.tags.get(crate::TAG_ROLE).map(String::as_str) == Some("control-plane"))
            .filter(|i| !registered.contains(i.id.as_str()))
            .map(|i| (tg.clone(), i.clone()))
            .collect())
    }

    async fn register_target(&self, tg: &str, instance: &str) -> CloudResult<()> {
        let target = TargetDescription::builder()
            .id(instance)
            .port(i32::from(self.cfg.api_port))
            .build();
        // Registering an already registered target is a no-op in ELBv2: safe to repeat.
        self.elb_once
            .register_targets()
            .target_group_arn(tg)
            .targets(target)
            .send()
            .await
            .map_err(|e| self.err("RegisterTargets", e))?;
        Ok(())
    }

    async fn after_create(&self, req: &InstanceRequest, inst: &Instance) -> CloudResult<()> {
        if req.role == Role::ControlPlane && self.ha() {
            let net = self.network(&req.cluster).await?;
            if let Some(tg) = &net.target_group {
                self.register_target(tg, &inst.id).await?;
            }
        }
        Ok(())
    }

    async fn run_instance(
        &self,
        req: &InstanceRequest,
        net: &NetState,
        ty: &TypeInfo,
        img: &ImageChoice,
        token: &str,
    ) -> CloudResult<aws_sdk_ec2::types::Instance> {
        let mut tags: Vec<Tag> = req.tags.iter().map(|(k, v)| tag(k, v)).collect();
        tags.push(tag("Name", &req.name));
        tags.push(tag(&k8s_cluster_tag(&req.cluster), "owned"));
        let mut ebs = EbsBlockDevice::builder()
            .delete_on_termination(true)
            .volume_type(VolumeType::Gp3);
        // The root volume's size must be given when its mapping is overridden (to set
        // DeleteOnTermination): the request's, else the image's own.
        if let Some(g) = req.root_disk_gib.map(|g| g as i32).or(img.root_size_gib) {
            ebs = ebs.volume_size(g);
        }
        // Spread an instance group over the zones: index i of group g goes to subnet (h(g)+i) mod n.
        let h = req
            .instance_group
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        let subnet = &net.subnets[(h.wrapping_add(req.index) as usize) % net.subnets.len()];
        let call = self
            .ec2_once
            .run_instances()
            .image_id(&img.id)
            .instance_type(InstanceType::from(ty.name.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .subnet_id(subnet)
            .security_group_ids(&net.security_group)
            .set_key_name(net.key_name.clone())
            .set_user_data(encode_user_data(&req.name, &req.user_data)?)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&img.root_device)
                    .ebs(ebs.build())
                    .build(),
            )
            .tag_specifications(self.tag_spec(ResourceType::Instance, tags.clone()))
            .tag_specifications(self.tag_spec(ResourceType::Volume, tags));
        let out = call.send().await.map_err(|e| self.err("RunInstances", e))?;
        out.instances()
            .first()
            .cloned()
            .ok_or_else(|| protocol("RunInstances returned no instance"))
    }

    async fn delete_instance(&self, id: &str) -> CloudResult<()> {
        match self
            .ec2_once
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(o) => {
                let prev = o
                    .terminating_instances()
                    .first()
                    .and_then(|c| c.previous_state())
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string());
                if prev.as_deref() == Some("shutting-down") {
                    // Still going away: retryable, so the delete loop waits before the
                    // security group / subnets (which it still holds) are attempted.
                    return Err(CloudError::Transient {
                        provider: PROVIDER,
                        code: "InstanceShuttingDown".into(),
                        message: format!("instance {id} is still shutting down"),
                    });
                }
                Ok(())
            }
            Err(e) => {
                let e = self.err("TerminateInstances", e);
                if is_gone(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

fn type_info(t: &aws_sdk_ec2::types::InstanceTypeInfo) -> TypeInfo {
    let gpus = t.gpu_info().map(|g| g.gpus()).unwrap_or_default();
    TypeInfo {
        name: t
            .instance_type()
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
        arches: t
            .processor_info()
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .filter_map(|a| Arch::parse(a.as_str()))
                    .collect()
            })
            .unwrap_or_default(),
        vcpus: t
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .unwrap_or(0)
            .max(0) as u32,
        memory_mib: t
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .unwrap_or(0)
            .max(0) as u64,
        gpus: gpus
            .iter()
            .map(|g| g.count().unwrap_or(0).max(0) as u32)
            .sum(),
        gpu_names: gpus
            .iter()
            .map(|g| {
                format!(
                    "{} {}",
                    g.manufacturer().unwrap_or_default(),
                    g.name().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect(),
        current_generation: t.current_generation().unwrap_or(false),
        bare_metal: t.bare_metal().unwrap_or(false),
    }
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let tags = tags_of(i.tags());
    let id = i.instance_id().unwrap_or_default().to_string();
    Instance {
        name: tags.get("Name").cloned().unwrap_or_else(|| id.clone()),
        id,
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        address: i.private_ip_address().map(str::to_string),
        tags,
    }
}

fn resource(kind: ResourceKind, id: &str, tags: &[Tag]) -> Resource {
    let tags = tags_of(tags);
    Resource {
        kind,
        id: id.to_string(),
        name: tags.get("Name").cloned().unwrap_or_else(|| id.to_string()),
        tags,
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn control_plane_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        self.api_endpoint(cluster).await
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
        let cluster = req.cluster.as_str();
        let mut guard = self.net.lock().await;
        let (vpc_id, cidr, subnets, owned) = match &self.cfg.vpc_id {
            Some(v) => {
                let out = self
                    .ec2
                    .describe_vpcs()
                    .vpc_ids(v)
                    .send()
                    .await
                    .map_err(|e| self.err("DescribeVpcs", e))?;
                let cidr = out
                    .vpcs()
                    .first()
                    .and_then(|x| x.cidr_block())
                    .map(str::to_string)
                    .unwrap_or_default();
                (v.clone(), cidr, self.reused_subnets(v).await?, false)
            }
            None => {
                let (vpc, cidr) = self.ensure_vpc(cluster).await?;
                let igw = self.ensure_igw(cluster, &vpc).await?;
                let (rt, associated) = self.ensure_route_table(cluster, &vpc, &igw).await?;
                let subnets = self
                    .ensure_subnets(cluster, &vpc, &cidr, &rt, &associated)
                    .await?;
                (vpc, cidr, subnets, true)
            }
        };
        let security_group = self.ensure_security_group(cluster, &vpc_id, &cidr).await?;
        let key_name = self.ensure_key_pair(cluster).await?;
        let target_group = if self.ha() {
            Some(
                self.ensure_load_balancer(cluster, &vpc_id, &subnets)
                    .await?,
            )
        } else {
            None
        };
        *guard = Some(NetState {
            subnets,
            security_group,
            key_name,
            target_group,
        });
        Ok(Network {
            id: vpc_id.clone(),
            name: if owned {
                format!("kprov-{cluster} ({vpc_id})")
            } else {
                vpc_id
            },
            cidr: Some(cidr).filter(|c| !c.is_empty()),
            owned,
        })
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let mut v: Vec<Instance> = self
            .describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter("instance-state-name", LIVE_STATES),
            ])
            .await?
            .iter()
            .map(to_instance)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        self.note_requests(std::slice::from_ref(req));
        // 1. Already there (an earlier run, or an earlier attempt whose answer was lost)?
        if let Some(inst) = self.find_instance(&req.cluster, &req.id).await? {
            self.after_create(req, &inst).await?;
            return Ok(inst);
        }
        let net = self.network(&req.cluster).await?;
        let ty = match self.instance_type_for(req).await? {
            Ok(t) => t,
            Err(p) => return Err(fatal("InvalidInstanceType", p.problem, p.fix)),
        };
        let img = match self.image_for(req).await? {
            Ok(i) => i,
            Err(p) => return Err(fatal("InvalidAMIID.NotFound", p.problem, p.fix)),
        };
        let mut token = client_token(req);
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            match self.run_instance(req, &net, &ty, &img, &token).await {
                Ok(i) => {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    // EC2 answers a reused token with the instance it made then, even if that
                    // one has since been terminated (someone deleted it by hand): make a new
                    // one with a fresh token instead of reporting a dead instance as created.
                    if matches!(state.as_str(), "shutting-down" | "terminated") && attempt == 1 {
                        token = format!(
                            "{}-{}",
                            &token[..40],
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0)
                        );
                        continue;
                    }
                    break i;
                }
                Err(e) => {
                    // 2. Ambiguous failure (no answer, dropped answer, 5xx, throttled): the
                    // instance may exist. Look before anyone retries.
                    if e.is_retryable() {
                        if let Some(inst) = self.find_instance(&req.cluster, &req.id).await? {
                            tracing::info!(instance = %req.name, id = %inst.id, "RunInstances failed ({e}) but the instance exists");
                            self.after_create(req, &inst).await?;
                            return Ok(inst);
                        }
                    }
                    return Err(e);
                }
            }
        };
        let mut inst = to_instance(&created);
        // RunInstances echoes the tags it applied; fall back to the request's if it did not.
        if inst.tags.is_empty() {
            inst.tags = req.tags.clone();
            inst.name = req.name.clone();
        }
        tracing::info!(instance = %req.name, id = %inst.id, r#type = %ty.name, ami = %img.id, "instance created");
        self.after_create(req, &inst).await?;
        Ok(inst)
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let by_cluster = || vec![filter(&format!("tag:{TAG_CLUSTER}"), &[cluster])];
        let (instances, volumes, sgs, subnets, rts, igws, vpcs, keys, elbs) = futures::join!(
            self.describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter("instance-state-name", DELETABLE_STATES)
            ]),
            self.ec2
                .describe_volumes()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_security_groups()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_subnets()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_route_tables()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_internet_gateways()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_vpcs()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_key_pairs()
                .set_filters(Some(by_cluster()))
                .send(),
            self.list_elb_resources(cluster),
        );
        let mut out = Vec::new();
        for i in instances? {
            out.push(resource(
                ResourceKind::Instance,
                i.instance_id().unwrap_or_default(),
                i.tags(),
            ));
        }
        out.extend(elbs?);
        for v in volumes
            .map_err(|e| self.err("DescribeVolumes", e))?
            .volumes()
        {
            let state = v.state().map(|s| s.as_str()).unwrap_or_default();
            if !matches!(state, "deleting" | "deleted") {
                out.push(resource(
                    ResourceKind::Volume,
                    v.volume_id().unwrap_or_default(),
                    v.tags(),
                ));
            }
        }
        for g in sgs
            .map_err(|e| self.err("DescribeSecurityGroups", e))?
            .security_groups()
        {
            out.push(resource(
                ResourceKind::SecurityGroup,
                g.group_id().unwrap_or_default(),
                g.tags(),
            ));
        }
        for k in keys
            .map_err(|e| self.err("DescribeKeyPairs", e))?
            .key_pairs()
        {
            // Key pairs are deleted by name, which is what EC2 (and moto) accept everywhere.
            let mut r = resource(
                ResourceKind::KeyPair,
                k.key_name().unwrap_or_default(),
                k.tags(),
            );
            r.name = k.key_name().unwrap_or_default().to_string();
            out.push(r);
        }
        for s in subnets
            .map_err(|e| self.err("DescribeSubnets", e))?
            .subnets()
        {
            out.push(resource(
                ResourceKind::Subnet,
                s.subnet_id().unwrap_or_default(),
                s.tags(),
            ));
        }
        for r in rts
            .map_err(|e| self.err("DescribeRouteTables", e))?
            .route_tables()
        {
            out.push(resource(
                ResourceKind::RouteTable,
                r.route_table_id().unwrap_or_default(),
                r.tags(),
            ));
        }
        for g in igws
            .map_err(|e| self.err("DescribeInternetGateways", e))?
            .internet_gateways()
        {
            out.push(resource(
                ResourceKind::Gateway,
                g.internet_gateway_id().unwrap_or_default(),
                g.tags(),
            ));
        }
        for v in vpcs.map_err(|e| self.err("DescribeVpcs", e))?.vpcs() {
            out.push(resource(
                ResourceKind::Network,
                v.vpc_id().unwrap_or_default(),
                v.tags(),
            ));
        }
        out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn delete_resource(&self, r: &Resource) -> CloudResult<()> {
        let id = r.id.as_str();
        let res = match r.kind {
            ResourceKind::Instance => return self.delete_instance(id).await,
            ResourceKind::LoadBalancer if id.contains(":targetgroup/") => self
                .elb_once
                .delete_target_group()
                .target_group_arn(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteTargetGroup", e)),
            ResourceKind::LoadBalancer => self
                .elb_once
                .delete_load_balancer()
                .load_balancer_arn(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteLoadBalancer", e)),
            ResourceKind::Volume => self
                .ec2_once
                .delete_volume()
                .volume_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteVolume", e)),
            ResourceKind::SecurityGroup => self
                .ec2_once
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteSecurityGroup", e)),
            ResourceKind::KeyPair => self
                .ec2_once
                .delete_key_pair()
                .key_name(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteKeyPair", e)),
            ResourceKind::Subnet => self
                .ec2_once
                .delete_subnet()
                .subnet_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteSubnet", e)),
            ResourceKind::RouteTable => self.delete_route_table(id).await,
            ResourceKind::Gateway => self.delete_igw(id).await,
            ResourceKind::Network => self
                .ec2_once
                .delete_vpc()
                .vpc_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteVpc", e)),
            ResourceKind::Tag | ResourceKind::StoragePool => {
                return Err(fatal(
                    "Unsupported",
                    format!(
                        "kprov's AWS adapter does not own {} resources ({id})",
                        r.kind
                    ),
                    "delete it by hand",
                ))
            }
        };
        match res {
            Err(e) if is_gone(&e) => Ok(()),
            other => other,
        }
    }
}

impl AwsCloud {
    /// Target groups and load balancers tagged with the cluster (ELBv2 has no tag filter:
    /// list, then read tags in batches of 20).
    async fn list_elb_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let mut arns: Vec<(String, String)> = Vec::new();
        let mut lbs = self.elb.describe_load_balancers().into_paginator().send();
        while let Some(p) = lbs.next().await {
            let p = p.map_err(|e| self.err("DescribeLoadBalancers", e))?;
            arns.extend(p.load_balancers().iter().filter_map(|l| {
                Some((
                    l.load_balancer_arn()?.to_string(),
                    l.load_balancer_name().unwrap_or_default().to_string(),
                ))
            }));
        }
        let mut tgs = self.elb.describe_target_groups().into_paginator().send();
        while let Some(p) = tgs.next().await {
            let p = p.map_err(|e| self.err("DescribeTargetGroups", e))?;
            arns.extend(p.target_groups().iter().filter_map(|t| {
                Some((
                    t.target_group_arn()?.to_string(),
                    t.target_group_name().unwrap_or_default().to_string(),
                ))
            }));
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(20) {
            let d = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
                .send()
                .await
                .map_err(|e| self.err("DescribeTags", e))?;
            for td in d.tag_descriptions() {
                let tags: BTreeMap<String, String> = td
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if tags.get(TAG_CLUSTER).map(String::as_str) == Some(cluster) {
                    let arn = td.resource_arn().unwrap_or_default().to_string();
                    let name = chunk
                        .iter()
                        .find(|(a, _)| *a == arn)
                        .map(|(_, n)| n.clone())
                        .unwrap_or_else(|| arn.clone());
                    out.push(Resource {
                        kind: ResourceKind::LoadBalancer,
                        id: arn,
                        name,
                        tags,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delete_route_table(&self, id: &str) -> CloudResult<()> {
        let out = match self
            .ec2
            .describe_route_tables()
            .route_table_ids(id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => return Err(self.err("DescribeRouteTables", e)),
        };
        for a in out.route_tables().iter().flat_map(|r| r.associations()) {
            if a.main() == Some(true) {
                continue;
            }
            if let Some(assoc) = a.route_table_association_id() {
                if let Err(e) = self
                    .ec2_once
                    .disassociate_route_table()
                    .association_id(assoc)
                    .send()
                    .await
                {
                    let e = self.err("DisassociateRouteTable", e);
                    if !is_gone(&e) {
                        return Err(e);
                    }
                }
            }
        }
        self.ec2_once
            .delete_route_table()
            .route_table_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteRouteTable", e))
    }

    async fn delete_igw(&self, id: &str) -> CloudResult<()> {
        let out = self
            .ec2
            .describe_internet_gateways()
            .internet_gateway_ids(id)
            .send()
            .await
            .map_err(|e| self.err("DescribeInternetGateways", e))?;
        for a in out.internet_gateways().iter().flat_map(|g| g.attachments()) {
            if let Some(vpc) = a.vpc_id() {
                if let Err(e) = self
                    .ec2_once
                    .detach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await
                {
                    let e = self.err("DetachInternetGateway", e);
                    if !is_gone(&e) {
                        return Err(e);
                    }
                }
            }
        }
        self.ec2_once
            .delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteInternetGateway", e))
    }
}
