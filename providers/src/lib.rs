//! The provider side of kprov: the [`Cloud`] trait every IaaS adapter implements, and the data
//! types that cross it.
//!
//! The engine (plan + apply in the `kprov` crate) only ever talks to a cloud through this trait.
//! Adapters live in their own modules behind cargo features (`zstack`, `aws`, `libvirt`).
//! The in-process cloud that engine tests and benchmarks run against lives in the test kit
//! (`kprov_testkit::memory`), not in the shipped library.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "libvirt")]
pub mod libvirt;
#[cfg(feature = "zstack")]
pub mod zstack;

/// Tag / label key naming the cluster that owns a resource. Every resource kprov creates has it.
pub const TAG_CLUSTER: &str = "kprov.io/cluster";
/// Tag key naming the instance group of an instance.
pub const TAG_INSTANCE_GROUP: &str = "kprov.io/instance-group";
/// Tag key naming the role (`control-plane` / `node`) of an instance.
pub const TAG_ROLE: &str = "kprov.io/role";
/// Tag key holding the instance's index inside its instance group.
pub const TAG_INDEX: &str = "kprov.io/index";
/// Tag key holding a hash of the instance's desired shape, so a changed spec is seen as `Replace`.
pub const TAG_SPEC_HASH: &str = "kprov.io/spec-hash";
/// Tag key holding the deterministic per-instance id (the idempotency key).
pub const TAG_INSTANCE_ID: &str = "kprov.io/instance-id";
/// Tag key holding how many rolling updates made this instance's slot anew (absent: 0, the
/// slot's first instance), so a forced roll's replacement (same spec) has a name of its own.
pub const TAG_GENERATION: &str = "kprov.io/generation";

/// CPU architecture of a node, in Kubernetes (GOARCH) spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86_64
    Amd64,
    /// aarch64
    Arm64,
}

impl Arch {
    /// The GOARCH spelling (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// The kernel / ZStack / libvirt spelling (`x86_64`, `aarch64`).
    pub fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
    /// Parse any common spelling (`amd64`, `x86_64`, `arm64`, `aarch64`).
    pub fn parse(s: &str) -> Option<Arch> {
        match s.to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" | "x64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Role of an instance in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the Kubernetes control plane (and etcd).
    ControlPlane,
    /// A worker node.
    Node,
}

impl Role {
    /// The spelling used in specs and tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a GPU is handed to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// The whole PCI device is passed through.
    #[default]
    Passthrough,
    /// A mediated (virtual) device slice of a GPU.
    Mdev,
}

/// GPUs wanted by one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// Number of devices per instance.
    pub count: u32,
    /// Vendor filter, e.g. `nvidia` (case-insensitive substring), if any.
    pub vendor: Option<String>,
    /// Model filter, e.g. `A100` or `T4` (case-insensitive substring), if any.
    pub model: Option<String>,
    /// Passthrough or mdev.
    pub mode: GpuMode,
}

/// Machine size: either explicit vCPU + memory, or a provider flavor / offering / instance type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineSize {
    /// Explicit shape.
    Shape {
        /// Virtual CPUs.
        cpus: u32,
        /// Memory in MiB.
        memory_mib: u64,
    },
    /// A provider-specific named size (ZStack instance offering, EC2 instance type, ...).
    Flavor(String),
}

/// What the engine asks a provider to make sure exists for the cluster's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// Cluster name.
    pub cluster: String,
    /// Tags to put on everything created for the network (always includes [`TAG_CLUSTER`]).
    pub tags: BTreeMap<String, String>,
}

/// What the engine asks a provider for as the cluster's control-plane endpoint: a stable
/// address in front of every control plane (an AWS network load balancer, a ZStack VIP with a
/// load balancer), made before the first instance so that every node, control planes
/// included, can be created at once and keeps working when a control plane is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// Cluster name.
    pub cluster: String,
    /// Tags to put on everything created for the endpoint (always includes [`TAG_CLUSTER`]).
    pub tags: BTreeMap<String, String>,
    /// API server port, on the endpoint and on the control planes behind it.
    pub port: u16,
    /// The address the user asked for (ZStack: the VIP's `requiredIp`; libvirt: kube-vip's
    /// VIP); `None`: the cloud picks.
    pub address: Option<String>,
    /// What holds the endpoint, as the spec names it (`zstack`, `aws`, `kube-vip`): shown in
    /// plans; a provider refuses a kind it cannot serve.
    pub kind: String,
}

