//! Where a VM goes and which GPUs it gets: the placement engine behind `create_instance`
//! (image, size, L3 network, cluster, and GPU devices on one host or a spec tag, claimed by this
//! process until ZStack shows them in use) and the plan check that runs the same reasoning over
//! every desired instance before anything is created.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::{Arch, CloudResult, GpuInfo, GpuMode, GpuRequest, InstanceRequest, PlanProblem};

use super::cloud::{is_gone_state, ZStackCloud};
use super::config::GpuAttach;
use super::infra::Infra;
use super::model::{Host, MdevDevice, PciDevice};
use super::query::Query;
use super::PROVIDER;
use crate::CloudError;

/// A GPU (whole PCI device or mdev slice) as kprov reasons about it.
#[derive(Debug, Clone)]
pub(super) struct GpuDev {
    pub(super) uuid: String,
    pub(super) host: String,
    pub(super) cluster: Option<String>,
    pub(super) arch: Option<Arch>,
    pub(super) vendor: String,
    pub(super) model: String,
    pub(super) spec: Option<String>,
    pub(super) attached_to: Option<String>,
    pub(super) free: bool,
    pub(super) mdev: bool,
    /// A whole device split into mdev / SR-IOV slices (not usable for passthrough).
    pub(super) split: bool,
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

/// How long a device stays claimed after the create that took it finished: a device list read
/// while that create was running may still show the device as free.
const CLAIM_HOLD: Duration = Duration::from_secs(60);

/// GPU devices claimed by creates of this process: device uuid → (VM uuid, `None` while the
/// create runs, `Some(finish time)` after it succeeded).
pub(super) type Claims = HashMap<String, (String, Option<Instant>)>;

/// Whether `device` is claimed by a create of this process that is running or recent.
fn is_claimed(claims: &Claims, device: &str) -> bool {
    claims
        .get(device)
        .is_some_and(|(_, done)| done.is_none_or(|t| t.elapsed() < CLAIM_HOLD))
}

/// The devices one in-flight create claimed. Dropped without [`Reservation::commit`] (the
/// create failed) the claims are released; committed, they are held for [`CLAIM_HOLD`].
pub(super) struct Reservation<'a> {
    claims: &'a std::sync::Mutex<Claims>,
    ids: Vec<String>,
    committed: bool,
}

