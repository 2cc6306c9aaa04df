//! `CreateVmInstance`: parameter validation, placement, IP and device allocation, and the new
//! VM's inventory.

use super::placement::{pci_passthrough_free, PlacementReq};
use super::tags::validate_system_tag_format;
use super::{arg_not_found, check_resource_uuid, new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;

/// Parsed `params` of `CreateVmInstance` (unknown keys ignored, as the MN does). The fields are
/// the API's parameters (`docs/providers/zstack-api.md`); tags may also come from the body's
/// top level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateVmParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub instance_offering_uuid: Option<String>,
    pub cpu_num: Option<u64>,
    pub memory_size: Option<u64>,
    pub image_uuid: Option<String>,
    pub l3_network_uuids: Vec<String>,
    pub default_l3_network_uuid: Option<String>,
    pub root_disk_offering_uuid: Option<String>,
    pub root_disk_size: Option<u64>,
    pub zone_uuid: Option<String>,
    pub cluster_uuid: Option<String>,
    pub host_uuid: Option<String>,
    pub primary_storage_uuid_for_root_volume: Option<String>,
    pub strategy: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub guest_os_type: Option<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

/// Device claims requested through create-time system tags.
#[derive(Debug, Default, Clone)]
struct DeviceClaims {
    pci: Vec<String>,
    pci_specs: Vec<(String, usize)>,
    mdev: Vec<String>,
    mdev_specs: Vec<(String, usize)>,
}

/// What validating a `CreateVmInstance` established, handed to the steps that change the state.
struct CreateVmPlan<'p> {
    name: String,
    strategy: &'p str,
    vm_type: &'p str,
    image: Image,
    cpu: u64,
    mem: u64,
    /// Null when the size came from `cpuNum` / `memorySize`.
    offering: Option<String>,
    l3s: Vec<L3Network>,
    default_l3: String,
    arch: String,
    claims: DeviceClaims,
    /// `(l3 uuid, ip)` pairs from `staticIp::` tags.
    static_ips: Vec<(String, String)>,
    /// The host the explicitly named devices are on: the VM has to run there.
    pinned: Option<String>,
}

/// Where a new VM goes: its host (none for a JustCreate without devices) and the primary storage
/// of its root volume.
struct VmPlacement {
    host: Option<String>,
    host_rec: Option<Host>,
    ps: String,
}

impl CloudState {
    /// Validates a `CreateVmInstance` and inserts the VM in its transitional state with host,
    /// IPs and devices claimed. Nothing is changed when it fails.
    ///
    /// The steps run in the management node's order: when a request has several faults, the
    /// error reported is the one the MN reports first (the conformance tests pin the codes).
    pub fn create_vm_begin(&mut self, p: &CreateVmParams) -> Result<String, ErrorCode> {
        let plan = self.validate_create_vm(p)?;

        let uuid = self.claim_uuid(p.resource_uuid.as_deref(), "VmInstanceVO")?;

        let placement = self.place_new_vm(p, &plan)?;
        let nics = self.allocate_nics(&plan.l3s, &plan.static_ips, &uuid)?;
        // Nothing can fail from here on, so the claims below are never left half done.
        self.claim_create_devices(&plan.claims, placement.host.as_deref(), &uuid);
        let vm = new_vm_inventory(p, plan, uuid.clone(), placement, nics);
        self.vms.push(vm);
        self.add_create_tags(&uuid, "VmInstanceVO", &p.user_tags, &p.system_tags);
        Ok(uuid)
    }

    /// Completes a create: Running (InstantStart), Stopped (CreateStopped), Created (JustCreate).
    pub fn create_vm_finish(&mut self, uuid: &str, strategy: &str) -> Result<Value, ErrorCode> {
        let vm = self.vm_mut(uuid).ok_or_else(|| {
            ErrorCode::internal(format!("vm[uuid:{uuid}] vanished while being created"))
        })?;
        match strategy {
            "InstantStart" => {
                vm.state = "Running".into();
                vm.last_host_uuid = vm.host_uuid.clone();
            }
            "CreateStopped" => {
                vm.state = "Stopped".into();
                vm.last_host_uuid = vm.host_uuid.take();
            }
            _ => vm.state = "Created".into(),
        }
        vm.last_op_date = GsonTime::now();
        self.vm_result(uuid)
    }