/// A cluster network as the provider sees it (a VPC, an L3 network, a libvirt network ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The provider's id of it (VPC id, L3 network uuid, libvirt network name).
    pub id: String,
    /// Name to show in plans and messages.
    pub name: String,
    /// CIDR of the node network when known (used to check pod/service CIDR overlaps).
    pub cidr: Option<String>,
    /// True when kprov created (and therefore owns and deletes) this network.
    pub owned: bool,
}

/// Everything needed to create one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRequest {
    /// Cluster name.
    pub cluster: String,
    /// Instance name, `CLUSTER-IG-INDEX`; also the hostname.
    pub name: String,
    /// Deterministic idempotency key (a UUID derived from cluster, IG and index).
    pub id: String,
    /// Instance group.
    pub instance_group: String,
    /// Index within the instance group.
    pub index: u32,
    /// Whether it runs the control plane or is a worker.
    pub role: Role,
    /// CPU architecture; decides the image and the instance type or host.
    pub arch: Arch,
    /// Machine size: an explicit shape or a provider flavor.
    pub size: MachineSize,
    /// Image name or id (provider-specific); `None` means the provider's default for `arch`.
    pub image: Option<String>,
    /// Root disk size in GiB, if set.
    pub root_disk_gib: Option<u32>,
    /// GPUs, if any.
    pub gpu: Option<GpuRequest>,
    /// Network the instance joins.
    pub network_id: Option<String>,
    /// Rendered user-data (cloud-config), uncompressed.
    pub user_data: Vec<u8>,
    /// Tags (always includes cluster, IG, role, index, spec hash and instance id).
    pub tags: BTreeMap<String, String>,
}

/// An instance as observed in the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Provider id (ZStack VM uuid, EC2 instance id, libvirt domain uuid).
    pub id: String,
    /// Name (the request's name for instances kprov made; the hostname).
    pub name: String,
    /// Provider state, e.g. `Running`.
    pub state: String,
    /// Primary private address, when known.
    pub address: Option<String>,
    /// Tags / labels found on the instance.
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// The instance group this instance belongs to, from its tags.
    pub fn instance_group(&self) -> Option<&str> {
        self.tags.get(TAG_INSTANCE_GROUP).map(String::as_str)
    }
    /// Whether the instance runs a control plane, from its role tag.
    pub fn is_control_plane(&self) -> bool {
        self.tags.get(TAG_ROLE).map(String::as_str) == Some(Role::ControlPlane.as_str())
    }
    /// How many rolling updates made this slot anew ([`TAG_GENERATION`]; 0 when absent).
    pub fn generation(&self) -> u32 {
        self.tags
            .get(TAG_GENERATION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    /// The instance's index, from its tags.
    pub fn index(&self) -> Option<u32> {
        self.tags.get(TAG_INDEX).and_then(|s| s.parse().ok())
    }
}

/// Kinds of resources a provider may own for a cluster, in the order they must be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceKind {
    /// A VM / instance / domain.
    Instance,
    /// A load balancer's listener (deleted before its load balancer).
    Listener,
    /// A load balancer (and, on AWS, its listeners and target groups).
    LoadBalancer,
    /// A virtual IP a load balancer served (deleted after it).
    Vip,
    /// A disk or volume left behind by an instance.
    Volume,
    /// A standalone tag object that outlives its resource.
    Tag,
    /// A security group.
    SecurityGroup,
    /// An SSH key pair.
    KeyPair,
    /// A subnet.
    Subnet,
    /// A route table.
    RouteTable,
    /// An internet gateway.
    Gateway,
    /// A storage pool.
    StoragePool,
    /// The cluster network (VPC, libvirt network ...).
    Network,
}

