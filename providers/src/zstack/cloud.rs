//! [`ZStackCloud`]: the [`Cloud`] implementation for ZStack.
//!
//! Mapping (details in `docs/providers/zstack.md`):
//! * an instance is a VM whose uuid is [`InstanceRequest::id`] (`resourceUuid` at creation);
//! * kprov tags are user tags `kprov::<key>::<value>` ([`super::tags`]);
//! * user-data is the system tag `userdata::<base64>`, the hostname `hostname::<name>`;
//! * GPUs are `pciDevice::<uuid>` system tags (devices picked on one host, `hostUuid` set) or
//!   spec tags, per [`GpuAttach`];
//! * the network is a pre-existing L3 network, never created or deleted by kprov.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    Arch, Cloud, CloudError, CloudResult, FlavorInfo, GpuInfo, GpuMode, GpuRequest, ImageInfo,
    Instance, InstanceRequest, Inventory, MachineSize, Network, NetworkRequest, PlanProblem,
    Resource, ResourceKind, Role,
};

use super::client::{ApiStats, Client};
use super::config::{GpuAttach, ZStackConfig};
use super::errors::{code_chain, is_code, parse_error};
use super::model::{
    Cluster, Host, Image, InstanceOffering, L3Network, MdevDevice, MdevDeviceSpec, PciDevice,
    PciDeviceSpec, Tag, VmInstance, Zone,
};
use super::query::{encode_segment, Query};
use super::tags::{
    cluster_tag, decode_user_tag, encode_user_tags, sanitize_hostname, USER_TAG_PREFIX,
};
use super::PROVIDER;

/// How long discovered infrastructure (zones, clusters, hosts, images, offerings, L3s, specs) is
/// reused by `create_instance` before it is read again. `discover` and `check` always read it.
const INFRA_TTL: Duration = Duration::from_secs(60);

/// How many uuids go into one `q=resourceUuid?=...` condition (keeps URLs well under 8 KiB).
const UUID_BATCH: usize = 100;

/// Smallest shapes kprov accepts (kubeadm's preflight wants 2 vCPU / 1700 MiB on control planes).
const MIN_CONTROL_PLANE: (u32, u64) = (2, 1700);
/// Smallest worker shape.
const MIN_NODE: (u32, u64) = (1, 1024);

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// VM states that mean "being deleted or deleted".
fn is_gone_state(state: &str) -> bool {
    matches!(state, "Destroyed" | "Expunging")
}

