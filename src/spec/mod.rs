//! The cluster spec: `Cluster` and `InstanceGroup` documents (`apiVersion: kprov.io/v1alpha1`),
//! their defaults and their validation.
//!
//! One place decides what a valid cluster is: [`load`] parses YAML keeping source positions,
//! [`validate()`] applies defaults and collects every problem as a [`SpecError`] that names where
//! (file:line:column or the flag), the field, what is wrong and how to fix it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use kprov_providers::{Arch, GpuMode, Role};

pub mod error;
pub mod load;
pub mod locate;
pub mod quantity;
pub mod upgrade;
pub mod validate;
pub mod versions;

pub use error::{SpecError, SpecErrors, Where};
pub use load::{load_documents, LoadedSpec};
pub use validate::validate;

/// Named mirror presets for restricted networks (see `docs/mirror.md`).
pub const PRESETS: &[&str] = &["aliyun"];

/// The only API version kprov reads and writes.
pub const API_VERSION: &str = "kprov.io/v1alpha1";

/// Object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name (DNS-1123 label).
    pub name: String,
    /// Labels. On an InstanceGroup, `kprov.io/cluster` names its cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Generation of this object in the state store (set by kprov; used to detect torn writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// A `kind: Cluster` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be `Cluster`.
    pub kind: String,
    /// The cluster's name (its key in the state store), labels and stored generation.
    pub metadata: Metadata,
    /// The spec.
    pub spec: ClusterSpec,
}

/// What the cluster is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Which cloud and its settings.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub provider: ProviderSpec,
    /// Kubernetes version, one of [`versions::supported`].
    pub kubernetes_version: String,
    /// Pod / service networks and the CNI.
    #[serde(default)]
    pub networking: Networking,
    /// How clients reach the API server.
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,
    /// Where nodes get images and binaries (mirrors for restricted networks).
    #[serde(default)]
    pub assets: Assets,
    /// Optional add-ons.
    #[serde(default)]
    pub addons: Addons,
    /// SSH public key installed for the default user on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    /// Bootstrap settings.
    #[serde(default)]
    pub bootstrap: BootstrapSpec,
    /// etcd settings (its backups in the state store).
    #[serde(default, skip_serializing_if = "EtcdSpec::is_default")]
    pub etcd: EtcdSpec,
}

/// The provider block: exactly one of `zstack`, `aws`, `libvirt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ProviderSpec {
    /// A ZStack cloud.
    Zstack(ZStackProvider),
    /// AWS EC2 (incl. China regions).
    Aws(AwsProvider),
    /// libvirt / KVM hosts.
    Libvirt(LibvirtProvider),
}

impl ProviderSpec {
    /// Provider name.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderSpec::Zstack(_) => "zstack",
            ProviderSpec::Aws(_) => "aws",
            ProviderSpec::Libvirt(_) => "libvirt",
        }
    }
}

/// ZStack settings. Credentials are never part of the spec: they come from the environment
/// (`ZSTACK_ACCOUNT`/`ZSTACK_PASSWORD` or `ZSTACK_ACCESS_KEY_ID`/`ZSTACK_ACCESS_KEY_SECRET`) or
/// a credentials file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZStackProvider {
    /// Management node URL, e.g. `http://zstack.example:8080`.
    pub endpoint: String,
    /// Zone name or uuid (default: the only zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// L3 network name or uuid for the nodes (default: the first with the Userdata service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_network: Option<String>,
    /// File holding credentials (`account:`/`password:` or `accessKeyId:`/`accessKeySecret:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

