//! The infrastructure kprov places VMs on, as read from the management node (zones,
//! clusters, hosts, images, instance offerings, L3 networks, PCI/mdev specs; filtered to the
//! configured zone and cached for a minute), and the choices made from it alone: the image,
//! size and L3 network of a request, usable clusters and hosts, and host capacity.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Arch, CloudError, CloudResult, InstanceRequest, MachineSize, Role};

use super::cloud::ZStackCloud;
use super::model::{
    Cluster, Host, Image, InstanceOffering, L3Network, MdevDeviceSpec, PciDeviceSpec, Zone,
};
use super::query::Query;
use super::PROVIDER;

/// How long discovered infrastructure (zones, clusters, hosts, images, offerings, L3s, specs) is
/// reused by `create_instance` before it is read again. `discover` and `check` always read it.
const INFRA_TTL: Duration = Duration::from_secs(60);

/// Smallest shapes kprov accepts (kubeadm's preflight wants 2 vCPU / 1700 MiB on control planes).
const MIN_CONTROL_PLANE: (u32, u64) = (2, 1700);
/// Smallest worker shape.
const MIN_NODE: (u32, u64) = (1, 1024);

/// One MiB in bytes (ZStack gives sizes in bytes).
pub(super) const MIB: u64 = 1024 * 1024;
/// One GiB in bytes.
pub(super) const GIB: u64 = 1024 * MIB;

/// The architecture named by a ZStack `architecture` field, if kprov knows it.
pub(super) fn arch_of(s: Option<&str>) -> Option<Arch> {
    s.and_then(Arch::parse)
}

/// Whether a ZStack `state` field allows use (anything but `Disabled`; unset counts as enabled).
pub(super) fn enabled(state: Option<&str>) -> bool {
    !matches!(state, Some("Disabled"))
}

/// Infrastructure as read from the management node (filtered to the configured zone).
#[derive(Debug, Clone, Default)]
pub(super) struct Infra {
    pub(super) zones: Vec<Zone>,
    pub(super) clusters: Vec<Cluster>,
    pub(super) hosts: Vec<Host>,
    pub(super) images: Vec<Image>,
    pub(super) offerings: Vec<InstanceOffering>,
    pub(super) l3s: Vec<L3Network>,
    pub(super) pci_specs: Vec<PciDeviceSpec>,
    pub(super) mdev_specs: Vec<MdevDeviceSpec>,
}

impl Infra {
    pub(super) fn cluster(&self, uuid: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.uuid == uuid)
    }

    pub(super) fn host(&self, uuid: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.uuid == uuid)
    }

    pub(super) fn host_name(&self, uuid: &str) -> String {
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

    pub(super) fn host_arch(&self, h: &Host) -> Option<Arch> {
        arch_of(h.architecture.as_deref()).or_else(|| {
            h.cluster_uuid
                .as_deref()
                .and_then(|c| self.cluster(c))
                .and_then(|c| arch_of(c.architecture.as_deref()))
        })
    }

    pub(super) fn usable_clusters(&self, arch: Arch, zone: Option<&str>) -> Vec<&Cluster> {
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

    pub(super) fn usable_hosts(&self, arch: Arch, zone: Option<&str>) -> Vec<&Host> {
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

    pub(super) fn cluster_summary(&self) -> String {
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

    pub(super) fn usable_images(&self) -> Vec<&Image> {
        let mut v: Vec<&Image> = self.images.iter().filter(|i| i.usable()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        v
    }

    pub(super) fn image_summary(&self) -> String {
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
    pub(super) fn image_for(&self, req: &InstanceRequest) -> Result<&Image, (String, String)> {
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

    pub(super) fn offering_summary(&self) -> String {
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
    pub(super) fn size_for(
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

    pub(super) fn l3_summary(&self) -> String {
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
    pub(super) fn l3_for(&self, wanted: Option<&str>) -> Result<&L3Network, (String, String)> {
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
    pub(super) fn fits_somewhere(
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

impl ZStackCloud {
    pub(super) async fn load_infra(&self) -> CloudResult<Arc<Infra>> {
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
                    CloudError::fatal(
                        PROVIDER,
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
    pub(super) async fn infra(&self, fresh: bool) -> CloudResult<Arc<Infra>> {
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
}