fn fatal(code: &str, message: impl Into<String>, fix: impl Into<String>) -> CloudError {
    CloudError::Fatal {
        provider: PROVIDER,
        code: code.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

fn arch_of(s: Option<&str>) -> Option<Arch> {
    s.and_then(Arch::parse)
}

fn enabled(state: Option<&str>) -> bool {
    !matches!(state, Some("Disabled"))
}

/// Infrastructure as read from the management node (filtered to the configured zone).
#[derive(Debug, Clone, Default)]
struct Infra {
    zones: Vec<Zone>,
    clusters: Vec<Cluster>,
    hosts: Vec<Host>,
    images: Vec<Image>,
    offerings: Vec<InstanceOffering>,
    l3s: Vec<L3Network>,
    pci_specs: Vec<PciDeviceSpec>,
    mdev_specs: Vec<MdevDeviceSpec>,
}

/// A GPU (whole PCI device or mdev slice) as kprov reasons about it.
#[derive(Debug, Clone)]
struct GpuDev {
    uuid: String,
    host: String,
    cluster: Option<String>,
    arch: Option<Arch>,
    vendor: String,
    model: String,
    spec: Option<String>,
    attached_to: Option<String>,
    free: bool,
    mdev: bool,
    /// A whole device split into mdev / SR-IOV slices (not usable for passthrough).
    split: bool,
}

impl GpuDev {
    fn matches(&self, req: &GpuRequest) -> bool {
        GpuInfo {
            id: self.uuid.clone(),
            vendor: self.vendor.clone(),
            model: self.model.clone(),
            host: self.host.clone(),
            arch: self.arch,
            attached_to: None,
        }
        .matches(req)
    }
}

fn gpu_filter_text(g: &GpuRequest) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &g.vendor {
        parts.push(format!("vendor~{v}"));
    }
    if let Some(m) = &g.model {
        parts.push(format!("model~{m}"));
    }
    let mode = match g.mode {
        GpuMode::Passthrough => "passthrough",
        GpuMode::Mdev => "mdev",
    };
    if parts.is_empty() {
        format!("any GPU ({mode})")
    } else {
        format!("GPU {} ({mode})", parts.join(" "))
    }
}

impl Infra {
    fn cluster(&self, uuid: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.uuid == uuid)
    }

    fn host(&self, uuid: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.uuid == uuid)
    }

    fn host_name(&self, uuid: &str) -> String {
        self.host(uuid)
            .map(|h| {
                if h.name.is_empty() {
                    h.uuid.clone()
                } else {
                    h.name.clone()
                }
            })
            .unwrap_or_else(|| uuid.to_string())
    }

    fn host_arch(&self, h: &Host) -> Option<Arch> {
        arch_of(h.architecture.as_deref()).or_else(|| {
            h.cluster_uuid
                .as_deref()
                .and_then(|c| self.cluster(c))
                .and_then(|c| arch_of(c.architecture.as_deref()))
        })
    }

    fn usable_clusters(&self, arch: Arch, zone: Option<&str>) -> Vec<&Cluster> {
        let mut v: Vec<&Cluster> = self
            .clusters
            .iter()
            .filter(|c| enabled(c.state.as_deref()))
            .filter(|c| arch_of(c.architecture.as_deref()) == Some(arch))
            .filter(|c| zone.is_none() || c.zone_uuid.is_none() || c.zone_uuid.as_deref() == zone)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        v
    }

    fn usable_hosts(&self, arch: Arch, zone: Option<&str>) -> Vec<&Host> {
        let clusters: HashSet<&str> = self
            .usable_clusters(arch, zone)
            .iter()
            .map(|c| c.uuid.as_str())
            .collect();
        let mut v: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| {
                h.cluster_uuid
                    .as_deref()
                    .is_some_and(|c| clusters.contains(c))
            })
            .filter(|h| matches!(h.state.as_deref(), None | Some("Enabled")))
            .filter(|h| matches!(h.status.as_deref(), None | Some("Connected")))
            .filter(|h| self.host_arch(h).is_none_or(|a| a == arch))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        v
    }

    fn cluster_summary(&self) -> String {
        if self.clusters.is_empty() {
            return "there are no clusters".into();
        }
        let list = self
            .clusters
            .iter()
            .map(|c| {
                format!(
                    "{} ({})",
                    c.name,
                    c.architecture.as_deref().unwrap_or("unknown arch")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("clusters: {list}")
    }

    fn usable_images(&self) -> Vec<&Image> {
        let mut v: Vec<&Image> = self.images.iter().filter(|i| i.usable()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        v
    }

    fn image_summary(&self) -> String {
        let mut by_arch: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for i in self.usable_images() {
            let arch = arch_of(i.architecture.as_deref())
                .map(|a| a.to_string())
                .unwrap_or_else(|| {
                    i.architecture
                        .clone()
                        .unwrap_or_else(|| "unknown arch".into())
                });
            by_arch.entry(arch).or_default().push(&i.name);
        }
        if by_arch.is_empty() {
            return "there is no Ready root-volume image at all".into();
        }
        let list = by_arch
            .iter()
            .map(|(a, names)| format!("{a}: {}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        format!("Ready images exist for {list}")
    }

    /// The image for a request: by uuid or name when given, else the first Ready image of the
    /// arch by name.
    fn image_for(&self, req: &InstanceRequest) -> Result<&Image, (String, String)> {
        let arch = req.arch;
        match req.image.as_deref() {
            Some(wanted) => {
                let found: Vec<&Image> = self.images.iter().filter(|i| i.uuid == wanted || i.name == wanted).collect();
                let Some(img) = found.iter().find(|i| i.usable()).copied().or(found.first().copied()) else {
                    return Err((
                        format!("image `{wanted}` does not exist; {}", self.image_summary()),
                        "set `image:` to one of those names, or add the image to ZStack".into(),
                    ));
                };
                if !img.usable() {
                    return Err((
                        format!(
                            "image `{wanted}` is not a Ready root-volume template (status {}, media type {}, state {})",
                            img.status.as_deref().unwrap_or("?"),
                            img.media_type.as_deref().unwrap_or("?"),
                            img.state.as_deref().unwrap_or("?")
                        ),
                        "wait for the image to finish downloading or pick another one".into(),
                    ));
                }
                match arch_of(img.architecture.as_deref()) {
                    Some(a) if a != arch => Err((
                        format!("image `{wanted}` is {} but the instance group is {arch}", a),
                        format!("use an {} image or change the group's arch", arch.machine()),
                    )),
                    _ => Ok(img),
                }
            }
            None => self
                .usable_images()
                .into_iter()
                .find(|i| arch_of(i.architecture.as_deref()) == Some(arch))
                .ok_or_else(|| {
                    (
                        format!("no Ready {arch} ({}) image; {}", arch.machine(), self.image_summary()),
                        format!(
                            "add an {} qcow2 root-volume image to ZStack (architecture={}), or set `image:` / `arch:` for the group",
                            arch.machine(),
                            arch.machine()
                        ),
                    )
                }),
        }
    }

    fn offering_summary(&self) -> String {
        let mut v: Vec<&InstanceOffering> = self
            .offerings
            .iter()
            .filter(|o| enabled(o.state.as_deref()))
            .collect();
        v.sort_by(|a, b| {
            (a.cpu_num, a.memory_size, &a.name).cmp(&(b.cpu_num, b.memory_size, &b.name))
        });
        if v.is_empty() {
            return "there are no instance offerings".into();
        }
        let list = v
            .iter()
            .map(|o| {
                format!(
                    "{} ({} vCPU, {} MiB)",
                    o.name,
                    o.cpu_num,
                    o.memory_size / MIB
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("available offerings: {list}")
    }

    /// `(offering uuid, cpus, memory MiB)` of a request.
    fn size_for(
        &self,
        req: &InstanceRequest,
    ) -> Result<(Option<String>, u32, u64), (String, String)> {
        let (offering, cpus, mem) = match &req.size {
            MachineSize::Shape { cpus, memory_mib } => (None, *cpus, *memory_mib),
            MachineSize::Flavor(name) => {
                let o = self
                    .offerings
                    .iter()
                    .filter(|o| enabled(o.state.as_deref()))
                    .find(|o| &o.uuid == name || &o.name == name)
                    .ok_or_else(|| {
                        (
                            format!(
                                "instance offering `{name}` not found; {}",
                                self.offering_summary()
                            ),
                            "use one of those offerings, or a cpus/memory shape".to_string(),
                        )
                    })?;
                (Some(o.uuid.clone()), o.cpu_num, o.memory_size / MIB)
            }
        };
        let (min_cpu, min_mem) = match req.role {
            Role::ControlPlane => MIN_CONTROL_PLANE,
            Role::Node => MIN_NODE,
        };
        if cpus < min_cpu || mem < min_mem {
            let what = match &req.size {
                MachineSize::Flavor(n) => format!("instance offering `{n}`"),
                MachineSize::Shape { .. } => "the requested shape".into(),
            };
            let bigger = match &req.size {
                MachineSize::Flavor(_) => format!("; {}", self.offering_summary()),
                MachineSize::Shape { .. } => String::new(),
            };
            return Err((
                format!(
                    "{what} ({cpus} vCPU, {mem} MiB) is too small for a {} (at least {min_cpu} vCPU and {min_mem} MiB){bigger}",
                    req.role
                ),
                "pick a bigger size".into(),
            ));
        }
        Ok((offering, cpus, mem))
    }

    fn l3_summary(&self) -> String {
        if self.l3s.is_empty() {
            return "there are no L3 networks".into();
        }
        self.l3s
            .iter()
            .map(|l| {
                format!(
                    "{} ({}{})",
                    l.name,
                    l.uuid,
                    if l.has_userdata() {
                        ", Userdata"
                    } else {
                        ", no Userdata"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The L3 network: the configured one (name or uuid), else the first non-system one with
    /// the Userdata service.
    fn l3_for(&self, wanted: Option<&str>) -> Result<&L3Network, (String, String)> {
        match wanted {
            Some(w) => {
                let l3 = self
                    .l3s
                    .iter()
                    .find(|l| l.uuid == w || l.name == w)
                    .ok_or_else(|| {
                        (
                            format!(
                                "L3 network `{w}` not found; L3 networks: {}",
                                self.l3_summary()
                            ),
                            "set the ZStack L3 network to one of those (name or uuid)".to_string(),
                        )
                    })?;
                if !l3.has_userdata() {
                    return Err((
                        format!("L3 network `{}` has no Userdata network service, so VMs would not receive their cloud-config", l3.name),
                        "enable the Userdata service (flat network provider) on it, or pick an L3 network that has it".into(),
                    ));
                }
                Ok(l3)
            }
            None => {
                let mut v: Vec<&L3Network> = self
                    .l3s
                    .iter()
                    .filter(|l| l.system != Some(true) && l.category.as_deref() != Some("System"))
                    .filter(|l| enabled(l.state.as_deref()) && l.has_userdata())
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
                v.first().copied().ok_or_else(|| {
                    (
                        format!(
                            "no L3 network with the Userdata network service; L3 networks: {}",
                            self.l3_summary()
                        ),
                        "enable the Userdata service on a flat L3 network, or name one explicitly"
                            .into(),
                    )
                })
            }
        }
    }

    /// Whether one instance of `cpus`/`mem_mib` fits on a host; `None` when hosts do not report
    /// capacity.
    fn fits_somewhere(
        &self,
        hosts: &[&Host],
        cpus: u32,
        mem_mib: u64,
    ) -> Option<Result<(), String>> {
        let known: Vec<(&Host, i64, i64)> = hosts
            .iter()
            .filter_map(|h| {
                let cpu = h.available_cpu_capacity.or(h.total_cpu_capacity)?;
                let mem = h.available_memory_capacity.or(h.total_memory_capacity)?;
                Some((*h, cpu, mem))
            })
            .collect();
        if known.is_empty() {
            return None;
        }
        let need_mem = (mem_mib * MIB) as i64;
        if known
            .iter()
            .any(|(_, c, m)| *c >= cpus as i64 && *m >= need_mem)
        {
            return Some(Ok(()));
        }
        let best = known
            .iter()
            .max_by_key(|(_, c, m)| (*m, *c))
            .expect("non-empty");
        Some(Err(format!(
            "largest free host is {} with {} vCPU / {} MiB",
            if best.0.name.is_empty() {
                &best.0.uuid
            } else {
                &best.0.name
            },
            best.1,
            best.2.max(0) as u64 / MIB
        )))
    }
}

/// How long a device stays claimed after the create that took it finished: a device list read
/// while that create was running may still show the device as free.
const CLAIM_HOLD: Duration = Duration::from_secs(60);

/// GPU devices claimed by creates of this process: device uuid → (VM uuid, `None` while the
/// create runs, `Some(finish time)` after it succeeded).
type Claims = HashMap<String, (String, Option<Instant>)>;

fn is_claimed(claims: &Claims, device: &str) -> bool {
    claims
        .get(device)
        .is_some_and(|(_, done)| done.is_none_or(|t| t.elapsed() < CLAIM_HOLD))
}

/// The devices one in-flight create claimed. Dropped without [`Reservation::commit`] (the
/// create failed) the claims are released; committed, they are held for [`CLAIM_HOLD`].
struct Reservation<'a> {
    claims: &'a std::sync::Mutex<Claims>,
    ids: Vec<String>,
    committed: bool,
}

impl Reservation<'_> {
    fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut claims = self.claims.lock().expect("claims lock");
        for id in &self.ids {
            if self.committed {
                if let Some(c) = claims.get_mut(id) {
                    c.1 = Some(Instant::now());
                }
            } else {
                claims.remove(id);
            }
        }
        claims.retain(|_, (_, done)| done.is_none_or(|t| t.elapsed() < CLAIM_HOLD));
    }
}

/// Where and how one VM is created.
struct Placement {
    image: String,
    offering: Option<String>,
    cpus: u32,
    mem_mib: u64,
    l3: String,
    cluster: String,
    host: Option<String>,
    gpu_tags: Vec<String>,
}

/// Result of choosing GPUs for one instance.
enum GpuChoice {
    /// Device uuids on one host.
    Devices {
        host: String,
        cluster: Option<String>,
        devices: Vec<String>,
    },
    /// A spec tag; ZStack chooses the devices in `cluster`.
    Spec {
        tag: String,
        cluster: Option<String>,
    },
}

/// A ZStack management node as a [`Cloud`].
pub struct ZStackCloud {
    client: Client,
    config: ZStackConfig,
    infra: tokio::sync::Mutex<Option<(Instant, Arc<Infra>)>>,
    claims: std::sync::Mutex<Claims>,
}

impl std::fmt::Debug for ZStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZStackCloud")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ZStackCloud {
    /// An adapter for the management node in `config`. Nothing is sent until the first call.
    pub fn new(config: ZStackConfig) -> CloudResult<Self> {
        let client = Client::new(&config)?;
        Ok(ZStackCloud {
            client,
            config,
            infra: tokio::sync::Mutex::new(None),
            claims: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ZStackConfig {
        &self.config
    }

    /// Counters of HTTP calls made so far.
    pub fn stats(&self) -> ApiStats {
        self.client.stats()
    }

    async fn query_optional<T: serde::de::DeserializeOwned>(
        &self,
        q: Query,
    ) -> CloudResult<Vec<T>> {
        match self.client.query(q.clone()).await {
            Err(e) if is_code(&e, "HTTP404") => {
                tracing::debug!(path = %q.path, "API not available on this management node; treating as empty");
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn load_infra(&self) -> CloudResult<Arc<Infra>> {
        let c = &self.client;
        let (zones, clusters, hosts, images, offerings, l3s, pci_specs, mdev_specs) = futures::try_join!(
            c.query::<Zone>(Query::new("/zones")),
            c.query::<Cluster>(Query::new("/clusters")),
            c.query::<Host>(Query::new("/hosts")),
            c.query::<Image>(Query::new("/images")),
            c.query::<InstanceOffering>(Query::new("/instance-offerings")),
            c.query::<L3Network>(Query::new("/l3-networks")),
            self.query_optional::<PciDeviceSpec>(Query::new("/pci-device-specs")),
            self.query_optional::<MdevDeviceSpec>(Query::new("/mdev-device-specs")),
        )?;
        let mut infra = Infra {
            zones,
            clusters,
            hosts,
            images,
            offerings: offerings
                .into_iter()
                .filter(|o| o.kind.as_deref().is_none_or(|t| t == "UserVm"))
                .collect(),
            l3s,
            pci_specs,
            mdev_specs,
        };
        if let Some(z) = self.config.zone.as_deref() {
            let zone = infra
                .zones
                .iter()
                .find(|x| x.uuid == z || x.name == z)
                .cloned()
                .ok_or_else(|| {
                    fatal(
                        "NoZone",
                        format!(
                            "zone `{z}` not found; zones: {}",
                            infra
                                .zones
                                .iter()
                                .map(|x| x.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        "set the ZStack zone to one of those (name or uuid), or leave it unset",
                    )
                })?;
            let in_zone = |u: &Option<String>| u.as_deref().is_none_or(|u| u == zone.uuid);
            infra.clusters.retain(|c| in_zone(&c.zone_uuid));
            infra.hosts.retain(|h| in_zone(&h.zone_uuid));
            infra.l3s.retain(|l| in_zone(&l.zone_uuid));
        }
        Ok(Arc::new(infra))
    }

    /// Infrastructure, read fresh (`fresh`) or from a cache younger than [`INFRA_TTL`].
    async fn infra(&self, fresh: bool) -> CloudResult<Arc<Infra>> {
        let mut slot = self.infra.lock().await;
        if !fresh {
            if let Some((at, i)) = slot.as_ref() {
                if at.elapsed() < INFRA_TTL {
                    return Ok(i.clone());
                }
            }
        }
        let i = self.load_infra().await?;
        *slot = Some((Instant::now(), i.clone()));
        Ok(i)
    }

    /// GPUs (whole devices, plus mdev slices when `with_mdev`).
    async fn load_gpus(&self, infra: &Infra, with_mdev: bool) -> CloudResult<Vec<GpuDev>> {
        let pci: Vec<PciDevice> = self
            .query_optional(Query::new("/pci-device/pci-devices"))
            .await?;
        let mdev: Vec<MdevDevice> = if with_mdev {
            self.query_optional(Query::new("/mdev-devices")).await?
        } else {
            Vec::new()
        };
        let host_info = |h: Option<&str>| {
            let host = h.unwrap_or_default().to_string();
            let hv = infra.host(&host);
            (
                hv.and_then(|h| h.cluster_uuid.clone()),
                hv.and_then(|h| infra.host_arch(h)),
            )
        };
        let mut out = Vec::new();
        for d in pci.iter().filter(|d| d.is_gpu()) {
            let (cluster, arch) = host_info(d.host_uuid.as_deref());
            if d.host_uuid.is_some()
                && infra
                    .host(d.host_uuid.as_deref().unwrap_or_default())
                    .is_none()
            {
                continue; // a host outside the configured zone
            }
            out.push(GpuDev {
                uuid: d.uuid.clone(),
                host: d.host_uuid.clone().unwrap_or_default(),
                cluster,
                arch,
                vendor: d.vendor.clone().unwrap_or_default(),
                model: d.model(),
                spec: d.pci_spec_uuid.clone(),
                attached_to: d.vm_instance_uuid.clone().filter(|s| !s.is_empty()),
                free: d.is_free(),
                mdev: false,
                split: d
                    .virt_status
                    .as_deref()
                    .is_some_and(|v| v.ends_with("_VIRTUALIZED")),
            });
        }
        for m in &mdev {
            let parent = m
                .parent_uuid
                .as_deref()
                .and_then(|p| pci.iter().find(|d| d.uuid == p));
            let host = m
                .host_uuid
                .clone()
                .or_else(|| parent.and_then(|p| p.host_uuid.clone()))
                .unwrap_or_default();
            if infra.host(&host).is_none() {
                continue;
            }
            let (cluster, arch) = host_info(Some(&host));
            let spec = m
                .mdev_spec_uuid
                .as_deref()
                .and_then(|s| infra.mdev_specs.iter().find(|x| x.uuid == s));
            let profile = spec
                .and_then(|s| s.name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| m.name.clone())
                .unwrap_or_default();
            let model = match parent.map(|p| p.model()).filter(|p| !p.is_empty()) {
                Some(p) => format!("{profile} (mdev of {p})"),
                None => profile,
            };
            out.push(GpuDev {
                uuid: m.uuid.clone(),
                host,
                cluster,
                arch,
                vendor: parent.and_then(|p| p.vendor.clone()).unwrap_or_default(),
                model: if model.is_empty() {
                    m.name.clone().unwrap_or_default()
                } else {
                    model
                },
                spec: m.mdev_spec_uuid.clone(),
                attached_to: m.vm_instance_uuid.clone().filter(|s| !s.is_empty()),
                free: m.is_free(),
                mdev: true,
                split: false,
            });
        }
        Ok(out)
    }

    async fn get_vm(&self, uuid: &str) -> CloudResult<Option<VmInstance>> {
        let v = self
            .client
            .get(
                &format!("/vm-instances/{}", encode_segment(uuid)),
                "QueryVmInstance",
            )
            .await?;
        let first = v
            .get("inventories")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned();
        match first {
            None => Ok(None),
            Some(item) => {
                serde_json::from_value(item)
                    .map(Some)
                    .map_err(|e| CloudError::Protocol {
                        provider: PROVIDER,
                        message: format!("QueryVmInstance: unexpected inventory shape: {e}"),
                    })
            }
        }
    }

    async fn vms_by_uuid(&self, ids: &[String]) -> CloudResult<Vec<VmInstance>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(UUID_BATCH) {
            out.extend(
                self.client
                    .query::<VmInstance>(Query::new("/vm-instances").is_in("uuid", chunk))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn vms_of_cluster(&self, cluster: &str) -> CloudResult<Vec<VmInstance>> {
        self.client
            .query(Query::new("/vm-instances").eq("__userTag__", cluster_tag(cluster)))
            .await
    }

    /// kprov user tags of many resources, in ⌈n/100⌉ queries.
    async fn user_tags_of(&self, uuids: &[String]) -> CloudResult<Vec<Tag>> {
        let mut out = Vec::new();
        for chunk in uuids.chunks(UUID_BATCH) {
            let tags: Vec<Tag> = self
                .client
                .query(Query::new("/user-tags").is_in("resourceUuid", chunk))
                .await?;
            out.extend(
                tags.into_iter()
                    .filter(|t| t.tag.starts_with(USER_TAG_PREFIX)),
            );
        }
        Ok(out)
    }

    fn tag_map(tags: &[Tag]) -> HashMap<String, BTreeMap<String, String>> {
        let mut m: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for t in tags {
            if let Some((k, v)) = decode_user_tag(&t.tag) {
                m.entry(t.resource_uuid.clone()).or_default().insert(k, v);
            }
        }
        m
    }

    fn to_instance(vm: &VmInstance, tags: BTreeMap<String, String>) -> Instance {
        Instance {
            id: vm.uuid.clone(),
            name: vm.name.clone(),
            state: vm.state().to_string(),
            address: vm.address(),
            tags,
        }
    }

    async fn expunge(&self, uuid: &str) -> CloudResult<()> {
        let r = self
            .client
            .call(
                Method::PUT,
                &format!("/vm-instances/{}/actions", encode_segment(uuid)),
                Some(json!({ "expungeVmInstance": {} })),
                "ExpungeVmInstance",
                true,
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => match self.get_vm(uuid).await {
                Ok(None) => Ok(()),
                Ok(Some(vm)) if vm.state() == "Expunging" => self.wait_gone(uuid).await,
                _ => Err(e),
            },
        }
    }

    async fn wait_gone(&self, uuid: &str) -> CloudResult<()> {
        let deadline = Instant::now() + self.client.job_timeout();
        let mut attempt = 0;
        while Instant::now() < deadline {
            if self.get_vm(uuid).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(self.client.backoff(attempt)).await;
            attempt += 1;
        }
        Err(CloudError::Timeout {
            provider: PROVIDER,
            what: format!("expunging VM {uuid}"),
            after: self.client.job_timeout(),
        })
    }

    /// Choose GPUs for one instance among `devs` (already filtered to free, matching, right
    /// arch, not claimed).
    fn choose_gpus(&self, infra: &Infra, gpu: &GpuRequest, devs: &[&GpuDev]) -> Option<GpuChoice> {
        let count = gpu.count as usize;
        let mdev = gpu.mode == GpuMode::Mdev;
        match self.config.gpu_attach {
            GpuAttach::PciDeviceTags => {
                let mut by_host: BTreeMap<&str, Vec<&GpuDev>> = BTreeMap::new();
                for d in devs {
                    by_host.entry(d.host.as_str()).or_default().push(d);
                }
                // Spread: the host with the most matching free devices. GPU workers are big, and
                // concurrent creates cannot see each other's CPU/memory use in the cached host
                // capacities, so packing them onto one host overcommits it.
                let (host, list) = by_host
                    .into_iter()
                    .filter(|(_, l)| l.len() >= count)
                    .max_by_key(|(h, l)| (l.len(), std::cmp::Reverse(infra.host_name(h))))?;
                let mut list = list;
                list.sort_by(|a, b| a.uuid.cmp(&b.uuid));
                Some(GpuChoice::Devices {
                    host: host.to_string(),
                    cluster: list[0].cluster.clone(),
                    devices: list.iter().take(count).map(|d| d.uuid.clone()).collect(),
                })
            }
            GpuAttach::SpecTags => {
                // group free matching devices by spec and host
                let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
                for d in devs {
                    let spec = d.spec.clone().or_else(|| {
                        if mdev {
                            None
                        } else {
                            infra
                                .pci_specs
                                .iter()
                                .find(|s| {
                                    let v = s.vendor.clone().unwrap_or_default();
                                    let m = s.device.clone().or(s.name.clone()).unwrap_or_default();
                                    GpuDev {
                                        vendor: v,
                                        model: m,
                                        ..(*d).clone()
                                    }
                                    .matches(gpu)
                                })
                                .map(|s| s.uuid.clone())
                        }
                    })?;
                    *per.entry((spec, d.host.clone())).or_default() += 1;
                }
                let ((spec, host), _) = per.into_iter().find(|(_, n)| *n >= count)?;
                let prefix = if mdev {
                    "mdevDeviceSpec"
                } else {
                    "pciDeviceSpec"
                };
                Some(GpuChoice::Spec {
                    tag: format!("{prefix}::{spec}::{count}"),
                    cluster: infra.host(&host).and_then(|h| h.cluster_uuid.clone()),
                })
            }
        }
    }

    /// Describe GPU supply for a request: totals, free per host, other arches.
    fn gpu_supply(
        infra: &Infra,
        devs: &[GpuDev],
        gpu: &GpuRequest,
        arch: Arch,
        taken: &HashSet<String>,
    ) -> String {
        let mdev = gpu.mode == GpuMode::Mdev;
        let matching: Vec<&GpuDev> = devs
            .iter()
            .filter(|d| d.mdev == mdev && d.matches(gpu))
            .collect();
        let here: Vec<&&GpuDev> = matching.iter().filter(|d| d.arch == Some(arch)).collect();
        let elsewhere = matching.len() - here.len();
        if matching.is_empty() {
            let mut present: BTreeMap<String, usize> = BTreeMap::new();
            for d in devs.iter().filter(|d| d.mdev == mdev) {
                *present
                    .entry(format!(
                        "{} {} on {} ({})",
                        d.vendor,
                        d.model,
                        infra.host_name(&d.host),
                        d.arch
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "unknown arch".into())
                    ))
                    .or_default() += 1;
            }
            if present.is_empty() {
                return "no GPU exists at all".into();
            }
            return format!(
                "no GPU matches; present: {}",
                present
                    .iter()
                    .map(|(k, n)| format!("{n} × {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut hosts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for d in &here {
            let e = hosts.entry(infra.host_name(&d.host)).or_default();
            e.0 += 1;
            if d.free && !taken.contains(&d.uuid) {
                e.1 += 1;
            }
        }
        let free: usize = hosts.values().map(|(_, f)| f).sum();
        let per_host = hosts
            .iter()
            .map(|(h, (t, f))| format!("{h}: {f} free of {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = format!(
            "{} matching on {arch} hosts, {free} free, {} not free{}",
            here.len(),
            here.len() - free,
            if per_host.is_empty() {
                String::new()
            } else {
                format!(" ({per_host})")
            }
        );
        if elsewhere > 0 {
            s.push_str(&format!(
                "; {elsewhere} more match on hosts of another architecture"
            ));
        }
        s
    }

    async fn place(&self, req: &InstanceRequest) -> CloudResult<(Placement, Reservation<'_>)> {
        let infra = self.infra(false).await?;
        let image = infra
            .image_for(req)
            .map_err(|(m, f)| fatal("NoImage", format!("{}: {m}", req.name), f))?;
        let (offering, cpus, mem_mib) = infra
            .size_for(req)
            .map_err(|(m, f)| fatal("BadSize", format!("{}: {m}", req.name), f))?;
        let l3 = match req.network_id.as_deref() {
            Some(id) => infra.l3_for(Some(id)),
            None => infra.l3_for(self.config.l3_network.as_deref()),
        }
        .map_err(|(m, f)| fatal("NoL3Network", m, f))?;
        let zone = l3.zone_uuid.clone();
        let clusters = infra.usable_clusters(req.arch, zone.as_deref());
        if clusters.is_empty() {
            return Err(fatal(
                "NoCluster",
                format!(
                    "{}: no enabled {} cluster in the L3 network's zone; {}",
                    req.name,
                    req.arch.machine(),
                    infra.cluster_summary()
                ),
                format!(
                    "add {} hosts in a cluster of that architecture, or change the group's arch",
                    req.arch.machine()
                ),
            ));
        }
        let hosts = infra.usable_hosts(req.arch, zone.as_deref());
        // a cluster with a host that fits, if capacities are known; else the first one
        let fitting_cluster = hosts
            .iter()
            .find(|h| {
                infra
                    .fits_somewhere(&[*h], cpus, mem_mib)
                    .is_none_or(|r| r.is_ok())
            })
            .and_then(|h| h.cluster_uuid.clone());
        let mut cluster = fitting_cluster.unwrap_or_else(|| clusters[0].uuid.clone());
        let mut host = None;
        let mut gpu_tags = Vec::new();
        let mut reservation = Reservation {
            claims: &self.claims,
            ids: Vec::new(),
            committed: false,
        };
        if let Some(gpu) = req.gpu.as_ref().filter(|g| g.count > 0) {
            let mdev = gpu.mode == GpuMode::Mdev;
            let devs = self.load_gpus(&infra, mdev).await?;
            // hosts that can also take the VM's vCPUs and memory (when they report capacity)
            let host_ok: HashSet<&str> = hosts
                .iter()
                .filter(|h| {
                    infra
                        .fits_somewhere(&[**h], cpus, mem_mib)
                        .is_none_or(|r| r.is_ok())
                })
                .map(|h| h.uuid.as_str())
                .collect();
            let mut claims = self.claims.lock().expect("claims lock");
            let candidates: Vec<&GpuDev> = devs
                .iter()
                .filter(|d| d.mdev == mdev && d.free && !is_claimed(&claims, &d.uuid))
                .filter(|d| d.arch == Some(req.arch) && host_ok.contains(d.host.as_str()))
                .filter(|d| d.matches(gpu))
                .collect();
            match self.choose_gpus(&infra, gpu, &candidates) {
                Some(GpuChoice::Devices {
                    host: h,
                    cluster: c,
                    devices,
                }) => {
                    let prefix = if mdev { "mdevDevice" } else { "pciDevice" };
                    gpu_tags.extend(devices.iter().map(|d| format!("{prefix}::{d}")));
                    for d in &devices {
                        claims.insert(d.clone(), (req.id.clone(), None));
                    }
                    reservation.ids = devices;
                    host = Some(h);
                    if let Some(c) = c {
                        cluster = c;
                    }
                }
                Some(GpuChoice::Spec { tag, cluster: c }) => {
                    gpu_tags.push(tag);
                    if let Some(c) = c {
                        cluster = c;
                    }
                }
                None => {
                    drop(claims);
                    return Err(fatal(
                        "NoFreeGpu",
                        format!(
                            "{}: needs {} × {} on one {} host; {}",
                            req.name,
                            gpu.count,
                            gpu_filter_text(gpu),
                            req.arch,
                            Self::gpu_supply(&infra, &devs, gpu, req.arch, &HashSet::new())
                        ),
                        "free or add matching GPUs, lower the GPU count, or loosen the vendor/model filter",
                    ));
                }
            }
        }
        Ok((
            Placement {
                image: image.uuid.clone(),
                offering,
                cpus,
                mem_mib,
                l3: l3.uuid.clone(),
                cluster,
                host,
                gpu_tags,
            },
            reservation,
        ))
    }

    /// The `POST /vm-instances` body of a request.
    fn create_body(req: &InstanceRequest, p: &Placement) -> Value {
        let mut params = json!({
            "name": req.name,
            "resourceUuid": req.id,
            "description": format!("kprov cluster {}, instance group {}", req.cluster, req.instance_group),
            "imageUuid": p.image,
            "l3NetworkUuids": [p.l3],
            "defaultL3NetworkUuid": p.l3,
            "clusterUuid": p.cluster,
            "strategy": "InstantStart",
        });
        let obj = params.as_object_mut().expect("object");
        match &p.offering {
            Some(o) => {
                obj.insert("instanceOfferingUuid".into(), json!(o));
            }
            None => {
                obj.insert("cpuNum".into(), json!(p.cpus));
                obj.insert("memorySize".into(), json!(p.mem_mib * MIB));
            }
        }
        if let Some(h) = &p.host {
            obj.insert("hostUuid".into(), json!(h));
        }
        if let Some(gib) = req.root_disk_gib {
            obj.insert("rootDiskSize".into(), json!(u64::from(gib) * GIB));
        }
        let mut system_tags = Vec::new();
        if !req.user_data.is_empty() {
            system_tags.push(format!(
                "userdata::{}",
                base64::engine::general_purpose::STANDARD.encode(&req.user_data)
            ));
        }
        system_tags.push(format!("hostname::{}", sanitize_hostname(&req.name)));
        system_tags.extend(p.gpu_tags.iter().cloned());
        json!({
            "params": params,
            "systemTags": system_tags,
            "userTags": encode_user_tags(&req.tags),
        })
    }

    /// Look up an existing VM for a create: `Some` to return it, `None` to (re)create.
    async fn existing_for_create(&self, req: &InstanceRequest) -> CloudResult<Option<Instance>> {
        let Some(vm) = self.get_vm(&req.id).await? else {
            return Ok(None);
        };
        match vm.state() {
            "Destroyed" => {
                tracing::info!(vm = %req.id, name = %req.name, "expunging a destroyed VM that has the instance's id before re-creating it");
                self.expunge(&req.id).await?;
                Ok(None)
            }
            "Expunging" => {
                self.wait_gone(&req.id).await?;
                Ok(None)
            }
            _ => {
                let tags = Self::tag_map(&self.user_tags_of(std::slice::from_ref(&vm.uuid)).await?)
                    .remove(&vm.uuid)
                    .unwrap_or_default();
                Ok(Some(Self::to_instance(&vm, tags)))
            }
        }
    }
}

#[async_trait]
impl Cloud for ZStackCloud {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn default_concurrency(&self) -> usize {
        self.config.concurrency.max(1)
    }

    async fn discover(&self) -> CloudResult<Inventory> {
        let infra = self.infra(true).await?;
        let gpus = self.load_gpus(&infra, true).await?;
        let mut zones: Vec<String> = infra.zones.iter().map(|z| z.name.clone()).collect();
        zones.sort();
        let arches: BTreeSet<Arch> = infra
            .clusters
            .iter()
            .filter(|c| enabled(c.state.as_deref()))
            .filter_map(|c| arch_of(c.architecture.as_deref()))
            .collect();
        let images = infra
            .usable_images()
            .into_iter()
            .map(|i| ImageInfo {
                id: i.uuid.clone(),
                name: i.name.clone(),
                arch: arch_of(i.architecture.as_deref()),
            })
            .collect();
        let mut flavors: Vec<FlavorInfo> = infra
            .offerings
            .iter()
            .filter(|o| enabled(o.state.as_deref()))
            .map(|o| FlavorInfo {
                id: o.uuid.clone(),
                name: o.name.clone(),
                cpus: o.cpu_num,
                memory_mib: o.memory_size / MIB,
                arches: Vec::new(),
                gpus: 0,
            })
            .collect();
        flavors
            .sort_by(|a, b| (a.cpus, a.memory_mib, &a.name).cmp(&(b.cpus, b.memory_mib, &b.name)));
        let mut networks: Vec<Network> = infra
            .l3s
            .iter()
            .filter(|l| l.system != Some(true))
            .map(|l| Network {
                id: l.uuid.clone(),
                name: l.name.clone(),
                cidr: l.cidr(),
                owned: false,
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut gpus: Vec<GpuInfo> = gpus
            .into_iter()
            .filter(|d| !d.split)
            .map(|d| GpuInfo {
                host: infra.host_name(&d.host),
                id: d.uuid,
                vendor: d.vendor,
                model: d.model,
                arch: d.arch,
                attached_to: d.attached_to,
            })
            .collect();
        gpus.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
        Ok(Inventory {
            zones,
            arches: arches.into_iter().collect(),
            images,
            flavors,
            networks,
            gpus,
        })
    }

    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        let mut problems: Vec<PlanProblem> = Vec::new();
        let mut push = |ig: &str, problem: String, fix: String| {
            if !problems
                .iter()
                .any(|p| p.instance_group == ig && p.problem == problem)
            {
                problems.push(PlanProblem {
                    instance_group: ig.to_string(),
                    problem,
                    fix,
                });
            }
        };
        let infra = self.infra(true).await?;
        let l3 = match infra.l3_for(self.config.l3_network.as_deref()) {
            Ok(l) => Some(l),
            Err((p, f)) => {
                push("", p, f);
                None
            }
        };
        let zone = l3.and_then(|l| l.zone_uuid.clone());
        if desired.is_empty() {
            return Ok(problems);
        }
        let ids: Vec<String> = desired.iter().map(|r| r.id.clone()).collect();
        let existing: HashSet<String> = self
            .vms_by_uuid(&ids)
            .await?
            .into_iter()
            .filter(|v| !is_gone_state(v.state()))
            .map(|v| v.uuid)
            .collect();
        let any_gpu = desired
            .iter()
            .any(|r| r.gpu.as_ref().is_some_and(|g| g.count > 0));
        let any_mdev = desired
            .iter()
            .any(|r| r.gpu.as_ref().is_some_and(|g| g.mode == GpuMode::Mdev));
        let devs = if any_gpu {
            self.load_gpus(&infra, any_mdev).await?
        } else {
            Vec::new()
        };

        // group by instance group, in order of first appearance
        let mut groups: Vec<(&str, Vec<&InstanceRequest>)> = Vec::new();
        for r in desired {
            match groups.iter_mut().find(|(g, _)| *g == r.instance_group) {
                Some((_, v)) => v.push(r),
                None => groups.push((&r.instance_group, vec![r])),
            }
        }
        let mut taken: HashSet<String> = HashSet::new();
        for (ig, reqs) in groups {
            let mut unplaceable: Vec<(u32, u64, String)> = Vec::new();
            let mut gpu_short: Vec<&InstanceRequest> = Vec::new();
            for req in &reqs {
                if infra.usable_clusters(req.arch, zone.as_deref()).is_empty() {
                    push(
                        ig,
                        format!("no enabled {} ({}) cluster; {}", req.arch, req.arch.machine(), infra.cluster_summary()),
                        format!(
                            "add {} hosts in a cluster of that architecture, or set the group's arch to one that exists",
                            req.arch.machine()
                        ),
                    );
                }
                if let Err((p, f)) = infra.image_for(req) {
                    push(ig, p, f);
                }
                let size = infra.size_for(req);
                if let Err((p, f)) = &size {
                    push(ig, p.clone(), f.clone());
                }
                if existing.contains(&req.id) {
                    continue; // already there: nothing to place
                }
                let hosts = infra.usable_hosts(req.arch, zone.as_deref());
                // (An account that may not list hosts sees none at all: then placement is left
                // to ZStack rather than refused here.)
                if hosts.is_empty()
                    && !infra.hosts.is_empty()
                    && !infra.usable_clusters(req.arch, zone.as_deref()).is_empty()
                {
                    push(
                        ig,
                        format!(
                            "no enabled, connected {} ({}) host in the clusters of that architecture",
                            req.arch,
                            req.arch.machine()
                        ),
                        format!(
                            "enable or reconnect an {} host (or add one), or set the group's arch to one that has hosts",
                            req.arch.machine()
                        ),
                    );
                }
                if let Ok((_, cpus, mem)) = size {
                    if let Some(Err(best)) = infra.fits_somewhere(&hosts, cpus, mem) {
                        unplaceable.push((cpus, mem, best));
                    }
                }
                if let Some(gpu) = req.gpu.as_ref().filter(|g| g.count > 0) {
                    let mdev = gpu.mode == GpuMode::Mdev;
                    let host_ok: HashSet<&str> = hosts.iter().map(|h| h.uuid.as_str()).collect();
                    let candidates: Vec<&GpuDev> = devs
                        .iter()
                        .filter(|d| d.mdev == mdev && d.free && !taken.contains(&d.uuid))
                        .filter(|d| d.arch == Some(req.arch) && host_ok.contains(d.host.as_str()))
                        .filter(|d| d.matches(gpu))
                        .collect();
                    match self.choose_gpus(&infra, gpu, &candidates) {
                        Some(GpuChoice::Devices { devices, .. }) => taken.extend(devices),
                        Some(GpuChoice::Spec { .. }) => {
                            // reserve count devices of the best host for the accounting
                            let mut by_host: BTreeMap<&str, Vec<&GpuDev>> = BTreeMap::new();
                            for d in &candidates {
                                by_host.entry(&d.host).or_default().push(d);
                            }
                            if let Some((_, l)) = by_host
                                .into_iter()
                                .find(|(_, l)| l.len() >= gpu.count as usize)
                            {
                                taken.extend(
                                    l.iter().take(gpu.count as usize).map(|d| d.uuid.clone()),
                                );
                            }
                        }
                        None => gpu_short.push(req),
                    }
                }
            }
            if let Some((cpus, mem, best)) = unplaceable.first() {
                push(
                    ig,
                    format!(
                        "{} new instance(s) of {cpus} vCPU / {mem} MiB fit on no {} host: {best}",
                        unplaceable.len(),
                        reqs[0].arch
                    ),
                    "use a smaller size, or free or add capacity on hosts of that architecture"
                        .into(),
                );
            }
            if let Some(first) = gpu_short.first() {
                let gpu = first.gpu.as_ref().expect("gpu request");
                let new = reqs.iter().filter(|r| !existing.contains(&r.id)).count();
                push(
                    ig,
                    format!(
                        "not enough free GPUs: {} of {new} new instance(s) cannot get {} × {} on one {} host; {}",
                        gpu_short.len(),
                        gpu.count,
                        gpu_filter_text(gpu),
                        first.arch,
                        Self::gpu_supply(&infra, &devs, gpu, first.arch, &HashSet::new())
                    ),
                    "free or add matching GPUs, lower the group's size or GPUs per instance, or loosen the vendor/model filter".into(),
                );
            }
        }
        Ok(problems)
    }

    async fn ensure_network(&self, _req: &NetworkRequest) -> CloudResult<Network> {
        let infra = self.infra(true).await?;
        let l3 = infra
            .l3_for(self.config.l3_network.as_deref())
            .map_err(|(m, f)| fatal("NoL3Network", m, f))?;
        Ok(Network {
            id: l3.uuid.clone(),
            name: l3.name.clone(),
            cidr: l3.cidr(),
            owned: false,
        })
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let vms: Vec<VmInstance> = self
            .vms_of_cluster(cluster)
            .await?
            .into_iter()
            .filter(|v| !is_gone_state(v.state()))
            .collect();
        if vms.is_empty() {
            return Ok(Vec::new());
        }
        let uuids: Vec<String> = vms.iter().map(|v| v.uuid.clone()).collect();
        let mut tags = Self::tag_map(&self.user_tags_of(&uuids).await?);
        let mut out: Vec<Instance> = vms
            .iter()
            .map(|v| Self::to_instance(v, tags.remove(&v.uuid).unwrap_or_default()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        let max = self.client.max_retries();
        let mut attempt = 0;
        loop {
            if let Some(found) = self.existing_for_create(req).await? {
                tracing::debug!(vm = %req.id, name = %req.name, state = %found.state, "instance exists already");
                return Ok(found);
            }
            let (placement, mut reservation) = self.place(req).await?;
            let body = Self::create_body(req, &placement);
            let result = self
                .client
                .call(
                    Method::POST,
                    "/vm-instances",
                    Some(body),
                    "CreateVmInstance",
                    false,
                )
                .await;
            let err = match result {
                Ok(v) => {
                    reservation.commit();
                    drop(reservation);
                    let inv = v.get("inventory").cloned().unwrap_or(Value::Null);
                    let vm: VmInstance =
                        serde_json::from_value(inv).map_err(|e| CloudError::Protocol {
                            provider: PROVIDER,
                            message: format!("CreateVmInstance: unexpected result: {e}"),
                        })?;
                    tracing::info!(vm = %vm.uuid, name = %vm.name, state = %vm.state(), "created ZStack VM");
                    return Ok(Self::to_instance(&vm, req.tags.clone()));
                }
                Err(e) => {
                    drop(reservation);
                    e
                }
            };
            // Ambiguous or failed: the VM may exist anyway (duplicate uuid, lost answer).
            match self.get_vm(&req.id).await {
                Ok(Some(vm)) if !is_gone_state(vm.state()) => {
                    tracing::info!(vm = %vm.uuid, error = %err, "create failed but the VM exists; using it");
                    let tags =
                        Self::tag_map(&self.user_tags_of(std::slice::from_ref(&vm.uuid)).await?)
                            .remove(&vm.uuid)
                            .unwrap_or_default();
                    return Ok(Self::to_instance(&vm, tags));
                }
                Ok(_) => {}
                Err(lookup) => {
                    tracing::debug!(error = %lookup, "lookup after a failed create failed too")
                }
            }
            let gpu_conflict = req.gpu.is_some()
                && matches!(&err, CloudError::Fatal { message, .. } if message.contains("SYS.1006"));
            // A create that hung is left to the executor's retries (after the lookup above).
            let retryable = err.is_retryable() && !super::client::is_hang(&err);
            if (retryable || gpu_conflict) && attempt < max {
                tracing::debug!(vm = %req.id, attempt, error = %err, "create failed; retrying");
                tokio::time::sleep(self.client.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        }
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let vms = self.vms_of_cluster(cluster).await?;
        let vm_ids: HashSet<&str> = vms.iter().map(|v| v.uuid.as_str()).collect();
        let cluster_tags: Vec<Tag> = self
            .client
            .query(Query::new("/user-tags").eq("tag", cluster_tag(cluster)))
            .await?;
        let orphan_owners: BTreeSet<String> = cluster_tags
            .iter()
            .filter(|t| !vm_ids.contains(t.resource_uuid.as_str()))
            .map(|t| t.resource_uuid.clone())
            .collect();
        let mut uuids: Vec<String> = vms.iter().map(|v| v.uuid.clone()).collect();
        uuids.extend(orphan_owners.iter().cloned());
        let all_tags = if uuids.is_empty() {
            Vec::new()
        } else {
            self.user_tags_of(&uuids).await?
        };
        let mut tags = Self::tag_map(&all_tags);
        let mut out: Vec<Resource> = vms
            .iter()
            .map(|v| Resource {
                kind: ResourceKind::Instance,
                id: v.uuid.clone(),
                name: v.name.clone(),
                tags: tags.remove(&v.uuid).unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut orphans: Vec<Resource> = all_tags
            .iter()
            .filter(|t| orphan_owners.contains(&t.resource_uuid))
            .map(|t| Resource {
                kind: ResourceKind::Tag,
                id: t.uuid.clone(),
                name: t.tag.clone(),
                tags: [
                    (crate::TAG_CLUSTER.to_string(), cluster.to_string()),
                    ("zstack/resource-uuid".to_string(), t.resource_uuid.clone()),
                ]
                .into(),
            })
            .collect();
        orphans.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out.extend(orphans);
        Ok(out)
    }

    async fn delete_resource(&self, resource: &Resource) -> CloudResult<()> {
        match resource.kind {
            ResourceKind::Instance => {
                let id = &resource.id;
                let Some(vm) = self.get_vm(id).await? else {
                    return Ok(());
                };
                if vm.state() == "Expunging" {
                    self.wait_gone(id).await?;
                } else {
                    if vm.state() != "Destroyed" {
                        let r = self
                            .client
                            .call(
                                Method::DELETE,
                                &format!(
                                    "/vm-instances/{}?deleteMode=Permissive",
                                    encode_segment(id)
                                ),
                                None,
                                "DestroyVmInstance",
                                true,
                            )
                            .await;
                        if let Err(e) = r {
                            match self.get_vm(id).await? {
                                None => return Ok(()),
                                Some(v) if is_gone_state(v.state()) => {}
                                Some(_) => return Err(e),
                            }
                        }
                    }
                    self.expunge(id).await?;
                }
                // its devices are free again
                self.claims
                    .lock()
                    .expect("claims lock")
                    .retain(|_, (vm, _)| vm != id);
                tracing::info!(vm = %id, name = %resource.name, "expunged ZStack VM");
                Ok(())
            }
            ResourceKind::Tag => {
                let id = &resource.id;
                let r = self
                    .client
                    .call(
                        Method::DELETE,
                        &format!("/tags/{}", encode_segment(id)),
                        None,
                        "DeleteTag",
                        true,
                    )
                    .await;
                match r {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let left: Vec<Tag> = self
                            .client
                            .query(Query::new("/user-tags").eq("uuid", id.clone()))
                            .await?;
                        if left.is_empty() {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            ResourceKind::Network => {
                // ZStack L3 networks are infrastructure kprov does not own (ensure_network
                // returns them with owned: false); deleting the cluster never deletes them.
                tracing::debug!(network = %resource.id, "not deleting a pre-existing ZStack L3 network");
                Ok(())
            }
            other => Err(fatal(
                "Unsupported",
                format!(
                    "the ZStack adapter does not manage {other} resources ({})",
                    resource.id
                ),
                "delete it by hand in the ZStack UI; kprov never creates such resources on ZStack",
            )),
        }
    }
}

/// Error codes of a raw failed-job body, for callers that need them (tests, diagnostics).
pub fn error_codes(body: &str) -> Vec<String> {
    parse_error(body)
        .map(|e| code_chain(&e))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{instance_id, GpuRequest, TAG_CLUSTER, TAG_INDEX, TAG_INSTANCE_GROUP};

    fn infra() -> Infra {
        serde_json::from_value::<InfraFixture>(json!({
            "zones": [{"uuid": "z1", "name": "zone-1"}],
            "clusters": [
                {"uuid": "c-x86", "name": "x86", "zoneUuid": "z1", "architecture": "x86_64", "state": "Enabled"},
                {"uuid": "c-arm", "name": "arm", "zoneUuid": "z1", "architecture": "aarch64", "state": "Enabled"}
            ],
            "hosts": [
                {"uuid": "h1", "name": "x86-1", "clusterUuid": "c-x86", "zoneUuid": "z1", "state": "Enabled", "status": "Connected",
                 "availableCpuCapacity": 32, "availableMemoryCapacity": 68719476736i64},
                {"uuid": "h2", "name": "arm-1", "clusterUuid": "c-arm", "zoneUuid": "z1", "state": "Enabled", "status": "Connected",
                 "availableCpuCapacity": 16, "availableMemoryCapacity": 34359738368i64}
            ],
            "images": [
                {"uuid": "i1", "name": "debian-12-amd64", "status": "Ready", "mediaType": "RootVolumeTemplate", "architecture": "x86_64", "state": "Enabled"},
                {"uuid": "i2", "name": "debian-12-arm64", "status": "Downloading", "mediaType": "RootVolumeTemplate", "architecture": "aarch64"}
            ],
            "offerings": [
                {"uuid": "o1", "name": "small", "cpuNum": 1, "memorySize": 1073741824u64},
                {"uuid": "o2", "name": "large", "cpuNum": 8, "memorySize": 17179869184u64}
            ],
            "l3s": [
                {"uuid": "l3a", "name": "mgmt", "system": true, "networkServices": [{"networkServiceType": "Userdata"}]},
                {"uuid": "l3b", "name": "flat", "zoneUuid": "z1", "networkServices": [{"networkServiceType": "DHCP"}, {"networkServiceType": "Userdata"}],
                 "ipRanges": [{"networkCidr": "10.0.0.0/24"}]}
            ]
        }))
        .unwrap()
        .into()
    }

    #[derive(serde::Deserialize)]
    struct InfraFixture {
        zones: Vec<Zone>,
        clusters: Vec<Cluster>,
        hosts: Vec<Host>,
        images: Vec<Image>,
        offerings: Vec<InstanceOffering>,
        l3s: Vec<L3Network>,
    }

    impl From<InfraFixture> for Infra {
        fn from(f: InfraFixture) -> Self {
            Infra {
                zones: f.zones,
                clusters: f.clusters,
                hosts: f.hosts,
                images: f.images,
                offerings: f.offerings,
                l3s: f.l3s,
                pci_specs: Vec::new(),
                mdev_specs: Vec::new(),
            }
        }
    }

    fn req(arch: Arch, size: MachineSize, role: Role) -> InstanceRequest {
        InstanceRequest {
            cluster: "demo".into(),
            name: "demo-workers-0".into(),
            id: instance_id("demo", "workers", 0),
            instance_group: "workers".into(),
            index: 0,
            role,
            arch,
            size,
            image: None,
            root_disk_gib: Some(40),
            gpu: None,
            network_id: None,
            user_data: b"#cloud-config\n".to_vec(),
            tags: [
                (TAG_CLUSTER.to_string(), "demo".to_string()),
                (TAG_INSTANCE_GROUP.to_string(), "workers".to_string()),
                (TAG_INDEX.to_string(), "0".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn image_selection_names_existing_arches() {
        let i = infra();
        let ok = i
            .image_for(&req(
                Arch::Amd64,
                MachineSize::Flavor("small".into()),
                Role::Node,
            ))
            .unwrap();
        assert_eq!(ok.uuid, "i1");
        let (p, f) = i
            .image_for(&req(
                Arch::Arm64,
                MachineSize::Flavor("small".into()),
                Role::Node,
            ))
            .unwrap_err();
        assert!(p.contains("no Ready arm64 (aarch64) image"), "{p}");
        assert!(p.contains("amd64: debian-12-amd64"), "{p}");
        assert!(f.contains("aarch64"), "{f}");
    }

    #[test]
    fn offering_errors_list_offerings() {
        let i = infra();
        let (p, _) = i
            .size_for(&req(
                Arch::Amd64,
                MachineSize::Flavor("huge".into()),
                Role::Node,
            ))
            .unwrap_err();
        assert!(
            p.contains("`huge` not found")
                && p.contains("small (1 vCPU, 1024 MiB)")
                && p.contains("large (8 vCPU, 16384 MiB)"),
            "{p}"
        );
        let (p, _) = i
            .size_for(&req(
                Arch::Amd64,
                MachineSize::Flavor("small".into()),
                Role::ControlPlane,
            ))
            .unwrap_err();
        assert!(p.contains("too small for a control-plane"), "{p}");
        assert_eq!(
            i.size_for(&req(
                Arch::Amd64,
                MachineSize::Shape {
                    cpus: 4,
                    memory_mib: 8192
                },
                Role::Node
            ))
            .unwrap(),
            (None, 4, 8192)
        );
    }

    #[test]
    fn default_l3_is_the_userdata_one_and_capacity_is_checked() {
        let i = infra();
        assert_eq!(i.l3_for(None).unwrap().uuid, "l3b");
        assert!(i
            .l3_for(Some("nope"))
            .unwrap_err()
            .0
            .contains("flat (l3b, Userdata)"));
        let hosts = i.usable_hosts(Arch::Arm64, Some("z1"));
        assert_eq!(hosts.len(), 1);
        assert!(i.fits_somewhere(&hosts, 8, 8192).unwrap().is_ok());
        let e = i.fits_somewhere(&hosts, 64, 8192).unwrap().unwrap_err();
        assert!(e.contains("arm-1 with 16 vCPU / 32768 MiB"), "{e}");
    }

    #[test]
    fn create_body_has_everything() {
        let mut r = req(
            Arch::Amd64,
            MachineSize::Shape {
                cpus: 2,
                memory_mib: 4096,
            },
            Role::Node,
        );
        r.gpu = Some(GpuRequest {
            count: 1,
            vendor: None,
            model: None,
            mode: GpuMode::Passthrough,
        });
        let p = Placement {
            image: "i1".into(),
            offering: None,
            cpus: 2,
            mem_mib: 4096,
            l3: "l3b".into(),
            cluster: "c-x86".into(),
            host: Some("h1".into()),
            gpu_tags: vec!["pciDevice::d1".into()],
        };
        let b = ZStackCloud::create_body(&r, &p);
        let params = &b["params"];
        assert_eq!(params["resourceUuid"], json!(r.id));
        assert_eq!(params["memorySize"], json!(4096u64 * MIB));
        assert_eq!(params["cpuNum"], json!(2));
        assert_eq!(params["rootDiskSize"], json!(40u64 * GIB));
        assert_eq!(params["hostUuid"], json!("h1"));
        assert_eq!(params["l3NetworkUuids"], json!(["l3b"]));
        let st: Vec<String> = serde_json::from_value(b["systemTags"].clone()).unwrap();
        assert_eq!(st[0], "userdata::I2Nsb3VkLWNvbmZpZwo=");
        assert_eq!(st[1], "hostname::demo-workers-0");
        assert_eq!(st[2], "pciDevice::d1");
        let ut: Vec<String> = serde_json::from_value(b["userTags"].clone()).unwrap();
        assert!(ut.contains(&"kprov::kprov.io/cluster::demo".to_string()));
    }

    #[test]
    fn gpu_choice_is_one_host_spread() {
        let cloud = ZStackCloud::new(ZStackConfig::new(
            "http://127.0.0.1:9",
            super::super::ZStackCredentials::AccessKey {
                id: "a".into(),
                secret: "b".into(),
            },
        ))
        .unwrap();
        let i = infra();
        let dev = |uuid: &str, host: &str| GpuDev {
            uuid: uuid.into(),
            host: host.into(),
            cluster: Some("c-arm".into()),
            arch: Some(Arch::Arm64),
            vendor: "NVIDIA".into(),
            model: "A100".into(),
            spec: Some("spec-a100".into()),
            attached_to: None,
            free: true,
            mdev: false,
            split: false,
        };
        let devs = [dev("a", "h2"), dev("b", "h2"), dev("c", "h3")];
        let refs: Vec<&GpuDev> = devs.iter().collect();
        let g = GpuRequest {
            count: 1,
            vendor: None,
            model: Some("a100".into()),
            mode: GpuMode::Passthrough,
        };
        match cloud.choose_gpus(&i, &g, &refs) {
            Some(GpuChoice::Devices { host, devices, .. }) => {
                assert_eq!(host, "h2"); // the host with more free devices (spread)
                assert_eq!(devices, ["a"]);
            }
            _ => panic!("expected devices"),
        }
        let g2 = GpuRequest {
            count: 2,
            ..g.clone()
        };
        match cloud.choose_gpus(&i, &g2, &refs) {
            Some(GpuChoice::Devices { host, devices, .. }) => {
                assert_eq!(host, "h2");
                assert_eq!(devices, ["a", "b"]);
            }
            _ => panic!("expected devices"),
        }
        let g3 = GpuRequest {
            count: 3,
            ..g.clone()
        };
        assert!(cloud.choose_gpus(&i, &g3, &refs).is_none());
        let mut spec_cfg = cloud.config.clone();
        spec_cfg.gpu_attach = GpuAttach::SpecTags;
        let spec_cloud = ZStackCloud::new(spec_cfg).unwrap();
        match spec_cloud.choose_gpus(&i, &g2, &refs) {
            Some(GpuChoice::Spec { tag, .. }) => assert_eq!(tag, "pciDeviceSpec::spec-a100::2"),
            _ => panic!("expected a spec tag"),
        }
    }

    #[test]
    fn error_codes_of_bodies() {
        assert_eq!(
            error_codes(r#"{"error":{"code":"SYS.1006","cause":{"code":"VM.1010"}}}"#),
            ["SYS.1006", "VM.1010"]
        );
        assert!(error_codes("not json").is_empty());
    }
}