/// AWS settings. Credentials come from the standard AWS chain (env, profile, instance role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsProvider {
    /// Region, e.g. `us-east-1` or `cn-north-1`.
    pub region: String,
    /// Reuse this VPC instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Reuse these subnets (with `vpcId`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<String>,
    /// CIDR of the VPC kprov creates (default 172.20.0.0/16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_cidr: Option<IpNet>,
    /// CIDRs allowed to reach the API server port (default: none outside the VPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_access: Vec<IpNet>,
    /// CIDRs allowed to reach SSH (default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_access: Vec<IpNet>,
    /// AMI owner for the default image lookup (default: Canonical / the region's partition owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_owner: Option<String>,
    /// Name pattern (`*` wildcards) of the default images, matched together with `amiOwner` and
    /// the instance group's architecture; the newest match wins (default: Ubuntu 22.04 server,
    /// `ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-*-server-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_name: Option<String>,
    /// Availability zones for the subnets kprov creates (default: the region's first three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// libvirt settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LibvirtProvider {
    /// Connection URI (`qemu:///system`, `qemu+ssh://host/system`, `test:///default`).
    #[serde(default = "default_libvirt_uri")]
    pub uri: String,
    /// Storage pool to use (default: one pool per cluster, created by kprov).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Network mode: `nat`, `{existing: NAME}` or `{user: {forwards: {GUEST_PORT: HOST_PORT}}}`.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub network: LibvirtNetwork,
    /// Domain type: `auto` (kvm when the host can, else qemu/TCG), `kvm` or `qemu`.
    #[serde(default)]
    pub domain_type: LibvirtDomainType,
    /// Base image per architecture: a path or URL of a qcow2 cloud image on the kprov machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<Arch, String>,
}

fn default_libvirt_uri() -> String {
    "qemu:///system".into()
}

/// How libvirt VMs are networked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum LibvirtNetwork {
    /// A NAT network per cluster, created by kprov.
    #[default]
    Nat,
    /// An existing libvirt network, by name.
    Existing(String),
    /// qemu user networking restricted to forwarded loopback ports (tests, air-gap proofs).
    User(LibvirtUserNet),
}

/// Forwards of a restricted user-mode network: guest `10.0.2.100:PORT` → host loopback port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LibvirtUserNet {
    /// Guest port → host 127.0.0.1 port.
    #[serde(default)]
    pub forwards: BTreeMap<u16, u16>,
}

/// libvirt domain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LibvirtDomainType {
    /// KVM when the host's domain capabilities allow it, else qemu.
    #[default]
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
}

/// Cluster networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    /// Pod network (default 10.244.0.0/16, flannel's default).
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    pub pod_cidr: IpNet,
    /// Service network (default 10.96.0.0/12, kubeadm's default).
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    pub service_cidr: IpNet,
    /// The node network, when known in advance (checked for overlaps).
    #[serde(default, rename = "nodeCIDR", skip_serializing_if = "Option::is_none")]
    pub node_cidr: Option<IpNet>,
    /// The CNI plugin.
    #[serde(default)]
    pub cni: Cni,
}

impl Default for Networking {
    fn default() -> Self {
        Networking {
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
            node_cidr: None,
            cni: Cni::default(),
        }
    }
}

fn default_pod_cidr() -> IpNet {
    "10.244.0.0/16".parse().expect("valid")
}
fn default_service_cidr() -> IpNet {
    "10.96.0.0/12".parse().expect("valid")
}

/// CNI plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// flannel (VXLAN).
    #[default]
    Flannel,
    /// Calico (VXLAN), which also enforces NetworkPolicy.
    Calico,
    /// None: bring your own.
    None,
}

impl Cni {
    /// Name as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Flannel => "flannel",
            Cni::Calico => "calico",
            Cni::None => "none",
        }
    }
}

/// Control-plane endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// `host[:port]` clients use; default: a load balancer when the provider has one and there
    /// are several control-plane nodes, else the first control-plane node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// API server port.
    #[serde(default = "default_api_port")]
    pub port: u16,
    /// What kprov puts in front of the control planes as their endpoint; default: the
    /// provider's load balancer when there are several control planes and no `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerKind>,
    /// The address the load balancer's endpoint takes (ZStack: the VIP's `requiredIp`; libvirt:
    /// kube-vip's VIP, outside the network's DHCP range); default: the cloud picks a free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<std::net::Ipv4Addr>,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        ControlPlaneSpec {
            endpoint: None,
            port: default_api_port(),
            load_balancer: None,
            vip: None,
        }
    }
}

