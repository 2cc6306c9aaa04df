//! [`LibvirtCloud`]: the [`Cloud`] implementation on one libvirt connection.
//!
//! Every libvirt call is blocking; they run on tokio's blocking pool, one at a time through a
//! mutex around the connection (the `test:///` driver keeps its state per connection, so the
//! adapter must keep using the one it opened; with `qemu:///system` the calls are short, except
//! the one-time base image upload).
//!
//! The connection (keepalive, reopening) is in `super::connection`, libvirt errors in
//! `super::errors`, the domain definition in `super::domain` (its public items are re-exported
//! here), pools and volumes in `super::storage`, PCI passthrough in `super::passthrough`, the
//! network in `super::network` and the listing and deletion of a cluster's resources in
//! `super::resources`; this file holds the adapter, the instance lookups and creation, and the
//! [`Cloud`] impl.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::connection::{driver, Link};
use super::errors::{is, not_found, verr};
use super::passthrough::gpu_info;
use super::xml::*;
use super::{
    volume_prefix, DomainType, LibvirtConfig, NetworkMode, PROVIDER, USER_NET_GUEST_ADDRESS,
};
use crate::{
    Arch, Cloud, CloudError, CloudResult, EndpointRequest, GpuMode, ImageInfo, Instance,
    InstanceRequest, Inventory, Network, NetworkRequest, PlanProblem, Resource,
};

pub use super::domain::{
    domain_uuid, domain_xml, mac_for, shape, DirectBootPaths, DomainParams, Nic,
};
pub use super::passthrough::pick_gpus;
pub use super::storage::qcow2_virtual_size;

/// The libvirt adapter.
pub struct LibvirtCloud {
    /// The settings it was made with.
    pub(super) cfg: LibvirtConfig,
    /// The connection, shared by the copies made for blocking closures.
    pub(super) conn: Arc<Mutex<Link>>,
    /// SHA-256 (first 12 hex digits) of each base image file, computed once.
    pub(super) image_ids: Arc<Mutex<HashMap<Arch, String>>>,
}

impl std::fmt::Debug for LibvirtCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtCloud")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// One domain of a cluster as listed.
pub(super) struct Listed {
    pub(super) dom: Domain,
    pub(super) uuid: String,
    pub(super) name: String,
    pub(super) meta: ParsedMetadata,
}