    /// Every check that needs no claim, in the MN's order: the request's own fields, the image,
    /// the size, the networks, the requested location, the architecture, the system tags and the
    /// devices they name.
    fn validate_create_vm<'p>(&self, p: &'p CreateVmParams) -> Result<CreateVmPlan<'p>, ErrorCode> {
        let (name, strategy, vm_type) = check_create_fields(p)?;
        let image = self.create_vm_image(p)?;
        let (cpu, mem, offering) = self.create_vm_size(p)?;
        let (l3s, default_l3) = self.create_vm_networks(p)?;
        self.check_create_location(p)?;
        let arch = create_vm_arch(p, &image)?;
        let (claims, static_ips) = self.parse_create_system_tags(p, &l3s, &default_l3)?;
        let pinned = self.check_device_claims(&claims)?;
        Ok(CreateVmPlan {
            name,
            strategy,
            vm_type,
            image,
            cpu,
            mem,
            offering,
            l3s,
            default_l3,
            arch,
            claims,
            static_ips,
            pinned,
        })
    }

    /// The source image: given, known, Enabled and Ready; an ISO also needs a root disk size.
    fn create_vm_image(&self, p: &CreateVmParams) -> Result<Image, ErrorCode> {
        let image_uuid = p
            .image_uuid
            .clone()
            .ok_or_else(|| ErrorCode::invalid_argument("field[imageUuid] is mandatory"))?;
        let image = self
            .images
            .iter()
            .find(|i| i.uuid == image_uuid)
            .ok_or_else(|| arg_not_found("imageUuid", &image_uuid, "ImageVO"))?
            .clone();
        if image.status != "Ready" || image.state != "Enabled" {
            return Err(ErrorCode::operation(format!(
                "image[uuid:{}] is in state[{}] status[{}], it must be Enabled and Ready",
                image.uuid, image.state, image.status
            )));
        }
        if image.media_type == "ISO"
            && p.root_disk_offering_uuid.is_none()
            && p.root_disk_size.is_none()
        {
            return Err(ErrorCode::invalid_argument(
                "rootDiskOfferingUuid or rootDiskSize is required when creating a vm from an ISO",
            ));
        }
        Ok(image)
    }

    /// CPU and memory: from the offering (which must be Enabled) or from `cpuNum` + `memorySize`.
    fn create_vm_size(&self, p: &CreateVmParams) -> Result<(u64, u64, Option<String>), ErrorCode> {
        let (cpu, mem, offering) = match &p.instance_offering_uuid {
            Some(o) => {
                let off = self
                    .instance_offerings
                    .iter()
                    .find(|x| &x.uuid == o)
                    .ok_or_else(|| {
                        arg_not_found("instanceOfferingUuid", o, "InstanceOfferingVO")
                    })?;
                if off.state != "Enabled" {
                    return Err(ErrorCode::operation(format!(
                        "instance offering[uuid:{o}] is disabled"
                    )));
                }
                (off.cpu_num, off.memory_size, Some(off.uuid.clone()))
            }
            None => match (p.cpu_num, p.memory_size) {
                (Some(c), Some(m)) if c > 0 && m > 0 => (c, m, None),
                _ => {
                    return Err(ErrorCode::invalid_argument(
                        "instanceOfferingUuid or both cpuNum and memorySize must be set",
                    ))
                }
            },
        };
        Ok((cpu, mem, offering))
    }

    /// The L3 networks (at least one, all known, none twice) and the default one (among them).
    fn create_vm_networks(
        &self,
        p: &CreateVmParams,
    ) -> Result<(Vec<L3Network>, String), ErrorCode> {
        if p.l3_network_uuids.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "field[l3NetworkUuids] must not be empty",
            ));
        }
        let mut l3s = Vec::new();
        for u in &p.l3_network_uuids {
            let l3 = self
                .l3_networks
                .iter()
                .find(|l| &l.uuid == u)
                .ok_or_else(|| arg_not_found("l3NetworkUuids", u, "L3NetworkVO"))?;
            if l3s.iter().any(|x: &L3Network| x.uuid == l3.uuid) {
                return Err(ErrorCode::invalid_argument(format!(
                    "duplicate l3 network[uuid:{u}]"
                )));
            }
            l3s.push(l3.clone());
        }
        let default_l3 = p
            .default_l3_network_uuid
            .clone()
            .unwrap_or_else(|| l3s[0].uuid.clone());
        if !l3s.iter().any(|l| l.uuid == default_l3) {
            return Err(ErrorCode::invalid_argument(format!(
                "defaultL3NetworkUuid[{default_l3}] is not in l3NetworkUuids"
            )));
        }
        Ok((l3s, default_l3))
    }

    /// The requested zone, cluster and host exist (whether they fit is placement's question).
    fn check_create_location(&self, p: &CreateVmParams) -> Result<(), ErrorCode> {
        if let Some(z) = &p.zone_uuid {
            if !self.zones.iter().any(|x| &x.uuid == z) {
                return Err(arg_not_found("zoneUuid", z, "ZoneVO"));
            }
        }
        if let Some(c) = &p.cluster_uuid {
            if !self.clusters.iter().any(|x| &x.uuid == c) {
                return Err(arg_not_found("clusterUuid", c, "ClusterVO"));
            }
        }
        if let Some(h) = &p.host_uuid {
            if !self.hosts.iter().any(|x| &x.uuid == h) {
                return Err(arg_not_found("hostUuid", h, "HostVO"));
            }
        }
        Ok(())
    }

    /// System tags: formats, userdata, hostname, static IPs and device claims. Returns the
    /// device claims and the `(l3, ip)` pairs of `staticIp::` tags.
    fn parse_create_system_tags(
        &self,
        p: &CreateVmParams,
        l3s: &[L3Network],
        default_l3: &str,
    ) -> Result<(DeviceClaims, Vec<(String, String)>), ErrorCode> {
        let mut userdata = 0;
        let mut claims = DeviceClaims::default();
        let mut static_ips: Vec<(String, String)> = Vec::new();
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
            if let Some(b64) = t.strip_prefix("userdata::") {
                userdata += 1;
                lenient_b64().decode(b64.trim()).map_err(|_| {
                    ErrorCode::invalid_argument(
                        "the userdata in the system tag userdata::<base64> is not base64 encoded",
                    )
                })?;
            } else if let Some(h) = t.strip_prefix("hostname::") {
                if !valid_hostname(h) {
                    return Err(ErrorCode::invalid_argument(format!(
                        "hostname[{h}] is not a valid hostname (RFC 1123)"
                    )));
                }
                let clash = self.vms.iter().find(|v| {
                    v.default_l3_network_uuid.as_deref() == Some(default_l3)
                        && self.tags.iter().any(|x| {
                            x.resource_uuid == v.uuid && x.type_ == "System" && x.tag == *t
                        })
                });
                if let Some(v) = clash {
                    return Err(ErrorCode::invalid_argument(format!(
                        "conflict hostname in system tag[{t}]: vm[uuid:{}] already has hostname[{h}] on l3 network[uuid:{default_l3}]",
                        v.uuid
                    )));
                }
            } else if let Some(rest) = t.strip_prefix("staticIp::") {
                let (l3, ip) = rest.split_once("::").ok_or_else(|| {
                    ErrorCode::invalid_argument(format!(
                        "system tag[{t}] must be staticIp::<l3Uuid>::<ip>"
                    ))
                })?;
                if !l3s.iter().any(|x| x.uuid == l3) {
                    return Err(ErrorCode::invalid_argument(format!(
                        "the l3 network[uuid:{l3}] of system tag[{t}] is not one of the vm's l3 networks"
                    )));
                }
                static_ips.push((l3.into(), ip.into()));
            } else if let Some(u) = t.strip_prefix("pciDevice::") {
                claims.pci.push(u.into());
            } else if let Some(rest) = t.strip_prefix("pciDeviceSpec::") {
                claims.pci_specs.push(parse_spec_claim(t, rest)?);
            } else if let Some(u) = t.strip_prefix("mdevDevice::") {
                claims.mdev.push(u.into());
            } else if let Some(rest) = t.strip_prefix("mdevDeviceSpec::") {
                claims.mdev_specs.push(parse_spec_claim(t, rest)?);
            }
        }
        if userdata > 1 {
            return Err(ErrorCode::invalid_argument(
                "only one userdata system tag is allowed, but multiple were given",
            ));
        }
        Ok((claims, static_ips))
    }

    /// The claimed specs exist; the named devices exist, are free and are all on one host,
    /// which is returned (the VM must run there); no device is named twice.
    fn check_device_claims(&self, claims: &DeviceClaims) -> Result<Option<String>, ErrorCode> {
        for (s, _) in &claims.pci_specs {
            if !self.pci_device_specs.iter().any(|x| &x.uuid == s) {
                return Err(arg_not_found("pciDeviceSpec", s, "PciDeviceSpecVO"));
            }
        }
        for (s, _) in &claims.mdev_specs {
            if !self.mdev_device_specs.iter().any(|x| &x.uuid == s) {
                return Err(arg_not_found("mdevDeviceSpec", s, "MdevDeviceSpecVO"));
            }
        }
        let mut pinned: Option<String> = None;
        let mut pin = |h: &str, what: &str| -> Result<(), ErrorCode> {
            match &pinned {
                Some(p) if p != h => Err(ErrorCode::operation(format!(
                    "{what} is on host[uuid:{h}] but other requested devices are on host[uuid:{p}]"
                ))),
                _ => {
                    pinned = Some(h.to_string());
                    Ok(())
                }
            }
        };
        for u in &claims.pci {
            let d = self
                .pci_devices
                .iter()
                .find(|d| &d.uuid == u)
                .ok_or_else(|| arg_not_found("pciDevice", u, "PciDeviceVO"))?;
            if !pci_passthrough_free(d) {
                return Err(ErrorCode::operation(format!(
                    "pci device[uuid:{u}] is not available: status[{}] vmInstanceUuid[{}] virtStatus[{}]",
                    d.status,
                    d.vm_instance_uuid.as_deref().unwrap_or("null"),
                    d.virt_status
                )));
            }
            pin(&d.host_uuid, &format!("pci device[uuid:{u}]"))?;
        }
        for u in &claims.mdev {
            let d = self
                .mdev_devices
                .iter()
                .find(|d| &d.uuid == u)
                .ok_or_else(|| arg_not_found("mdevDevice", u, "MdevDeviceVO"))?;
            if d.vm_instance_uuid.is_some() || d.state != "Enabled" {
                return Err(ErrorCode::operation(format!(
                    "mdev device[uuid:{u}] is already attached to vm[uuid:{}]",
                    d.vm_instance_uuid.as_deref().unwrap_or("null")
                )));
            }
            pin(&d.host_uuid, &format!("mdev device[uuid:{u}]"))?;
        }
        if claims.pci.iter().collect::<HashSet<_>>().len() != claims.pci.len()
            || claims.mdev.iter().collect::<HashSet<_>>().len() != claims.mdev.len()
        {
            return Err(ErrorCode::invalid_argument(
                "the same device is requested twice",
            ));
        }
        Ok(pinned)
    }

    /// Picks the host and the root volume's primary storage; the L3s must be in the host's zone.
    fn place_new_vm(
        &self,
        p: &CreateVmParams,
        plan: &CreateVmPlan,
    ) -> Result<VmPlacement, ErrorCode> {
        let CreateVmPlan {
            strategy,
            arch,
            cpu,
            mem,
            l3s,
            claims,
            ..
        } = plan;
        // Placement: JustCreate allocates no host; the others start the VM (CreateStopped then
        // cold-stops it) so they need one.
        let host = if *strategy == "JustCreate"
            && claims.pci.is_empty()
            && claims.pci_specs.is_empty()
            && claims.mdev.is_empty()
            && claims.mdev_specs.is_empty()
        {
            None
        } else {
            let req = PlacementReq {
                arch: arch.clone(),
                cpu: *cpu,
                mem: *mem,
                zone: p.zone_uuid.as_deref(),
                cluster: p.cluster_uuid.as_deref(),
                host: p.host_uuid.as_deref(),
                pinned: plan.pinned.clone(),
                prefer: None,
                pci_specs: claims.pci_specs.clone(),
                mdev_specs: claims.mdev_specs.clone(),
            };
            Some(self.place(&req)?)
        };
        let host_rec = host
            .as_ref()
            .and_then(|h| self.hosts.iter().find(|x| &x.uuid == h))
            .cloned();
        for l in l3s {
            if let Some(h) = &host_rec {
                if l.zone_uuid != h.zone_uuid {
                    return Err(ErrorCode::operation(format!(
                        "l3 network[uuid:{}] is not in the zone of host[uuid:{}]",
                        l.uuid, h.uuid
                    )));
                }
            }
        }
        let ps = match &p.primary_storage_uuid_for_root_volume {
            Some(ps) => self
                .primary_storages
                .iter()
                .find(|x| &x.uuid == ps)
                .ok_or_else(|| {
                    arg_not_found("primaryStorageUuidForRootVolume", ps, "PrimaryStorageVO")
                })?
                .uuid
                .clone(),
            None => self
                .primary_storages
                .iter()
                .find(|x| match &host_rec {
                    Some(h) => x.attached_cluster_uuids.contains(&h.cluster_uuid),
                    None => true,
                })
                .map(|x| x.uuid.clone())
                .ok_or_else(|| {
                    ErrorCode::operation("no primary storage available for the root volume")
                })?,
        };
        Ok(VmPlacement { host, host_rec, ps })
    }

    /// One NIC per L3, in order, each with its static IP or the first free one. Bumps the NIC
    /// counter only when all succeed, so a failed create leaves the libvirt names unchanged.
    fn allocate_nics(
        &mut self,
        l3s: &[L3Network],
        static_ips: &[(String, String)],
        uuid: &str,
    ) -> Result<Vec<VmNic>, ErrorCode> {
        let mut taken = HashSet::new();
        let mut nics = Vec::new();
        for (i, l) in l3s.iter().enumerate() {
            let wanted = static_ips
                .iter()
                .find(|(x, _)| *x == l.uuid)
                .map(|(_, ip)| ip.as_str());
            let (ip, range) = self.allocate_ip(l, wanted, &taken)?;
            taken.insert(ip);
            let nic_uuid = new_uuid();
            let b = uuid::Uuid::parse_str(&nic_uuid)
                .map(|u| *u.as_bytes())
                .unwrap_or_default();
            nics.push(VmNic {
                uuid: nic_uuid,
                vm_instance_uuid: uuid.into(),
                l3_network_uuid: l.uuid.clone(),
                ip: Some(ip.to_string()),
                mac: format!(
                    "fa:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    b[0], b[1], b[2], b[3], b[4]
                ),
                netmask: Some(range.netmask.clone()),
                gateway: Some(range.gateway.clone()),
                device_id: i as u32,
                internal_name: format!("vnic{}.{i}", self.nic_counter + 1),
                ..Default::default()
            });
        }
        self.nic_counter += 1;
        Ok(nics)
    }

    /// Claims the named devices and, on the chosen host, the first free ones of each claimed spec.
    fn claim_create_devices(&mut self, claims: &DeviceClaims, host: Option<&str>, uuid: &str) {
        let mut pci = claims.pci.clone();
        let mut mdev = claims.mdev.clone();
        if let Some(h) = &host {
            for (s, n) in &claims.pci_specs {
                let free: Vec<String> = self
                    .free_pci_on(h, s)
                    .into_iter()
                    .filter(|d| !pci.contains(d))
                    .take(*n)
                    .collect();
                pci.extend(free);
            }
            for (s, n) in &claims.mdev_specs {
                let free: Vec<String> = self
                    .free_mdev_on(h, s)
                    .into_iter()
                    .filter(|d| !mdev.contains(d))
                    .take(*n)
                    .collect();
                mdev.extend(free);
            }
        }
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| pci.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(uuid.into());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }
        for d in self
            .mdev_devices
            .iter_mut()
            .filter(|d| mdev.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(uuid.into());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }
    }
}

