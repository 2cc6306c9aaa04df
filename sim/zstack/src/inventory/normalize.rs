//! Normalizing a fixture: derived uuids, name references resolved, defaults computed, and the
//! consistency checks that keep a hand-written fixture from seeding an impossible cloud.

use super::{derived_uuid, is_hex32, Inventory};
use crate::error::SimError;
use crate::model::*;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// `(uuid, name)` of every record of one kind: what a reference by name or uuid resolves against.
type Names = Vec<(String, String)>;

impl Inventory {
    /// Fills derived uuids, resolves name references, computes defaults (capacity, CIDR, refs)
    /// and checks consistency. Idempotent, so a normalized inventory round-trips through YAML.
    ///
    /// Kinds go in dependency order (a host needs its cluster resolved, a PCI device its host
    /// and spec), and each step hands the `(uuid, name)` lists it settled to the later ones.
    pub fn normalize(&mut self) -> Result<(), SimError> {
        let (zones, clusters, hosts) = self.normalize_compute()?;
        let bss = self.normalize_storages(&zones, &clusters)?;
        self.normalize_images(&bss)?;
        self.normalize_l3_networks(&zones)?;
        let pcis = self.normalize_pci(&hosts)?;
        self.normalize_mdev(&hosts, &pcis)?;
        self.normalize_identities()?;
        self.check_unique_uuids()
    }

    /// Zones, clusters (each in a zone) and hosts (each in a cluster, whose zone and
    /// architecture it inherits; capacity defaults to the core count).
    fn normalize_compute(&mut self) -> Result<(Names, Names, Names), SimError> {
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
        Ok((zones, clusters, hosts))
    }

    /// Primary storages (attached to every cluster of their zone unless listed) and backup
    /// storages (serving every zone unless listed).
    fn normalize_storages(
        &mut self,
        zones: &[(String, String)],
        clusters: &[(String, String)],
    ) -> Result<Names, SimError> {
        for p in &mut self.primary_storages {
            fill(&mut p.uuid, "primary-storage", &p.name)?;
            p.zone_uuid = resolve_or_only(
                "zone",
                &format!("primary storage {}", p.name),
                &p.zone_uuid,
                zones,
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
                        clusters,
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
                    *z = resolve("zone", &format!("backup storage {}", b.name), z, zones)?;
                }
            }
        }
        let bss: Vec<_> = self
            .backup_storages
            .iter()
            .map(|b| (b.uuid.clone(), b.name.clone()))
            .collect();
        Ok(bss)
    }

    /// Images (stored on every backup storage unless listed) and instance offerings.
    fn normalize_images(&mut self, bss: &[(String, String)]) -> Result<(), SimError> {
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
                    bss,
                )?;
                if r.install_path.is_empty() {
                    r.install_path = format!("zstore://{}/{}", i.uuid, i.name);
                }
            }
        }
        for o in &mut self.instance_offerings {
            fill(&mut o.uuid, "instance-offering", &o.name)?;
        }
        Ok(())
    }

    /// L3 networks: zone, synthetic L2, IP ranges (each one subnet; CIDR and prefix computed)
    /// and the network services' provider.
    fn normalize_l3_networks(&mut self, zones: &[(String, String)]) -> Result<(), SimError> {
        for l in &mut self.l3_networks {
            fill(&mut l.uuid, "l3-network", &l.name)?;
            l.zone_uuid = resolve_or_only("zone", &format!("l3 {}", l.name), &l.zone_uuid, zones)?;
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
        Ok(())
    }

    /// PCI device specs, and PCI devices (on a host; vendor and device data default to the
    /// spec's).
    fn normalize_pci(&mut self, hosts: &[(String, String)]) -> Result<Names, SimError> {
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
                hosts,
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
        Ok(pcis)
    }

    /// mdev (vGPU) specs, and mdev devices (on a host, carved from a PCI device).
    fn normalize_mdev(
        &mut self,
        hosts: &[(String, String)],
        pcis: &[(String, String)],
    ) -> Result<(), SimError> {
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
                hosts,
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
                    pcis,
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
        Ok(())
    }

    /// Extra accounts, and AccessKeys (owned by `admin` unless they say otherwise).
    fn normalize_identities(&mut self) -> Result<(), SimError> {
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
        Ok(())
    }

    /// Every uuid must be unique across kinds: resourceUuid conflicts are checked globally.
    fn check_unique_uuids(&self) -> Result<(), SimError> {
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

/// An inconsistent fixture.
fn bad(m: String) -> SimError {
    SimError::Inventory(m)
}

/// Gives a record without a uuid the one derived from its kind and name; a given uuid must be
/// ZStack-shaped.
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

/// The uuid of the record a reference names, by uuid first, then by name.
fn resolve(kind: &str, what: &str, r: &str, all: &[(String, String)]) -> Result<String, SimError> {
    all.iter()
        .find(|(u, _)| u == r)
        .or_else(|| all.iter().find(|(_, n)| n == r))
        .map(|(u, _)| u.clone())
        .ok_or_else(|| SimError::Inventory(format!("{what}: no {kind} named {r:?}")))
}

/// References left empty default to "the only one" when there is exactly one candidate.
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