impl LibvirtCloud {
    /// Open the connection named by `cfg.uri`.
    pub fn connect(cfg: LibvirtConfig) -> CloudResult<LibvirtCloud> {
        // libvirt prints every error to stderr by default; kprov reports them itself (many are
        // expected: "not found" while looking for leftovers).
        virt::error::clear_error_callback();
        let mut link = Link {
            conn: None,
            pending: None,
            lost_since: None,
        };
        link.ensure_open(&cfg.uri, cfg.keepalive_timeout)?;
        Ok(LibvirtCloud {
            cfg,
            conn: Arc::new(Mutex::new(link)),
            image_ids: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The adapter's settings.
    pub fn config(&self) -> &LibvirtConfig {
        &self.cfg
    }

    /// Whether this is libvirt's in-process `test:///` driver (no real host behind it).
    pub(super) fn is_test_driver(&self) -> bool {
        driver(&self.cfg.uri) == "test"
    }

    pub(super) fn list_cluster_domains(conn: &Connect, cluster: &str) -> CloudResult<Vec<Listed>> {
        let mut out = Vec::new();
        for dom in conn
            .list_all_domains(0)
            .map_err(|e| verr("listing domains", e))?
        {
            let Ok(xml) = dom.xml_desc(0) else { continue };
            let Some(meta) = parse_metadata(&xml) else {
                continue;
            };
            if meta.cluster != cluster {
                continue;
            }
            let uuid = dom.uuid_string().map_err(|e| verr("domain uuid", e))?;
            let name = dom.name().map_err(|e| verr("domain name", e))?;
            out.push(Listed {
                dom,
                uuid,
                name,
                meta,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) fn instance_of(&self, conn: &Connect, l: &Listed) -> Instance {
        use virt::domain::DomainState as S;
        let state = match l.dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
            Ok(S::Running) => "Running",
            Ok(S::Blocked) => "Blocked",
            Ok(S::Paused) => "Paused",
            Ok(S::Shutdown) => "ShuttingDown",
            Ok(S::Shutoff) => "Stopped",
            Ok(S::Crashed) => "Crashed",
            Ok(S::PMSuspended) => "Suspended",
            _ => "Unknown",
        };
        let address = if matches!(self.cfg.network, NetworkMode::User { .. }) {
            Some(USER_NET_GUEST_ADDRESS.to_string())
        } else {
            Self::address_now(conn, &l.dom)
        };
        Instance {
            id: l.uuid.clone(),
            name: l.name.clone(),
            state: state.into(),
            address,
            tags: l.meta.tags.clone(),
        }
    }

    /// The domain's IPv4 address from DHCP leases, else the ARP table.
    pub(super) fn address_now(_conn: &Connect, dom: &Domain) -> Option<String> {
        if !dom.is_active().unwrap_or(false) {
            return None;
        }
        for src in [
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        ] {
            if let Ok(ifaces) = dom.interface_addresses(src, 0) {
                for i in ifaces {
                    for a in i.addrs {
                        if a.typed == sys::VIR_IP_ADDR_TYPE_IPV4 as i64 && !a.addr.is_empty() {
                            return Some(a.addr);
                        }
                    }
                }
            }
        }
        None
    }

    /// The blocking part of `create_instance`, under the connection lock.
    fn create_blocking(
        &self,
        conn: &Connect,
        req: &InstanceRequest,
        image_id: &str,
    ) -> CloudResult<(Domain, bool)> {
        let uuid = domain_uuid(&req.id);
        if let Ok(dom) = conn.lookup_domain_by_uuid_string(&uuid) {
            // exists (a re-run after a crash): make sure it runs
            Self::ensure_running(&dom, &req.name)?;
            return Ok((dom, false));
        }
        // A domain of this name that is not this node (another UUID: made by someone else)
        // would make the define fail after the volumes were made: refuse before anything.
        if let Ok(other) = conn.lookup_domain_by_name(&req.name) {
            let theirs = other.uuid_string().unwrap_or_default();
            return Err(CloudError::fatal(
                PROVIDER,
                "DomainNameTaken",
                format!(
                    "domain {} on {} has uuid {theirs}, so it is not kprov's node {} (uuid {uuid}): a domain kprov did not make holds the name",
                    req.name, self.cfg.uri, req.name
                ),
                format!(
                    "remove or rename that domain (e.g. `virsh -c {} undefine {}` if nothing needs it), or rename the instance group, then re-run; kprov never changes domains it did not make",
                    self.cfg.uri, req.name
                ),
            ));
        }
        let (cpus, _) = shape(req)?;
        if cpus == 0 {
            return Err(CloudError::fatal(
                PROVIDER,
                "BadSize",
                format!("{}: 0 vCPUs", req.name),
                "give at least 1 CPU",
            ));
        }
        let (pool, dir) = self.ensure_pool(conn, &req.cluster)?;
        let pool_name = self.pool_name(&req.cluster);
        let (base, direct) = self.ensure_base(conn, &pool, &req.cluster, req.arch, image_id)?;
        let prefix = volume_prefix(&req.cluster);
        let root = self.create_root_volume(&pool, req, &base)?;
        let seed_name = self.upload_seed(conn, &pool, req)?;
        let hostdevs = Self::hostdevs_for(conn, req)?;
        let nic = self.nic_for(&req.cluster);
        let console_log = match (&dir, self.is_test_driver()) {
            (Some(d), false) => Some(format!(
                "{}/{prefix}{}.console.log",
                d.trim_end_matches('/'),
                req.name
            )),
            _ => None,
        };
        let params = DomainParams {
            req,
            domain_type: self.domain_type_for(conn, req.arch),
            machine_x86: self.cfg.machine_x86.clone(),
            pool: pool_name,
            root_volume: root,
            seed_volume: seed_name,
            direct_boot: direct,
            nic,
            hostdevs,
            console_log,
        };
        let dx = to_xml(&domain_xml(&params)?).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        let dom = conn
            .define_domain_xml(&dx)
            .map_err(|e| verr(&format!("defining domain {}", req.name), e))?;
        dom.create()
            .map_err(|e| verr(&format!("starting domain {}", req.name), e))?;
        Ok((dom, true))
    }

    /// Start a domain that is defined but shut off, resume one that is paused (a run killed
    /// between defining and starting it, or during the start, leaves it so).
    fn ensure_running(dom: &Domain, name: &str) -> CloudResult<()> {
        use virt::domain::DomainState as S;
        let start = || {
            dom.create()
                .map(|_| ())
                .map_err(|e| verr(&format!("starting domain {name}"), e))
        };
        match dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
            Ok(S::Paused) => match dom.resume() {
                Ok(_) => Ok(()),
                // libvirtd settled the start a dead run (or a lost connection) left half done
                // in the meantime: it finished it, or — restarted mid-start — it killed the
                // half-started QEMU ("wasn't fully started yet"), leaving the domain shut off
                Err(e) if is(&e, ErrorNumber::OperationInvalid) => {
                    match dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
                        Ok(S::Running) => Ok(()),
                        Ok(S::Shutoff) => start(),
                        _ => Err(verr(&format!("resuming domain {name}"), e)),
                    }
                }
                Err(e) => Err(verr(&format!("resuming domain {name}"), e)),
            },
            _ if !dom.is_active().unwrap_or(false) => start(),
            _ => Ok(()),
        }
    }

    /// A copy sharing the connection and the image-hash cache (for moving into blocking
    /// closures).
    pub(super) fn shallow(&self) -> Arc<LibvirtCloud> {
        Arc::new(LibvirtCloud {
            cfg: self.cfg.clone(),
            conn: self.conn.clone(),
            image_ids: self.image_ids.clone(),
        })
    }
}

#[async_trait]
impl Cloud for LibvirtCloud {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn default_concurrency(&self) -> usize {
        4
    }

    /// No limit: user-data goes on the NoCloud seed ISO, which holds any size.
    fn user_data_limit(&self) -> Option<usize> {
        None
    }

    async fn discover(&self) -> CloudResult<Inventory> {
        let this = self.shallow();
        self.with_conn(move |conn| {
            let host = conn.hostname().unwrap_or_else(|_| "libvirt".into());
            let caps = conn
                .capabilities()
                .map_err(|e| verr("reading capabilities", e))?;
            let mut arches: Vec<Arch> = attrs_of(&caps, "arch")
                .iter()
                .filter_map(|a| a.get("name").and_then(|n| Arch::parse(n)))
                .collect();
            arches.sort();
            arches.dedup();
            let images = this
                .cfg
                .images
                .iter()
                .map(|(a, i)| ImageInfo {
                    id: i.path.display().to_string(),
                    name: i.path.display().to_string(),
                    arch: Some(*a),
                })
                .collect();
            let mut networks = Vec::new();
            for n in conn.list_all_networks(0).unwrap_or_default() {
                let name = n.name().unwrap_or_default();
                let x = n.xml_desc(0).unwrap_or_default();
                networks.push(Network {
                    id: name.clone(),
                    cidr: Self::network_cidr(&x),
                    owned: name.starts_with("kprov."),
                    name,
                });
            }
            let used = Self::hostdevs_in_use(conn, None);
            let gpus = Self::pci_devices(conn)
                .iter()
                .map(|d| {
                    let mut g = gpu_info(d, used.get(&d.address).cloned());
                    g.host = host.clone();
                    g
                })
                .collect();
            Ok(Inventory {
                zones: vec![host.clone()],
                arches,
                images,
                flavors: vec![],
                networks,
                gpus,
            })
        })
        .await
    }

    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        let mut problems = Vec::new();
        let problem = |ig: &str, p: String, f: &str| PlanProblem {
            instance_group: ig.into(),
            problem: p,
            fix: f.into(),
        };
        let mut seen_arch = BTreeSet::new();
        for r in desired {
            if let Err(CloudError::Fatal { message, fix, .. }) = shape(r) {
                problems.push(problem(&r.instance_group, message, &fix));
            }
            if seen_arch.insert(r.arch) {
                match self.cfg.images.get(&r.arch) {
                    None => problems.push(problem(&r.instance_group, format!("no base image for {}", r.arch), &format!("set spec.provider.libvirt.images.{} to a local qcow2 cloud image (tests/vm/build-image.sh builds one)", r.arch))),
                    Some(i) if !i.path.is_file() => problems.push(problem(&r.instance_group, format!("base image {} for {} does not exist on this machine", i.path.display(), r.arch), "build or download it first; URLs are not fetched by kprov")),
                    Some(i) => {
                        for f in i.direct_boot.iter().flat_map(|d| [&d.kernel, &d.initrd]) {
                            if !f.is_file() {
                                problems.push(problem(&r.instance_group, format!("direct-boot file {} does not exist", f.display()), "export the image's kernel and initrd next to it"));
                            }
                        }
                    }
                }
            }
            if let Some(g) = &r.gpu {
                if g.mode == GpuMode::Mdev {
                    problems.push(problem(
                        &r.instance_group,
                        "mediated GPU devices (mdev) are not supported by the libvirt adapter"
                            .into(),
                        "use passthrough",
                    ));
                }
            }
        }
        let desired = desired.to_vec();
        let this = self.shallow();
        let more = self
            .with_conn(move |conn| {
                let mut problems = Vec::new();
                if this.is_test_driver() {
                    // capabilities of the test driver do not describe a real host
                } else {
                    let caps = conn.capabilities().map_err(|e| verr("reading capabilities", e))?;
                    let arches: BTreeSet<Arch> = attrs_of(&caps, "arch").iter().filter_map(|a| a.get("name").and_then(|n| Arch::parse(n))).collect();
                    for a in desired.iter().map(|r| r.arch).collect::<BTreeSet<_>>() {
                        if !arches.contains(&a) {
                            let ig = desired.iter().find(|r| r.arch == a).map(|r| r.instance_group.clone()).unwrap_or_default();
                            problems.push(PlanProblem { instance_group: ig, problem: format!("the libvirt host cannot run {a} guests (no {} emulator in its capabilities)", a.machine()), fix: format!("install qemu-system-{} on the libvirt host (and restart libvirtd)", if a == Arch::Arm64 { "arm" } else { "x86" }) });
                        }
                        if this.cfg.domain_type == DomainType::Kvm {
                            let m = if a == Arch::Arm64 { "virt" } else { this.cfg.machine_x86.as_str() };
                            if conn.domain_capabilities(None, Some(a.machine()), Some(m), Some("kvm"), 0).is_err() {
                                problems.push(PlanProblem { instance_group: String::new(), problem: format!("domainType kvm, but the host offers no KVM for {a}"), fix: "set spec.provider.libvirt.domainType to auto or qemu".into() });
                            }
                        }
                    }
                }
                // GPUs: free devices (not used by domains other than the desired ones) per request
                let wanted: Vec<&InstanceRequest> = desired.iter().filter(|r| r.gpu.as_ref().is_some_and(|g| g.mode == GpuMode::Passthrough)).collect();
                if !wanted.is_empty() {
                    let mine: BTreeSet<String> = desired.iter().map(|r| domain_uuid(&r.id)).collect();
                    let mut used: BTreeSet<PciAddress> = BTreeSet::new();
                    for d in conn.list_all_domains(0).unwrap_or_default() {
                        if mine.contains(&d.uuid_string().unwrap_or_default()) {
                            continue;
                        }
                        used.extend(hostdev_addresses(&d.xml_desc(0).unwrap_or_default()));
                    }
                    let devices = Self::pci_devices(conn);
                    let mut short: BTreeMap<String, (u32, u32)> = BTreeMap::new();
                    for r in wanted {
                        let g = r.gpu.as_ref().expect("filtered");
                        match pick_gpus(&devices, &used, g) {
                            Some(got) => used.extend(got),
                            None => {
                                let e = short.entry(r.instance_group.clone()).or_insert((0, g.count));
                                e.0 += 1;
                            }
                        }
                    }
                    for (ig, (n, per)) in short {
                        let total = devices.len();
                        problems.push(PlanProblem {
                            instance_group: ig,
                            problem: format!("{n} instance(s) cannot get {per} free matching PCI device(s) for passthrough (host has {total} PCI devices, {} in use)", used.len()),
                            fix: "lower the GPU count or node count, loosen the vendor/model filter, or free devices held by other domains".into(),
                        });
                    }
                }
                Ok(problems)
            })
            .await?;
        problems.extend(more);
        Ok(problems)
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> CloudResult<Network> {
        self.ensure_cluster_network(req).await
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let cluster = cluster.to_string();
        let this = self.shallow();
        self.with_conn(move |conn| {
            Ok(Self::list_cluster_domains(conn, &cluster)?
                .iter()
                .map(|l| this.instance_of(conn, l))
                .collect())
        })
        .await
    }

    /// Domains of the cluster that exist but do not run (`Stopped`, `Paused`): a run killed
    /// between defining and starting one, or during its start, leaves it so, and the plan — which
    /// finds it by its metadata — would otherwise never create (and so start) it again.
    async fn pending_repairs(
        &self,
        _cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<String>> {
        Ok(instances
            .iter()
            .filter(|i| matches!(i.state.as_str(), "Stopped" | "Paused"))
            .map(|i| {
                format!(
                    "start domain {} ({}: left so by a run that did not finish)",
                    i.name,
                    i.state.to_lowercase()
                )
            })
            .collect())
    }

    async fn repair(&self, _cluster: &str, instances: &[Instance]) -> CloudResult<()> {
        for i in instances
            .iter()
            .filter(|i| matches!(i.state.as_str(), "Stopped" | "Paused"))
        {
            let (id, name) = (i.id.clone(), i.name.clone());
            self.with_conn(move |conn| match conn.lookup_domain_by_uuid_string(&id) {
                Ok(dom) => Self::ensure_running(&dom, &name),
                Err(e) if not_found(&e) => Ok(()),
                Err(e) => Err(verr("looking up domain", e)),
            })
            .await?;
        }
        Ok(())
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        let this = self.shallow();
        let r = req.clone();
        let (created, uuid) = self
            .with_conn(move |conn| {
                // hashed once per arch (cached), off the async threads, one caller at a time
                let image_id = this.image_id(r.arch)?;
                let (dom, created) = this.create_blocking(conn, &r, &image_id)?;
                Ok((
                    created,
                    dom.uuid_string().map_err(|e| verr("domain uuid", e))?,
                ))
            })
            .await?;
        tracing::info!(node = %req.name, created, "libvirt domain running");
        // Wait for the address (DHCP lease) on libvirt networks.
        let deadline = Instant::now() + self.cfg.address_timeout;
        loop {
            let u = uuid.clone();
            let this = self.shallow();
            let inst = self
                .with_conn(move |conn| {
                    let dom = conn
                        .lookup_domain_by_uuid_string(&u)
                        .map_err(|e| verr("looking up the new domain", e))?;
                    let xml = dom.xml_desc(0).map_err(|e| verr("domain xml", e))?;
                    let l = Listed {
                        name: dom.name().unwrap_or_default(),
                        uuid: u,
                        meta: parse_metadata(&xml).unwrap_or_default(),
                        dom,
                    };
                    Ok(this.instance_of(conn, &l))
                })
                .await?;
            if inst.address.is_some() || Instant::now() >= deadline {
                if inst.address.is_none() {
                    tracing::warn!(node = %req.name, "no DHCP lease within {:?}", self.cfg.address_timeout);
                }
                return Ok(inst);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn check_control_plane_endpoint(
        &self,
        req: &EndpointRequest,
    ) -> CloudResult<Vec<PlanProblem>> {
        self.check_endpoint(req).await
    }

    async fn ensure_control_plane_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        self.ensure_endpoint(req).await
    }

    async fn control_plane_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        self.reserved_endpoint(cluster).await
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let mut out = self.owned_resources(cluster).await?;
        out.extend(self.vip_resources(cluster).await?);
        Ok(out)
    }

    async fn delete_resource(&self, resource: &Resource) -> CloudResult<()> {
        self.delete_owned(resource).await
    }
}