/// The request's own fields, checked before anything is looked up: `resourceUuid` format,
/// name, strategy and type. Returns the name, the strategy and the VM type.
fn check_create_fields(p: &CreateVmParams) -> Result<(String, &str, &str), ErrorCode> {
    check_resource_uuid(p.resource_uuid.as_deref())?;
    let name = p.name.clone().unwrap_or_default();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ErrorCode::invalid_argument(
            "field[name] of message[APICreateVmInstanceMsg] is mandatory and at most 255 characters",
        ));
    }
    let strategy = p.strategy.as_deref().unwrap_or("InstantStart");
    if !matches!(strategy, "InstantStart" | "JustCreate" | "CreateStopped") {
        return Err(ErrorCode::invalid_argument(format!(
            "strategy[{strategy}] is not one of [InstantStart, JustCreate, CreateStopped]"
        )));
    }
    let vm_type = p.type_.as_deref().unwrap_or("UserVm");
    if !matches!(vm_type, "UserVm" | "ApplianceVm") {
        return Err(ErrorCode::invalid_argument(format!(
            "type[{vm_type}] is invalid"
        )));
    }
    Ok((name, strategy, vm_type))
}

/// The architecture (the image's unless given) must be one ZStack knows, and `rootDiskSize`
/// must not be below the image's size (ISOs aside).
fn create_vm_arch(p: &CreateVmParams, image: &Image) -> Result<String, ErrorCode> {
    let arch = p
        .architecture
        .clone()
        .unwrap_or_else(|| image.architecture.clone());
    if !matches!(
        arch.as_str(),
        "x86_64" | "aarch64" | "mips64el" | "loongarch64"
    ) {
        return Err(ErrorCode::invalid_argument(format!(
            "architecture[{arch}] is not one of [x86_64, aarch64, mips64el, loongarch64]"
        )));
    }
    if let Some(rd) = p.root_disk_size {
        if rd < image.size && image.media_type != "ISO" {
            return Err(ErrorCode::invalid_argument(format!(
                "rootDiskSize[{rd}] is smaller than the image's size[{}]",
                image.size
            )));
        }
    }
    Ok(arch)
}