/// The control-plane endpoint kprov makes (`spec.controlPlane.loadBalancer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancerKind {
    /// A ZStack VIP with a load balancer and a TCP listener whose backends are the control
    /// planes' NICs.
    Zstack,
    /// An AWS network load balancer with a target group of the control planes.
    Aws,
    /// kube-vip as a static pod on every control plane, holding a VIP on the cluster's L2
    /// network by ARP (libvirt: outside the DHCP range kprov configures).
    #[serde(rename = "kube-vip")]
    KubeVip,
    /// None: nodes join the first control plane's address (or `endpoint`).
    None,
}

impl LoadBalancerKind {
    /// Name as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancerKind::Zstack => "zstack",
            LoadBalancerKind::Aws => "aws",
            LoadBalancerKind::KubeVip => "kube-vip",
            LoadBalancerKind::None => "none",
        }
    }

    /// The provider this load balancer belongs to, if any. kube-vip needs a VIP that moves by
    /// ARP inside one L2 segment, which only libvirt's networks give kprov (ZStack and AWS
    /// networks drop traffic to addresses they did not assign).
    pub fn provider(self) -> Option<&'static str> {
        match self {
            LoadBalancerKind::Zstack => Some("zstack"),
            LoadBalancerKind::Aws => Some("aws"),
            LoadBalancerKind::KubeVip => Some("libvirt"),
            LoadBalancerKind::None => None,
        }
    }

    /// Static pods on the control planes hold the endpoint (nothing in the cloud forwards).
    pub fn is_static_pod(self) -> bool {
        self == LoadBalancerKind::KubeVip
    }
}

fn default_api_port() -> u16 {
    6443
}

/// Where nodes fetch container images and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Assets {
    /// Registry mirror (`host[:port][/prefix]`) that holds every image the cluster needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<String>,
    /// Base URL of a file repository holding Kubernetes binaries (`https://…`, `http://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_repository: Option<String>,
    /// A named mapping preset, e.g. `aliyun` (`registry.aliyuncs.com/google_containers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Per-upstream overrides: upstream registry host → mirror location.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mappings: BTreeMap<String, String>,
    /// PEM CA bundle nodes trust for the mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The mirrors speak plain HTTP (only for registries on trusted networks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Where nodes install OS packages from (conntrack, socat, ethtool, …) when the image's own
    /// repositories are out of reach: written into cloud-init's `apt` / `yum_repos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_repository: Option<PackageRepository>,
}

/// A reachable mirror of the distribution's packages; give the kind(s) your images use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageRepository {
    /// An APT repository, for Debian and Ubuntu images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt: Option<AptRepository>,
    /// A yum/dnf repository, for openEuler, CentOS, Rocky and Kylin-style images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yum: Option<YumRepository>,
}

/// One APT source (`deb URL SUITE COMPONENTS…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AptRepository {
    /// Base URL (`http://mirror.example/debian`).
    pub url: String,
    /// Suite (`bookworm`, `jammy`).
    pub suite: String,
    /// Components (default `main`).
    #[serde(default = "default_apt_components")]
    pub components: Vec<String>,
    /// ASCII-armored signing key; without it the source is marked `trusted=yes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Keep the image's own sources (default: replaced, since they are out of reach).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_default_sources: bool,
}

fn default_apt_components() -> Vec<String> {
    vec!["main".to_string()]
}

/// One yum/dnf repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct YumRepository {
    /// `baseurl` of the repository.
    pub baseurl: String,
    /// URL of the signing key; without it `gpgcheck` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpgkey: Option<String>,
}

/// Optional add-ons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Addons {
    /// Kubernetes dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<Dashboard>,
    /// MetalLB (L2 mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metallb: Option<MetalLb>,
    /// NFS subdir external provisioner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_provisioner: Option<NfsProvisioner>,
    /// NVIDIA device plugin (defaulted on when any instance group has GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvidia_device_plugin: Option<NvidiaDevicePlugin>,
}

