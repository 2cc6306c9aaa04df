//! Seed fixtures: what exists in the simulated cloud before any API call.
//!
//! An [`Inventory`] lists records in the wire shape of [`crate::model`]; every field defaults, uuids
//! may be omitted (they are derived from names, so a fixture gives stable uuids run after run)
//! and references (`zoneUuid`, `clusterUuid`, `hostUuid`, `pciSpecUuid`, ...) may name the target
//! instead of giving its uuid. [`Inventory::normalize`] resolves all that and checks consistency.

use crate::error::SimError;
use crate::model::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;

const GIB: u64 = 1 << 30;

/// An extra login account (the admin account comes from [`crate::SimConfig::admin_account`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AccountFixture {
    /// 32-hex uuid (derived from the name when empty).
    pub uuid: String,
    /// Login name.
    pub name: String,
    /// Plain-text password; clients send its SHA-512 hex.
    pub password: String,
}

/// An AccessKey pair for `Authorization: ZStack <id>:<signature>` requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessKeyFixture {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `AccessKeySecret` (the HMAC-SHA1 key).
    pub access_key_secret: String,
    /// Owning account, by name or uuid (`admin` when empty).
    pub account: String,
}

/// The seeded resources of a simulated ZStack. Loadable from YAML with the same shape
/// [`Inventory::default_seed`] serializes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Inventory {
    /// Zones.
    pub zones: Vec<Zone>,
    /// Clusters (carry the architecture of their hosts).
    pub clusters: Vec<Cluster>,
    /// KVM hosts with their CPU/memory capacity.
    pub hosts: Vec<Host>,
    /// Primary storages.
    pub primary_storages: Vec<PrimaryStorage>,
    /// Backup storages.
    pub backup_storages: Vec<BackupStorage>,
    /// Images.
    pub images: Vec<Image>,
    /// Instance offerings.
    pub instance_offerings: Vec<InstanceOffering>,
    /// L3 networks with their IP ranges and network services.
    pub l3_networks: Vec<L3Network>,
    /// PCI device specs.
    pub pci_device_specs: Vec<PciDeviceSpec>,
    /// PCI devices.
    pub pci_devices: Vec<PciDevice>,
    /// vGPU profiles.
    pub mdev_device_specs: Vec<MdevDeviceSpec>,
    /// vGPU slices.
    pub mdev_devices: Vec<MdevDevice>,
    /// Extra accounts besides the admin.
    pub accounts: Vec<AccountFixture>,
    /// AccessKey pairs.
    pub access_keys: Vec<AccessKeyFixture>,
}

/// Derives a stable ZStack-format uuid (version 5, so it also passes the `resourceUuid` check)
/// from a kind and a name: the same fixture gives the same uuids on every start.
pub fn derived_uuid(kind: &str, name: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6b70_726f_765f_7a73_7461_636b_5f73_696d);
    uuid::Uuid::new_v5(&NS, format!("{kind}/{name}").as_bytes())
        .simple()
        .to_string()
}