/// The new VM's inventory with its root volume: Starting (on its host) or, for JustCreate,
/// Created (on none).
fn new_vm_inventory(
    p: &CreateVmParams,
    plan: CreateVmPlan,
    uuid: String,
    placement: VmPlacement,
    nics: Vec<VmNic>,
) -> VmInstance {
    let CreateVmPlan {
        name,
        strategy,
        vm_type,
        image,
        cpu,
        mem,
        offering,
        l3s,
        default_l3,
        arch,
        ..
    } = plan;
    let VmPlacement { host, host_rec, ps } = placement;
    let root_uuid = new_uuid();
    let root = Volume {
        uuid: root_uuid.clone(),
        name: format!("ROOT-for-{name}"),
        description: Some(format!("Root volume for VM[uuid:{uuid}]")),
        primary_storage_uuid: Some(ps),
        vm_instance_uuid: Some(uuid.clone()),
        root_image_uuid: Some(image.uuid.clone()),
        install_path: format!(
            "/zstack_ps/rootVolumes/acct-admin/vol-{root_uuid}/{root_uuid}.qcow2"
        ),
        format: if image.format == "iso" {
            "qcow2".into()
        } else {
            image.format.clone()
        },
        size: p.root_disk_size.unwrap_or(image.size),
        actual_size: image.actual_size,
        ..Default::default()
    };
    let state = match strategy {
        "JustCreate" => "Created",
        _ => "Starting",
    };
    VmInstance {
        uuid: uuid.clone(),
        name,
        description: p.description.clone(),
        zone_uuid: host_rec
            .as_ref()
            .map(|h| h.zone_uuid.clone())
            .or_else(|| p.zone_uuid.clone())
            .or_else(|| Some(l3s[0].zone_uuid.clone())),
        cluster_uuid: host_rec.as_ref().map(|h| h.cluster_uuid.clone()),
        host_uuid: if state == "Starting" {
            host.clone()
        } else {
            None
        },
        last_host_uuid: None,
        image_uuid: Some(image.uuid.clone()),
        instance_offering_uuid: offering,
        root_volume_uuid: Some(root_uuid),
        default_l3_network_uuid: Some(default_l3),
        platform: Some(p.platform.clone().unwrap_or_else(|| image.platform.clone())),
        architecture: Some(arch),
        guest_os_type: p
            .guest_os_type
            .clone()
            .or_else(|| image.guest_os_type.clone()),
        type_: vm_type.into(),
        cpu_num: cpu,
        memory_size: mem,
        allocator_strategy: Some("LeastVmPreferredHostAllocatorStrategy".into()),
        state: state.into(),
        vm_nics: nics,
        all_volumes: vec![root],
        ..Default::default()
    }
}

/// Java's `Base64.getDecoder()` accepts missing padding; so do we.
fn lenient_b64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// RFC 1123: at most 253 characters of dot-separated labels, each 1 to 63 letters, digits or
/// inner hyphens.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `<specUuid>::<number>` of a `pciDeviceSpec::` / `mdevDeviceSpec::` tag.
fn parse_spec_claim(tag: &str, rest: &str) -> Result<(String, usize), ErrorCode> {
    let (spec, n) = rest.split_once("::").ok_or_else(|| {
        ErrorCode::invalid_argument(format!(
            "system tag[{tag}] must be <prefix>::<specUuid>::<number>"
        ))
    })?;
    let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ErrorCode::invalid_argument(format!(
            "system tag[{tag}]: the number must be a positive integer"
        ))
    })?;
    Ok((spec.to_string(), n))
}