/// Dashboard settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dashboard {
    /// NodePort of the dashboard service (30000–32767).
    #[serde(default = "default_dashboard_port")]
    pub node_port: u16,
    /// Service account access: `readonly` (least privilege, default) or `admin`.
    #[serde(default)]
    pub access: DashboardAccess,
}

fn default_dashboard_port() -> u16 {
    30090
}

/// Dashboard service account privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DashboardAccess {
    /// View-only.
    #[default]
    Readonly,
    /// cluster-admin.
    Admin,
}

/// MetalLB settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetalLb {
    /// Address pools.
    pub address_pools: Vec<AddressPool>,
}

/// A MetalLB address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddressPool {
    /// Pool name.
    pub name: String,
    /// CIDRs or `first-last` ranges.
    pub addresses: Vec<String>,
}

/// NFS provisioner settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NfsProvisioner {
    /// NFS server host.
    pub server: String,
    /// Exported path.
    pub path: String,
    /// StorageClass name.
    #[serde(default = "default_nfs_class")]
    pub storage_class: String,
    /// Make it the default StorageClass.
    #[serde(default)]
    pub default_class: bool,
}

fn default_nfs_class() -> String {
    "nfs-client".into()
}

/// NVIDIA device plugin settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NvidiaDevicePlugin {
    /// Deploy it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// etcd settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdSpec {
    /// Snapshots kept in the state store (`kprov backup etcd`, and the one a rolling update of
    /// control planes takes first).
    #[serde(default)]
    pub backups: EtcdBackups,
}

impl EtcdSpec {
    fn is_default(&self) -> bool {
        *self == EtcdSpec::default()
    }
}

/// Retention of etcd snapshots in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdBackups {
    /// How many to keep: the oldest beyond this are removed after each new one (at least 1).
    #[serde(default = "default_backups_keep")]
    pub keep: u32,
}

fn default_backups_keep() -> u32 {
    10
}

impl Default for EtcdBackups {
    fn default() -> Self {
        EtcdBackups {
            keep: default_backups_keep(),
        }
    }
}

/// Bootstrap settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Lifetime of the kubeadm bootstrap token (e.g. `24h`); must cover the whole create.
    #[serde(default = "default_token_ttl", rename = "tokenTTL")]
    pub token_ttl: String,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        BootstrapSpec {
            token_ttl: default_token_ttl(),
        }
    }
}

fn default_token_ttl() -> String {
    "24h".into()
}

/// A `kind: InstanceGroup` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceGroup {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be `InstanceGroup`.
    pub kind: String,
    /// Metadata; `labels["kprov.io/cluster"]` names the cluster.
    pub metadata: Metadata,
    /// The spec.
    pub spec: InstanceGroupSpec,
}

/// Label on an InstanceGroup naming its cluster.
pub const LABEL_CLUSTER: &str = "kprov.io/cluster";

impl InstanceGroup {
    /// The IG's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

/// A set of identical machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceGroupSpec {
    /// `control-plane` or `node`.
    pub role: Role,
    /// Number of instances (signed so that a negative count gets a clear message).
    pub count: i64,
    /// CPU architecture.
    #[serde(default = "default_arch")]
    pub arch: Arch,
    /// Explicit size (vCPU + memory); exclusive with `flavor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Provider flavor / instance offering / instance type; exclusive with `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Image name or id (default: the provider's default for the arch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Root disk size, e.g. `40Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<String>,
    /// GPUs per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Kubernetes node labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes node taints, `key[=value]:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    /// How `rolling-update` replaces this group's instances (kops' `rollingUpdate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// `maxSurge` / `maxUnavailable` of a group's rolling update, each an instance count (`2`) or
/// a percentage of the group's count (`"25%"`), with kops' semantics: surge rounds up,
/// unavailable rounds down. Default: maxSurge 1, maxUnavailable 0 (every provider kprov drives
/// can create an extra instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Extra instances made before old ones go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Instances that may be down at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// An instance count or a percentage (`"25%"`) of a group's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// An instance count.
    Int(i64),
    /// A percentage, written `"N%"` (or a count as a string, `"2"`).
    Str(String),
}