impl ResourceKind {
    /// Name used in plans and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Instance => "Instance",
            ResourceKind::Listener => "Listener",
            ResourceKind::LoadBalancer => "LoadBalancer",
            ResourceKind::Vip => "Vip",
            ResourceKind::Volume => "Volume",
            ResourceKind::Tag => "Tag",
            ResourceKind::SecurityGroup => "SecurityGroup",
            ResourceKind::KeyPair => "KeyPair",
            ResourceKind::Subnet => "Subnet",
            ResourceKind::RouteTable => "RouteTable",
            ResourceKind::Gateway => "Gateway",
            ResourceKind::StoragePool => "StoragePool",
            ResourceKind::Network => "Network",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any cloud resource owned by a cluster, found by its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Kind (decides the deletion order).
    pub kind: ResourceKind,
    /// The provider's id, which `delete_resource` deletes by.
    pub id: String,
    /// Name to show in plans and messages.
    pub name: String,
    /// Tags / labels found on the resource (always includes [`TAG_CLUSTER`]).
    pub tags: BTreeMap<String, String>,
}

/// What the cloud offers, as far as kprov cares (zones, images, sizes, GPUs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Zone / availability zone names.
    pub zones: Vec<String>,
    /// Architectures the cloud can run VMs of (e.g. a ZStack cluster of aarch64 hosts).
    pub arches: Vec<Arch>,
    /// Images usable as root disks.
    pub images: Vec<ImageInfo>,
    /// Named sizes.
    pub flavors: Vec<FlavorInfo>,
    /// Networks instances can join (existing ones, and the cluster's if made).
    pub networks: Vec<Network>,
    /// GPUs / PCI devices usable for passthrough.
    pub gpus: Vec<GpuInfo>,
}

/// An image the provider can boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The provider's id of the image (ZStack uuid, AMI id, file path).
    pub id: String,
    /// Image name, as specs may give it.
    pub name: String,
    /// Architecture, when the provider records it.
    pub arch: Option<Arch>,
}

/// A named machine size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorInfo {
    /// The provider's id of the size (offering uuid, instance type).
    pub id: String,
    /// Size name, as an instance group's `flavor` gives it.
    pub name: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Architectures it runs on (empty = any).
    pub arches: Vec<Arch>,
    /// GPUs built in (EC2 GPU instance types).
    pub gpus: u32,
}

/// A GPU (or other PCI device) that can be given to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The provider's id of the device (ZStack device uuid, libvirt node device name).
    pub id: String,
    /// Vendor name.
    pub vendor: String,
    /// Model / device name.
    pub model: String,
    /// Host (or cluster) it lives on.
    pub host: String,
    /// Architecture of that host.
    pub arch: Option<Arch>,
    /// The VM it is attached to, when in use.
    pub attached_to: Option<String>,
}

impl GpuInfo {
    /// True when the device matches a request's vendor/model filters.
    pub fn matches(&self, req: &GpuRequest) -> bool {
        let has = |hay: &str, needle: &Option<String>| {
            needle
                .as_ref()
                .is_none_or(|n| hay.to_ascii_lowercase().contains(&n.to_ascii_lowercase()))
        };
        has(&self.vendor, &req.vendor) && has(&self.model, &req.model)
    }
}