impl Reservation<'_> {
    /// Keep the claims (the create succeeded): they are held for [`CLAIM_HOLD`] from the drop.
    pub(super) fn commit(&mut self) {
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
pub(super) struct Placement {
    pub(super) image: String,
    pub(super) offering: Option<String>,
    pub(super) cpus: u32,
    pub(super) mem_mib: u64,
    pub(super) l3: String,
    pub(super) cluster: String,
    pub(super) host: Option<String>,
    pub(super) gpu_tags: Vec<String>,
}

/// Result of choosing GPUs for one instance.
pub(super) enum GpuChoice {
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

/// The GPUs chosen for one instance: the system tags that request them at creation, and the
/// host and cluster they tie the VM to.
#[derive(Default)]
struct GpuPlacement {
    /// `pciDevice::UUID` / `mdevDevice::UUID` tags, or one spec tag.
    tags: Vec<String>,
    /// The host of the devices (device tags only).
    host: Option<String>,
    /// The cluster of that host, or of a host with the spec's devices.
    cluster: Option<String>,
}

/// What [`ZStackCloud::plan_problems`] read once and checks every instance group against.
struct CheckContext<'a> {
    /// The infrastructure, read fresh.
    infra: &'a Infra,
    /// The zone of the configured L3 network, if it was found.
    zone: &'a Option<String>,
    /// Ids of the desired instances that exist already (nothing to place for them).
    existing: &'a HashSet<String>,
    /// The GPUs of the zone (empty when no request asks for one).
    devs: &'a [GpuDev],
}

impl ZStackCloud {
    /// GPUs (whole devices, plus mdev slices when `with_mdev`).
    pub(super) async fn load_gpus(
        &self,
        infra: &Infra,
        with_mdev: bool,
    ) -> CloudResult<Vec<GpuDev>> {
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

    /// Choose GPUs for one instance among `devs` (already filtered to free, matching, right
    /// arch, not claimed).
    pub(super) fn choose_gpus(
        &self,
        infra: &Infra,
        gpu: &GpuRequest,
        devs: &[&GpuDev],
    ) -> Option<GpuChoice> {
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
    pub(super) fn gpu_supply(
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

    /// Where the VM of `req` goes: image, size, L3 network, cluster, and GPUs (claimed by the
    /// returned reservation until the create ends).
    pub(super) async fn place(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<(Placement, Reservation<'_>)> {
        let infra = self.infra(false).await?;
        let image = infra.image_for(req).map_err(|(m, f)| {
            CloudError::fatal(PROVIDER, "NoImage", format!("{}: {m}", req.name), f)
        })?;
        let (offering, cpus, mem_mib) = infra.size_for(req).map_err(|(m, f)| {
            CloudError::fatal(PROVIDER, "BadSize", format!("{}: {m}", req.name), f)
        })?;
        let l3 = match req.network_id.as_deref() {
            Some(id) => infra.l3_for(Some(id)),
            None => infra.l3_for(self.config.l3_network.as_deref()),
        }
        .map_err(|(m, f)| CloudError::fatal(PROVIDER, "NoL3Network", m, f))?;
        let zone = l3.zone_uuid.clone();
        let clusters = infra.usable_clusters(req.arch, zone.as_deref());
        if clusters.is_empty() {
            return Err(CloudError::fatal(
                PROVIDER,
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
            let placed = self
                .place_gpus(req, gpu, &infra, &hosts, (cpus, mem_mib), &mut reservation)
                .await?;
            gpu_tags = placed.tags;
            host = placed.host;
            if let Some(c) = placed.cluster {
                cluster = c;
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

    /// The GPUs of `req` on one of the usable `hosts` that can also take its vCPUs and memory:
    /// devices (claimed in `reservation`) or a spec tag. Fails with `NoFreeGpu` describing the
    /// supply when none fit.
    async fn place_gpus(
        &self,
        req: &InstanceRequest,
        gpu: &GpuRequest,
        infra: &Infra,
        hosts: &[&Host],
        (cpus, mem_mib): (u32, u64),
        reservation: &mut Reservation<'_>,
    ) -> CloudResult<GpuPlacement> {
        let mdev = gpu.mode == GpuMode::Mdev;
        let devs = self.load_gpus(infra, mdev).await?;
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
        let mut placed = GpuPlacement::default();
        match self.choose_gpus(infra, gpu, &candidates) {
            Some(GpuChoice::Devices {
                host: h,
                cluster: c,
                devices,
            }) => {
                let prefix = if mdev { "mdevDevice" } else { "pciDevice" };
                placed
                    .tags
                    .extend(devices.iter().map(|d| format!("{prefix}::{d}")));
                for d in &devices {
                    claims.insert(d.clone(), (req.id.clone(), None));
                }
                reservation.ids = devices;
                placed.host = Some(h);
                placed.cluster = c;
            }
            Some(GpuChoice::Spec { tag, cluster: c }) => {
                placed.tags.push(tag);
                placed.cluster = c;
            }
            None => {
                drop(claims);
                return Err(CloudError::fatal(
                    PROVIDER,
                    "NoFreeGpu",
                    format!(
                        "{}: needs {} × {} on one {} host; {}",
                        req.name,
                        gpu.count,
                        gpu_filter_text(gpu),
                        req.arch,
                        Self::gpu_supply(infra, &devs, gpu, req.arch, &HashSet::new())
                    ),
                    "free or add matching GPUs, lower the GPU count, or loosen the vendor/model filter",
                ));
            }
        }
        Ok(placed)
    }

    /// Every problem of the desired instances ([`crate::Cloud::check`]): per instance group,
    /// cluster and image of the arch, size, hosts and their capacity, and free GPUs.
    pub(super) async fn plan_problems(
        &self,
        desired: &[InstanceRequest],
    ) -> CloudResult<Vec<PlanProblem>> {
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
        let cx = CheckContext {
            infra: &infra,
            zone: &zone,
            existing: &existing,
            devs: &devs,
        };
        for (ig, reqs) in groups {
            self.group_problems(&cx, ig, &reqs, &mut taken, &mut push);
        }
        Ok(problems)
    }

    /// The problems of one instance group's requests (see [`ZStackCloud::plan_problems`]);
    /// `taken` collects the GPUs counted for earlier requests, of this group and earlier ones.
    fn group_problems(
        &self,
        cx: &CheckContext<'_>,
        ig: &str,
        reqs: &[&InstanceRequest],
        taken: &mut HashSet<String>,
        push: &mut dyn FnMut(&str, String, String),
    ) {
        let CheckContext {
            infra,
            zone,
            existing,
            devs,
        } = *cx;
        let mut unplaceable: Vec<(u32, u64, String)> = Vec::new();
        let mut gpu_short: Vec<&InstanceRequest> = Vec::new();
        for req in reqs {
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
                if !self.count_gpus(cx, &hosts, req, gpu, taken) {
                    gpu_short.push(req);
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
                "use a smaller size, or free or add capacity on hosts of that architecture".into(),
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
                    Self::gpu_supply(infra, devs, gpu, first.arch, &HashSet::new())
                ),
                "free or add matching GPUs, lower the group's size or GPUs per instance, or loosen the vendor/model filter".into(),
            );
        }
    }

    /// Count GPUs for one new instance of the plan check, among the free devices on `hosts`
    /// not `taken` by earlier requests; adds what it counts to `taken`. False when none fit.
    fn count_gpus(
        &self,
        cx: &CheckContext<'_>,
        hosts: &[&Host],
        req: &InstanceRequest,
        gpu: &GpuRequest,
        taken: &mut HashSet<String>,
    ) -> bool {
        let CheckContext { infra, devs, .. } = *cx;
        let mdev = gpu.mode == GpuMode::Mdev;
        let host_ok: HashSet<&str> = hosts.iter().map(|h| h.uuid.as_str()).collect();
        let candidates: Vec<&GpuDev> = devs
            .iter()
            .filter(|d| d.mdev == mdev && d.free && !taken.contains(&d.uuid))
            .filter(|d| d.arch == Some(req.arch) && host_ok.contains(d.host.as_str()))
            .filter(|d| d.matches(gpu))
            .collect();
        match self.choose_gpus(infra, gpu, &candidates) {
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
                    taken.extend(l.iter().take(gpu.count as usize).map(|d| d.uuid.clone()));
                }
            }
            None => return false,
        }
        true
    }
}