impl IntOrPercent {
    /// The count for a group of `count` instances (`round_up`: surge; else down), or why the
    /// value is not a count or a percentage from 0% to 100%.
    pub fn resolve(&self, count: u32, round_up: bool) -> Result<u32, String> {
        match self {
            IntOrPercent::Int(n) if *n < 0 => Err(format!("{n} is negative")),
            IntOrPercent::Int(n) => Ok(u32::try_from(*n).unwrap_or(u32::MAX)),
            IntOrPercent::Str(s) => match s.strip_suffix('%') {
                Some(p) => {
                    let p: u64 = p
                        .trim()
                        .parse()
                        .map_err(|_| format!("{s:?} is not a percentage like \"25%\""))?;
                    if p > 100 {
                        return Err(format!("{s} is over 100%"));
                    }
                    let scaled = u64::from(count) * p;
                    let n = if round_up {
                        scaled.div_ceil(100)
                    } else {
                        scaled / 100
                    };
                    Ok(n as u32)
                }
                None => s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a count (2) or a percentage (\"25%\")")),
            },
        }
    }
}

fn default_arch() -> Arch {
    Arch::Amd64
}

/// Explicit machine size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Size {
    /// vCPUs.
    pub cpu: u32,
    /// Memory, e.g. `8Gi`.
    pub memory: String,
}

/// GPUs per instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gpu {
    /// Devices per instance.
    pub count: u32,
    /// Vendor filter (e.g. `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Model filter (e.g. `A100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `passthrough` (default) or `mdev`.
    #[serde(default)]
    pub mode: GpuMode,
}

/// A cluster with its instance groups: the unit kprov stores and applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The cluster.
    pub cluster: Cluster,
    /// Its instance groups, sorted by name.
    pub groups: Vec<InstanceGroup>,
}

impl ClusterConfig {
    /// Cluster name.
    pub fn name(&self) -> &str {
        &self.cluster.metadata.name
    }

    /// How many control planes the instance groups ask for.
    pub fn control_plane_count(&self) -> i64 {
        self.groups
            .iter()
            .filter(|g| g.spec.role == Role::ControlPlane)
            .map(|g| g.spec.count.max(0))
            .sum()
    }

    /// The load balancer kprov makes in front of the control planes, if any: the spec's
    /// `controlPlane.loadBalancer`, else (no `endpoint` and several control planes) the
    /// provider's own (ZStack's VIP + load balancer, AWS's NLB, kube-vip on libvirt).
    pub fn api_load_balancer(&self) -> Option<LoadBalancerKind> {
        let cp = &self.cluster.spec.control_plane;
        let kind = match cp.load_balancer {
            Some(k) => k,
            None if cp.endpoint.is_some() || self.control_plane_count() < 2 => return None,
            None => match self.cluster.spec.provider {
                ProviderSpec::Zstack(_) => LoadBalancerKind::Zstack,
                ProviderSpec::Aws(_) => LoadBalancerKind::Aws,
                ProviderSpec::Libvirt(_) => LoadBalancerKind::KubeVip,
            },
        };
        (kind != LoadBalancerKind::None).then_some(kind)
    }

    /// Every architecture used by an instance group, sorted.
    pub fn arches(&self) -> Vec<Arch> {
        let mut a: Vec<Arch> = self.groups.iter().map(|g| g.spec.arch).collect();
        a.sort();
        a.dedup();
        a
    }

    /// Render all documents as one multi-document YAML stream (cluster first).
    pub fn to_yaml(&self) -> String {
        let mut out = serde_yaml::to_string(&self.cluster).expect("spec serialises");
        for g in &self.groups {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(g).expect("spec serialises"));
        }
        out
    }
}