/// A problem found when checking desired instances against the cloud before any change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanProblem {
    /// The instance group concerned (or empty for the cluster).
    pub instance_group: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// Errors from a provider. `retryable` decides whether the executor retries.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The cloud answered with an error it says is transient (throttling, 503, MN unavailable).
    #[error("{provider}: {message} (transient, code {code})")]
    Transient {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// Error code from the cloud's error body.
        code: String,
        /// What the cloud said, naming the call.
        message: String,
    },
    /// The cloud refused the request; retrying will not help.
    #[error("{provider}: {message} (code {code}); {fix}")]
    Fatal {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// Error code from the cloud's error body.
        code: String,
        /// What the cloud said, naming the call.
        message: String,
        /// What the user can do about it.
        fix: String,
    },
    /// Authentication failed or credentials are missing.
    #[error("{provider}: authentication failed: {message}; {fix}")]
    Auth {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// What was refused or is missing.
        message: String,
        /// What the user can do about it.
        fix: String,
    },
    /// The network call failed before the cloud answered (connection refused, reset, timeout).
    #[error("{provider}: cannot reach {endpoint}: {message}")]
    Unreachable {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// The endpoint that was called (URL or libvirt URI).
        endpoint: String,
        /// What failed: the call and the transport error.
        message: String,
    },
    /// An asynchronous operation did not finish in time.
    #[error("{provider}: {what} did not finish within {after:?}; check it in the cloud's console and re-run")]
    Timeout {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// The job / operation.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The cloud answered something kprov could not understand.
    #[error("{provider}: unexpected answer: {message}")]
    Protocol {
        /// The provider (`zstack`, `aws`, `libvirt`, `memory`).
        provider: &'static str,
        /// What was unexpected, naming the call.
        message: String,
    },
}

impl CloudError {
    /// A [`CloudError::Fatal`] of `provider`: the cloud refused with `code` (or kprov refuses
    /// before asking it), `message` says what is wrong and `fix` what the user can do. Every
    /// adapter builds its non-retryable errors with this.
    pub fn fatal(
        provider: &'static str,
        code: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> CloudError {
        CloudError::Fatal {
            provider,
            code: code.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CloudError::Transient { .. } | CloudError::Unreachable { .. }
        )
    }
}

/// Result type of provider calls.
pub type CloudResult<T> = Result<T, CloudError>;

/// One IaaS cloud. Every method is idempotent: the executor may call any of them again after a
/// crash or an ambiguous failure.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// Short provider name (`zstack`, `aws`, `libvirt`, `memory`).
    fn name(&self) -> &'static str;

    /// How many mutating calls the executor should run at once against this cloud by default.
    fn default_concurrency(&self) -> usize {
        8
    }

    /// The largest user-data this cloud accepts, in bytes of the user-data as handed to its API
    /// (before any base64 the API adds itself), or `None` when there is no practical limit.
    ///
    /// The limit exists because clouds carry user-data in a bounded API field (EC2's
    /// `UserData`, a ZStack system tag), and a cloud-config over it is refused only when the
    /// instance is created — after the network and earlier instances were made. The bootstrap
    /// renderer checks (and gzips) user-data against this figure before planning anything.
    /// Each adapter documents where its figure comes from.
    fn user_data_limit(&self) -> Option<usize>;

    /// Zones, images, sizes, networks and GPUs the cloud offers.
    async fn discover(&self) -> CloudResult<Inventory>;

    /// Check desired instances against what the cloud can give (image of the arch exists, enough
    /// free GPUs, size big enough ...). Returns every problem found; an empty list means go.
    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>>;

    /// Make sure the cluster's network exists; returns it (existing or new).
    async fn ensure_network(&self, req: &NetworkRequest) -> CloudResult<Network>;

    /// Instances tagged with the cluster, in any state but deleted.
    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>>;

    /// Create an instance, idempotently by `req.id`: if it exists already, return it.
    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance>;

    /// The `host:port` (or bare `host`: the API server's port) clients and joining nodes use
    /// for the API server when the provider manages one and it is complete (made by [`Cloud::ensure_control_plane_endpoint`]).
    /// Read-only. `None` means there is none (yet): the engine uses the first control plane's
    /// address unless it asks for one.
    async fn control_plane_endpoint(&self, _cluster: &str) -> CloudResult<Option<String>> {
        Ok(None)
    }

    /// Problems with `req` found before anything changes (an address outside the network or
    /// taken). Read-only; an empty list means go.
    async fn check_control_plane_endpoint(
        &self,
        _req: &EndpointRequest,
    ) -> CloudResult<Vec<PlanProblem>> {
        Ok(Vec::new())
    }