/// True for a 32-char lowercase hex string (the only uuid shape ZStack emits).
pub fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Inventory {
    /// The default seeded cloud: one zone, an aarch64 cluster of 4 hosts (48 cores / 256 GiB;
    /// hosts 1 and 2 carry 4 NVIDIA A100 each, host 3 two mdev-split T4s), an x86_64 cluster of
    /// 2 hosts (32 cores / 128 GiB), arm64 + amd64 Ubuntu images, 4 offerings, the `k8s-net` L3
    /// with DHCP + Userdata, storages and one AccessKey pair for the admin account.
    pub fn default_seed() -> Self {
        let zone = Zone {
            name: "zone-1".into(),
            description: Some("kprov simulator zone".into()),
            ..Default::default()
        };
        let clusters = vec![
            Cluster {
                name: "arm-cluster".into(),
                zone_uuid: "zone-1".into(),
                architecture: "aarch64".into(),
                ..Default::default()
            },
            Cluster {
                name: "x86-cluster".into(),
                zone_uuid: "zone-1".into(),
                architecture: "x86_64".into(),
                ..Default::default()
            },
        ];
        let mut hosts = Vec::new();
        for i in 1..=4 {
            hosts.push(Host {
                name: format!("arm-host-{i}"),
                cluster_uuid: "arm-cluster".into(),
                management_ip: format!("192.0.2.{}", 10 + i),
                cpu_num: 48,
                cpu_sockets: 1,
                total_memory_capacity: 256 * GIB,
                ..Default::default()
            });
        }
        for i in 1..=2 {
            hosts.push(Host {
                name: format!("x86-host-{i}"),
                cluster_uuid: "x86-cluster".into(),
                management_ip: format!("192.0.2.{}", 20 + i),
                cpu_num: 32,
                cpu_sockets: 2,
                total_memory_capacity: 128 * GIB,
                ..Default::default()
            });
        }
        let images = vec![
            Image {
                name: "ubuntu-22.04-arm64".into(),
                architecture: "aarch64".into(),
                guest_os_type: Some("Ubuntu 22.04".into()),
                url: Some("http://images.invalid/ubuntu-22.04-server-cloudimg-arm64.img".into()),
                ..Default::default()
            },
            Image {
                name: "ubuntu-22.04-amd64".into(),
                architecture: "x86_64".into(),
                guest_os_type: Some("Ubuntu 22.04".into()),
                url: Some("http://images.invalid/ubuntu-22.04-server-cloudimg-amd64.img".into()),
                ..Default::default()
            },
        ];
        let offering = |name: &str, cpu: u64, mem_gib: u64, key: i64| InstanceOffering {
            name: name.into(),
            cpu_num: cpu,
            memory_size: mem_gib * GIB,
            sort_key: key,
            ..Default::default()
        };
        let instance_offerings = vec![
            offering("small", 2, 4, 1),
            offering("medium", 4, 8, 2),
            offering("large", 8, 16, 3),
            offering("xlarge", 16, 64, 4),
        ];
        let l3 = L3Network {
            name: "k8s-net".into(),
            zone_uuid: "zone-1".into(),
            dns: vec!["172.20.0.1".into()],
            ip_ranges: vec![IpRange {
                name: "k8s-net-range".into(),
                start_ip: "172.20.0.10".into(),
                end_ip: "172.20.3.250".into(),
                netmask: "255.255.252.0".into(),
                gateway: "172.20.0.1".into(),
                ..Default::default()
            }],
            network_services: ["DHCP", "Userdata"]
                .iter()
                .map(|t| NetworkServiceRef {
                    network_service_type: (*t).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let a100 = PciDeviceSpec {
            name: "NVIDIA A100 PCIe 40GB".into(),
            vendor_id: "10de".into(),
            device_id: "20f1".into(),
            subvendor_id: Some("10de".into()),
            subdevice_id: Some("145f".into()),
            vendor: "NVIDIA Corporation".into(),
            device: "GA100 [A100 PCIe 40GB]".into(),
            type_: "GPU_3D_Controller".into(),
            ram_size: Some(40 * GIB),
            ..Default::default()
        };
        let t4 = PciDeviceSpec {
            name: "NVIDIA Tesla T4".into(),
            vendor_id: "10de".into(),
            device_id: "1eb8".into(),
            subvendor_id: Some("10de".into()),
            subdevice_id: Some("12a2".into()),
            vendor: "NVIDIA Corporation".into(),
            device: "TU104GL [Tesla T4]".into(),
            type_: "GPU_3D_Controller".into(),
            ram_size: Some(16 * GIB),
            max_part_num: Some(4),
            ..Default::default()
        };
        let mut pci_devices = Vec::new();
        for host in ["arm-host-1", "arm-host-2"] {
            for (i, bus) in ["01", "41", "81", "c1"].iter().enumerate() {
                pci_devices.push(PciDevice {
                    name: format!("{host}-gpu{i}"),
                    host_uuid: host.into(),
                    pci_spec_uuid: Some(a100.name.clone()),
                    pci_device_address: format!("0000:{bus}:00.0"),
                    iommu_group: Some(format!("{}", 10 + i)),
                    ..Default::default()
                });
            }
        }
        let mut mdev_devices = Vec::new();
        for (i, bus) in ["3b", "af"].iter().enumerate() {
            let name = format!("arm-host-3-t4-{i}");
            pci_devices.push(PciDevice {
                name: name.clone(),
                host_uuid: "arm-host-3".into(),
                pci_spec_uuid: Some(t4.name.clone()),
                pci_device_address: format!("0000:{bus}:00.0"),
                virt_status: "VFIO_MDEV_VIRTUALIZED".into(),
                iommu_group: Some(format!("{}", 30 + i)),
                ..Default::default()
            });
            for part in 0..4 {
                mdev_devices.push(MdevDevice {
                    name: format!("{name}-mdev{part}"),
                    host_uuid: "arm-host-3".into(),
                    parent_uuid: Some(name.clone()),
                    mdev_spec_uuid: Some("GRID T4-4Q".into()),
                    ..Default::default()
                });
            }
        }
        let mut inv = Inventory {
            zones: vec![zone],
            clusters,
            hosts,
            primary_storages: vec![PrimaryStorage {
                name: "ps-1".into(),
                total_capacity: 8 << 40,
                available_capacity: 8 << 40,
                ..Default::default()
            }],
            backup_storages: vec![BackupStorage {
                name: "bs-1".into(),
                url: "/zstack_bs".into(),
                total_capacity: 4 << 40,
                available_capacity: 4 << 40,
                ..Default::default()
            }],
            images,
            instance_offerings,
            l3_networks: vec![l3],
            pci_device_specs: vec![a100, t4],
            pci_devices,
            mdev_device_specs: vec![MdevDeviceSpec {
                name: "GRID T4-4Q".into(),
                specification: Some("{\"framebuffer\":\"4GB\",\"maxInstance\":4}".into()),
                ..Default::default()
            }],
            mdev_devices,
            accounts: Vec::new(),
            access_keys: vec![AccessKeyFixture {
                access_key_id: "AKSIMKPROVZSTACK0001".into(),
                access_key_secret: "SimSecretKeyForKprovZstackSimulator00001".into(),
                account: "admin".into(),
            }],
        };
        inv.normalize()
            .expect("the built-in seed inventory is consistent");
        inv
    }

    /// Parses a YAML fixture (the shape of `serde_yaml::to_string(&Inventory::default_seed())`)
    /// and normalizes it.
    pub fn from_yaml(s: &str) -> Result<Self, SimError> {
        let mut inv: Inventory = serde_yaml::from_str(s)?;
        inv.normalize()?;
        Ok(inv)
    }

    /// Fills derived uuids, resolves name references, computes defaults (capacity, CIDR, refs)
    /// and checks consistency. Idempotent, so a normalized inventory round-trips through YAML.
    pub fn normalize(&mut self) -> Result<(), SimError> {
        let bad = |m: String| SimError::Inventory(m);
        fn fill(uuid: &mut String, kind: &str, name: &str) -> Result<(), SimError> {
            if uuid.is_empty() {
                if name.is_empty() {
                    return Err(SimError::Inventory(format!(
                        "a {kind} has neither uuid nor name"
                    )));
                }
                *uuid = derived_uuid(kind, name);
            } else if !is_hex32(uuid) {
                return Err(SimError::Inventory(format!(
                    "{kind} {name:?}: uuid {uuid:?} is not 32 lowercase hex characters"
                )));
            }
            Ok(())
        }
        fn resolve(
            kind: &str,
            what: &str,
            r: &str,
            all: &[(String, String)],
        ) -> Result<String, SimError> {
            all.iter()
                .find(|(u, _)| u == r)
                .or_else(|| all.iter().find(|(_, n)| n == r))
                .map(|(u, _)| u.clone())
                .ok_or_else(|| SimError::Inventory(format!("{what}: no {kind} named {r:?}")))
        }
        // References left empty default to "the only one" when there is exactly one candidate.
        fn resolve_or_only(
            kind: &str,
            what: &str,
            r: &str,
            all: &[(String, String)],
        ) -> Result<String, SimError> {
            if r.is_empty() {
                match all {
                    [(u, _)] => Ok(u.clone()),
                    _ => Err(SimError::Inventory(format!(
                        "{what}: no {kind} given and there is not exactly one"
                    ))),
                }
            } else {
                resolve(kind, what, r, all)
            }
        }

        for z in &mut self.zones {
            fill(&mut z.uuid, "zone", &z.name)?;
        }
        let zones: Vec<_> = self
            .zones
            .iter()
            .map(|z| (z.uuid.clone(), z.name.clone()))
            .collect();
        for c in &mut self.clusters {
            fill(&mut c.uuid, "cluster", &c.name)?;
            c.zone_uuid =
                resolve_or_only("zone", &format!("cluster {}", c.name), &c.zone_uuid, &zones)?;
        }
        let clusters: Vec<_> = self
            .clusters
            .iter()
            .map(|c| (c.uuid.clone(), c.name.clone()))
            .collect();
        for h in &mut self.hosts {
            fill(&mut h.uuid, "host", &h.name)?;
            h.cluster_uuid = resolve_or_only(
                "cluster",
                &format!("host {}", h.name),
                &h.cluster_uuid,
                &clusters,
            )?;
            let cluster = self
                .clusters
                .iter()
                .find(|c| c.uuid == h.cluster_uuid)
                .expect("resolved above");
            h.zone_uuid = cluster.zone_uuid.clone();
            if h.architecture.is_empty() {
                h.architecture = cluster.architecture.clone();
            }
            if h.total_cpu_capacity == 0 {
                h.total_cpu_capacity = h.cpu_num;
            }
            if h.cpu_num == 0 {
                h.cpu_num = h.total_cpu_capacity;
            }
            h.available_cpu_capacity = h.total_cpu_capacity;
            h.available_memory_capacity = h.total_memory_capacity;
        }
        let hosts: Vec<_> = self
            .hosts
            .iter()
            .map(|h| (h.uuid.clone(), h.name.clone()))
            .collect();
        for p in &mut self.primary_storages {
            fill(&mut p.uuid, "primary-storage", &p.name)?;
            p.zone_uuid = resolve_or_only(
                "zone",
                &format!("primary storage {}", p.name),
                &p.zone_uuid,
                &zones,
            )?;
            if p.attached_cluster_uuids.is_empty() {
                p.attached_cluster_uuids = self
                    .clusters
                    .iter()
                    .filter(|c| c.zone_uuid == p.zone_uuid)
                    .map(|c| c.uuid.clone())
                    .collect();
            } else {
                for c in &mut p.attached_cluster_uuids {
                    *c = resolve(
                        "cluster",
                        &format!("primary storage {}", p.name),
                        c,
                        &clusters,
                    )?;
                }
            }
        }
        for b in &mut self.backup_storages {
            fill(&mut b.uuid, "backup-storage", &b.name)?;
            if b.attached_zone_uuids.is_empty() {
                b.attached_zone_uuids = zones.iter().map(|(u, _)| u.clone()).collect();
            } else {
                for z in &mut b.attached_zone_uuids {
                    *z = resolve("zone", &format!("backup storage {}", b.name), z, &zones)?;
                }
            }
        }
        let bss: Vec<_> = self
            .backup_storages
            .iter()
            .map(|b| (b.uuid.clone(), b.name.clone()))
            .collect();
        for i in &mut self.images {
            fill(&mut i.uuid, "image", &i.name)?;
            if i.backup_storage_refs.is_empty() {
                i.backup_storage_refs = bss
                    .iter()
                    .map(|(u, _)| ImageBackupStorageRef {
                        backup_storage_uuid: u.clone(),
                        ..Default::default()
                    })
                    .collect();
            }
            for r in &mut i.backup_storage_refs {
                r.image_uuid = i.uuid.clone();
                r.backup_storage_uuid = resolve(
                    "backup storage",
                    &format!("image {}", i.name),
                    &r.backup_storage_uuid,
                    &bss,
                )?;
                if r.install_path.is_empty() {
                    r.install_path = format!("zstore://{}/{}", i.uuid, i.name);
                }
            }
        }
        for o in &mut self.instance_offerings {
            fill(&mut o.uuid, "instance-offering", &o.name)?;
        }
        for l in &mut self.l3_networks {
            fill(&mut l.uuid, "l3-network", &l.name)?;
            l.zone_uuid = resolve_or_only("zone", &format!("l3 {}", l.name), &l.zone_uuid, &zones)?;
            if l.l2_network_uuid.is_empty() {
                l.l2_network_uuid = derived_uuid("l2-network", &l.name);
            }
            for (n, r) in l.ip_ranges.iter_mut().enumerate() {
                if r.name.is_empty() {
                    r.name = format!("{}-range-{n}", l.name);
                }
                fill(&mut r.uuid, "ip-range", &format!("{}/{}", l.name, r.name))?;
                r.l3_network_uuid = l.uuid.clone();
                let parse = |s: &str, what: &str| {
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| bad(format!("ip range {}: bad {what} {s:?}", r.name)))
                };
                let start = u32::from(parse(&r.start_ip, "startIp")?);
                let end = u32::from(parse(&r.end_ip, "endIp")?);
                let mask = u32::from(parse(&r.netmask, "netmask")?);
                parse(&r.gateway, "gateway")?;
                if start > end
                    || (start & mask) != (end & mask)
                    || mask.leading_ones() + mask.trailing_zeros() != 32
                {
                    return Err(bad(format!(
                        "ip range {}: {}-{} / {} is not one subnet",
                        r.name, r.start_ip, r.end_ip, r.netmask
                    )));
                }
                r.prefix_len = mask.leading_ones();
                r.network_cidr = format!("{}/{}", Ipv4Addr::from(start & mask), r.prefix_len);
            }
            for s in &mut l.network_services {
                s.l3_network_uuid = l.uuid.clone();
                if s.network_service_provider_uuid.is_empty() {
                    s.network_service_provider_uuid =
                        derived_uuid("network-service-provider", "Flat");
                }
            }
        }
        for s in &mut self.pci_device_specs {
            fill(&mut s.uuid, "pci-device-spec", &s.name)?;
        }
        let specs: Vec<_> = self
            .pci_device_specs
            .iter()
            .map(|s| (s.uuid.clone(), s.name.clone()))
            .collect();
        for d in &mut self.pci_devices {
            d.host_uuid = resolve(
                "host",
                &format!("pci device {}", d.name),
                &d.host_uuid,
                &hosts,
            )?;
            if d.name.is_empty() {
                d.name = format!("pci-{}", d.pci_device_address);
            }
            fill(
                &mut d.uuid,
                "pci-device",
                &format!("{}/{}", d.host_uuid, d.name),
            )?;
            if let Some(spec_ref) = d.pci_spec_uuid.clone() {
                let su = resolve(
                    "pci device spec",
                    &format!("pci device {}", d.name),
                    &spec_ref,
                    &specs,
                )?;
                let spec = self
                    .pci_device_specs
                    .iter()
                    .find(|s| s.uuid == su)
                    .expect("resolved above");
                let or = |v: &mut String, from: &str| {
                    if v.is_empty() {
                        *v = from.to_string();
                    }
                };
                or(&mut d.vendor_id, &spec.vendor_id);
                or(&mut d.device_id, &spec.device_id);
                or(&mut d.vendor, &spec.vendor);
                or(&mut d.device, &spec.device);
                if d.subvendor_id.is_none() {
                    d.subvendor_id = spec.subvendor_id.clone();
                }
                if d.subdevice_id.is_none() {
                    d.subdevice_id = spec.subdevice_id.clone();
                }
                d.type_ = spec.type_.clone();
                d.pci_spec_uuid = Some(su);
            }
        }
        let pcis: Vec<_> = self
            .pci_devices
            .iter()
            .map(|d| (d.uuid.clone(), d.name.clone()))
            .collect();
        for s in &mut self.mdev_device_specs {
            fill(&mut s.uuid, "mdev-device-spec", &s.name)?;
        }
        let mdev_specs: Vec<_> = self
            .mdev_device_specs
            .iter()
            .map(|s| (s.uuid.clone(), s.name.clone()))
            .collect();
        for m in &mut self.mdev_devices {
            m.host_uuid = resolve(
                "host",
                &format!("mdev device {}", m.name),
                &m.host_uuid,
                &hosts,
            )?;
            fill(
                &mut m.uuid,
                "mdev-device",
                &format!("{}/{}", m.host_uuid, m.name),
            )?;
            if let Some(p) = m.parent_uuid.clone() {
                m.parent_uuid = Some(resolve(
                    "pci device",
                    &format!("mdev device {}", m.name),
                    &p,
                    &pcis,
                )?);
            }
            if let Some(s) = m.mdev_spec_uuid.clone() {
                m.mdev_spec_uuid = Some(resolve(
                    "mdev spec",
                    &format!("mdev device {}", m.name),
                    &s,
                    &mdev_specs,
                )?);
            }
        }
        for a in &mut self.accounts {
            fill(&mut a.uuid, "account", &a.name)?;
        }
        for k in &mut self.access_keys {
            if k.access_key_id.is_empty() || k.access_key_secret.is_empty() {
                return Err(bad(
                    "an access key needs accessKeyId and accessKeySecret".into()
                ));
            }
            if k.account.is_empty() {
                k.account = "admin".into();
            }
        }

        // Every uuid must be unique across kinds: resourceUuid conflicts are checked globally.
        let mut seen = HashSet::new();
        let all = self
            .zones
            .iter()
            .map(|x| &x.uuid)
            .chain(self.clusters.iter().map(|x| &x.uuid))
            .chain(self.hosts.iter().map(|x| &x.uuid))
            .chain(self.primary_storages.iter().map(|x| &x.uuid))
            .chain(self.backup_storages.iter().map(|x| &x.uuid))
            .chain(self.images.iter().map(|x| &x.uuid))
            .chain(self.instance_offerings.iter().map(|x| &x.uuid))
            .chain(self.l3_networks.iter().map(|x| &x.uuid))
            .chain(
                self.l3_networks
                    .iter()
                    .flat_map(|l| l.ip_ranges.iter().map(|r| &r.uuid)),
            )
            .chain(self.pci_device_specs.iter().map(|x| &x.uuid))
            .chain(self.pci_devices.iter().map(|x| &x.uuid))
            .chain(self.mdev_device_specs.iter().map(|x| &x.uuid))
            .chain(self.mdev_devices.iter().map(|x| &x.uuid));
        for u in all {
            if !seen.insert(u.clone()) {
                return Err(bad(format!("duplicate uuid {u}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_as_documented() {
        let inv = Inventory::default_seed();
        assert_eq!(inv.zones.len(), 1);
        assert_eq!(inv.hosts.len(), 6);
        let arm: Vec<_> = inv
            .hosts
            .iter()
            .filter(|h| h.architecture == "aarch64")
            .collect();
        assert_eq!(arm.len(), 4);
        assert!(arm
            .iter()
            .all(|h| h.cpu_num == 48 && h.total_memory_capacity == 256 * GIB));
        let a100 = inv
            .pci_devices
            .iter()
            .filter(|d| d.device == "GA100 [A100 PCIe 40GB]")
            .count();
        assert_eq!(a100, 8);
        assert!(inv
            .pci_devices
            .iter()
            .all(|d| d.vendor_id == "10de" && is_hex32(&d.uuid)));
        let r = &inv.l3_networks[0].ip_ranges[0];
        assert_eq!(r.network_cidr, "172.20.0.0/22");
        assert_eq!(r.prefix_len, 22);
        assert_eq!(inv.mdev_devices.len(), 8);
        assert!(inv
            .mdev_devices
            .iter()
            .all(|m| m.parent_uuid.as_deref().is_some_and(is_hex32)));
    }

    #[test]
    fn yaml_round_trip_and_name_references() {
        let inv = Inventory::default_seed();
        let yaml = serde_yaml::to_string(&inv).unwrap();
        assert_eq!(Inventory::from_yaml(&yaml).unwrap(), inv);

        let small = "zones: [{name: z}]\nclusters: [{name: c, architecture: aarch64}]\nhosts: [{name: h, cluster: c}]\n";
        // `cluster` is not a field: serde ignores it, and the only cluster is used.
        let inv = Inventory::from_yaml(small).unwrap();
        assert_eq!(inv.hosts[0].cluster_uuid, inv.clusters[0].uuid);
        assert_eq!(inv.hosts[0].architecture, "aarch64");
        let dangling = "zones: [{name: z}]\nhosts: [{name: h, clusterUuid: nope}]\n";
        assert!(matches!(
            Inventory::from_yaml(dangling),
            Err(SimError::Inventory(_))
        ));
        let bad_range = "zones: [{name: z}]\nl3Networks: [{name: n, ipRanges: [{startIp: 10.0.0.9, endIp: 10.0.0.1, netmask: 255.255.255.0, gateway: 10.0.0.1}]}]\n";
        assert!(Inventory::from_yaml(bad_range).is_err());
    }
}