    /// Make sure the control-plane endpoint `req` asks for exists, after
    /// [`Cloud::ensure_network`] and before the first instance, and return its `host:port`.
    /// Idempotent: every piece is found by tag (or deterministic id) before it is made, so a
    /// re-run after a crash completes a half-made endpoint instead of making a second one.
    /// Control planes created later are put behind it by `create_instance` (and by
    /// [`Cloud::repair`] when a run died in between). A provider without load balancers
    /// refuses.
    async fn ensure_control_plane_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        Err(CloudError::fatal(
            self.name(),
            "Unsupported",
            format!(
                "cluster {}: the {} provider cannot make a control-plane load balancer",
                req.cluster,
                self.name()
            ),
            "set spec.controlPlane.loadBalancer: none (nodes join the first control plane) or spec.controlPlane.endpoint to one you run",
        ))
    }

    /// Drift that instance tags cannot show, e.g. a control plane missing from the API load
    /// balancer because a run died between creating and registering it. Read-only: returns one
    /// line per repair (shown in the plan); `repair` performs them.
    async fn pending_repairs(
        &self,
        _cluster: &str,
        _instances: &[Instance],
    ) -> CloudResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// Perform the repairs [`Cloud::pending_repairs`] reports for these instances. Idempotent.
    async fn repair(&self, _cluster: &str, _instances: &[Instance]) -> CloudResult<()> {
        Ok(())
    }

    /// Every resource the cluster owns (instances, networks, volumes, tags, ...), found by tag.
    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>>;

    /// Delete one resource. Deleting something already gone succeeds.
    async fn delete_resource(&self, resource: &Resource) -> CloudResult<()>;
}

/// The deterministic idempotency key of instance `index` of instance group `ig` in `cluster`:
/// a UUID v5 (RFC 4122, so ZStack accepts it as `resourceUuid`).
pub fn instance_id(cluster: &str, ig: &str, index: u32) -> String {
    const NS: uuid::Uuid = uuid::uuid!("3c5d2b9e-6f1a-5c7e-9a44-6b7e2f1d0c11");
    uuid::Uuid::new_v5(&NS, format!("{cluster}/{ig}/{index}").as_bytes())
        .simple()
        .to_string()
}

/// The idempotency key of the instance that replaces slot `index` of `ig` with the spec whose
/// hash is `spec_hash` (a rolling update's surge instance): deterministic like
/// [`instance_id`], so a re-run finds the replacement it made before instead of a second one.
pub fn replacement_instance_id(cluster: &str, ig: &str, index: u32, spec_hash: &str) -> String {
    const NS: uuid::Uuid = uuid::uuid!("3c5d2b9e-6f1a-5c7e-9a44-6b7e2f1d0c11");
    uuid::Uuid::new_v5(
        &NS,
        format!("{cluster}/{ig}/{index}/{spec_hash}").as_bytes(),
    )
    .simple()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_stable_and_zstack_shaped() {
        let a = instance_id("demo", "nodes", 0);
        assert_eq!(a, instance_id("demo", "nodes", 0));
        assert_ne!(a, instance_id("demo", "nodes", 1));
        assert_eq!(a.len(), 32);
        // version nibble 5, variant 8..b: what ZStack's isZStackUuid accepts
        assert_eq!(&a[12..13], "5");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn arch_parses_all_spellings() {
        assert_eq!(Arch::parse("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("sparc"), None);
    }

    #[test]
    fn gpu_filter_matches_substrings() {
        let g = GpuInfo {
            id: "x".into(),
            vendor: "NVIDIA Corporation".into(),
            model: "GA100 [A100 PCIe 40GB]".into(),
            host: "h".into(),
            arch: Some(Arch::Arm64),
            attached_to: None,
        };
        let mut r = GpuRequest {
            count: 1,
            vendor: Some("nvidia".into()),
            model: Some("a100".into()),
            mode: GpuMode::Passthrough,
        };
        assert!(g.matches(&r));
        r.model = Some("T4".into());
        assert!(!g.matches(&r));
    }
}
