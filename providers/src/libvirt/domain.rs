//! The domain (VM) definition of a node: [`DomainParams`] (everything it depends on, pure data)
//! and [`domain_xml`], built from small builders (metadata, OS and firmware, features, CPU,
//! disks, NIC, passed-through devices, console), plus the adapter's choices that feed it
//! (domain type, NIC of the network mode) and [`LibvirtCloud::render_domain_xml`].

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use virt::connect::Connect;

use super::cloud::LibvirtCloud;
use super::xml::*;
use super::PROVIDER;
use super::{cluster_object_name, volume_prefix, DomainType, NetworkMode, USER_NET_HOST_ALIAS};
use crate::{Arch, CloudError, CloudResult, InstanceRequest, MachineSize};

/// A MAC address derived from the instance id (stable across re-creates).
pub fn mac_for(instance_id: &str) -> String {
    let d = Sha256::digest(instance_id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

/// kprov's instance id (32 hex digits) as a UUID string.
pub fn domain_uuid(instance_id: &str) -> String {
    match uuid::Uuid::parse_str(instance_id) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, instance_id.as_bytes())
            .hyphenated()
            .to_string(),
    }
}

/// Direct kernel boot on the libvirt host: kernel path, initrd path, kernel command line.
pub type DirectBootPaths = (String, String, String);

/// How a node's NIC is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// On a libvirt network.
    Network(String),
    /// Restricted user-mode networking with these forwards (guest port → host loopback port).
    User(BTreeMap<u16, u16>),
}

/// Everything the domain XML of one node depends on (pure data: unit-testable).
#[derive(Debug, Clone)]
pub struct DomainParams<'a> {
    /// The instance the domain is for.
    pub req: &'a InstanceRequest,
    /// `kvm`, `qemu` or `test`.
    pub domain_type: String,
    /// x86_64 machine type (`pc` / `q35`).
    pub machine_x86: String,
    /// Pool holding the volumes.
    pub pool: String,
    /// Root disk volume.
    pub root_volume: String,
    /// Seed ISO volume.
    pub seed_volume: String,
    /// Direct kernel boot: kernel path, initrd path (on the libvirt host), command line.
    pub direct_boot: Option<DirectBootPaths>,
    /// How the NIC is made (libvirt network or user-mode).
    pub nic: Nic,
    /// Host PCI devices to pass through.
    pub hostdevs: Vec<PciAddress>,
    /// Console log path on the libvirt host.
    pub console_log: Option<String>,
}

/// vCPUs and MiB of a request.
pub fn shape(req: &InstanceRequest) -> CloudResult<(u32, u64)> {
    match &req.size {
        MachineSize::Shape { cpus, memory_mib } => Ok((*cpus, *memory_mib)),
        MachineSize::Flavor(f) => Err(CloudError::fatal(
            PROVIDER,
            "NoFlavors",
            format!(
                "{}: size {f:?} is a flavor name, but libvirt has no flavors",
                req.name
            ),
            "give the instance group's size as CPU:MEMORY, e.g. 2:4Gi",
        )),
    }
}

/// The typed domain document of a node.
pub fn domain_xml(p: &DomainParams<'_>) -> CloudResult<DomainXml> {
    let req = p.req;
    let (cpus, mem) = shape(req)?;
    let metadata = metadata_xml(req);
    let arm = req.arch == Arch::Arm64;
    let machine = if arm {
        "virt".to_string()
    } else {
        p.machine_x86.clone()
    };
    let pc = machine == "pc" || machine.starts_with("pc-i440fx");
    let uefi = arm && p.direct_boot.is_none();
    let os = os_xml(p, &machine, uefi);
    let features = features_xml(arm, uefi);
    let cpu = cpu_xml(&p.domain_type, arm);
    let (controllers, disks) = disks_xml(p, pc);
    let (interfaces, qemu_commandline) = nic_xml(p, pc);
    let hostdevs = hostdevs_xml(&p.hostdevs);
    let (serials, consoles) = console_xml(p.console_log.as_ref());
    Ok(DomainXml {
        domain_type: p.domain_type.clone(),
        xmlns_qemu: qemu_commandline.as_ref().map(|_| QEMU_NS.to_string()),
        name: req.name.clone(),
        uuid: domain_uuid(&req.id),
        metadata,
        memory: Memory {
            unit: "MiB".into(),
            amount: mem,
        },
        vcpu: cpus,
        os,
        features,
        cpu,
        on_poweroff: "destroy".into(),
        on_reboot: "restart".into(),
        on_crash: "destroy".into(),
        devices: Devices {
            controllers,
            disks,
            interfaces,
            hostdevs,
            serials,
            consoles,
            memballoon: Model {
                model: "none".into(),
            },
        },
        qemu_commandline,
    })
}

/// The `<metadata>` kprov finds its nodes by: cluster, role, instance group, index, id, tags.
fn metadata_xml(req: &InstanceRequest) -> MetadataXml {
    let tag = |k: &str| req.tags.get(k).cloned().unwrap_or_default();
    MetadataXml {
        instance: KprovInstance {
            xmlns: METADATA_NS.into(),
            cluster: req.cluster.clone(),
            role: req.role.as_str().into(),
            instance_group: req.instance_group.clone(),
            index: req.index,
            instance_id: req.id.clone(),
            spec_hash: tag(crate::TAG_SPEC_HASH),
            tags: req
                .tags
                .iter()
                .map(|(k, v)| KprovTag {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        },
    }
}

/// `<os>`: arch and machine; UEFI (arm64 without direct boot) or BIOS; direct kernel boot.
fn os_xml(p: &DomainParams<'_>, machine: &str, uefi: bool) -> Os {
    let req = p.req;
    Os {
        firmware: uefi.then(|| "efi".to_string()),
        os_type: OsType {
            arch: req.arch.machine().into(),
            machine: machine.to_string(),
            kind: "hvm".into(),
        },
        kernel: p.direct_boot.as_ref().map(|d| d.0.clone()),
        initrd: p.direct_boot.as_ref().map(|d| d.1.clone()),
        cmdline: p.direct_boot.as_ref().map(|d| d.2.clone()),
        boot: p.direct_boot.is_none().then(|| Boot { dev: "hd".into() }),
    }
}

/// `<features>`: ACPI (not on arm64 direct boot), APIC on x86, GICv3 on arm64.
fn features_xml(arm: bool, uefi: bool) -> Features {
    if arm {
        Features {
            acpi: uefi.then_some(Empty {}),
            apic: None,
            gic: Some(Gic {
                version: "3".into(),
            }),
        }
    } else {
        Features {
            acpi: Some(Empty {}),
            apic: Some(Empty {}),
            gic: None,
        }
    }
}

/// `<cpu>`: the host's CPU under KVM, an emulated Cortex-A57 for arm64 under TCG.
fn cpu_xml(domain_type: &str, arm: bool) -> Option<Cpu> {
    match (domain_type, arm) {
        ("kvm", _) => Some(Cpu {
            mode: "host-passthrough".into(),
            match_: None,
            model: None,
        }),
        ("qemu", true) => Some(Cpu {
            mode: "custom".into(),
            match_: Some("exact".into()),
            model: Some(CpuModel {
                fallback: "forbid".into(),
                name: "cortex-a57".into(),
            }),
        }),
        _ => None,
    }
}

/// The disk controllers and disks: the root volume (virtio) and the seed ISO cdrom.
fn disks_xml(p: &DomainParams<'_>, pc: bool) -> (Vec<Controller>, Vec<Disk>) {
    // The seed cdrom: IDE on i440fx (the Debian cloud kernel has no AHCI), else virtio-scsi.
    let (cd_dev, cd_bus) = if pc { ("hdc", "ide") } else { ("sda", "scsi") };
    let controllers = if pc {
        vec![]
    } else {
        vec![Controller {
            kind: "scsi".into(),
            model: "virtio-scsi".into(),
        }]
    };
    let disks = vec![
        Disk {
            kind: "volume".into(),
            device: "disk".into(),
            driver: Driver {
                name: "qemu".into(),
                format: "qcow2".into(),
            },
            source: VolumeSource {
                pool: p.pool.clone(),
                volume: p.root_volume.clone(),
            },
            target: Target {
                dev: "vda".into(),
                bus: "virtio".into(),
            },
            readonly: None,
        },
        Disk {
            kind: "volume".into(),
            device: "cdrom".into(),
            driver: Driver {
                name: "qemu".into(),
                format: "raw".into(),
            },
            source: VolumeSource {
                pool: p.pool.clone(),
                volume: p.seed_volume.clone(),
            },
            target: Target {
                dev: cd_dev.into(),
                bus: cd_bus.into(),
            },
            readonly: Some(Empty {}),
        },
    ];
    (controllers, disks)
}

/// The NIC: an `<interface>` on a libvirt network, or QEMU user-mode networking passed on
/// QEMU's command line.
fn nic_xml(p: &DomainParams<'_>, pc: bool) -> (Vec<InterfaceXml>, Option<QemuCommandline>) {
    let mac = mac_for(&p.req.id);
    match &p.nic {
        Nic::Network(n) => (
            vec![InterfaceXml {
                kind: "network".into(),
                mac: Mac { address: mac },
                source: NetworkSource { network: n.clone() },
                model: ModelType {
                    kind: "virtio".into(),
                },
            }],
            None,
        ),
        Nic::User(forwards) => {
            // libvirt 9's <interface type='user'> cannot set restrict=on: the NIC is passed to
            // QEMU directly. An explicit PCI slot, else QEMU takes one libvirt gave a disk.
            let mut netdev = "user,id=kprovnet,restrict=on".to_string();
            for (g, h) in forwards {
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{USER_NET_HOST_ALIAS}:{g}-cmd:nc 127.0.0.1 {h}"
                ));
            }
            let bus = if pc { "pci.0" } else { "pcie.0" };
            let args = vec![
                "-netdev".to_string(),
                netdev,
                "-device".to_string(),
                format!("virtio-net-pci,netdev=kprovnet,mac={mac},bus={bus},addr=0x10"),
            ];
            (
                vec![],
                Some(QemuCommandline {
                    args: args.into_iter().map(|value| QemuArg { value }).collect(),
                }),
            )
        }
    }
}

/// `<hostdev>`s: host PCI devices passed through.
fn hostdevs_xml(addresses: &[PciAddress]) -> Vec<Hostdev> {
    addresses
        .iter()
        .map(|a| Hostdev {
            mode: "subsystem".into(),
            kind: "pci".into(),
            managed: "yes".into(),
            source: HostdevSource { address: a.clone() },
        })
        .collect()
}

/// The serial port (logged to `console_log` when given) and the console on it.
fn console_xml(console_log: Option<&String>) -> (Vec<Serial>, Vec<Console>) {
    let serials = vec![Serial {
        kind: "pty".into(),
        log: console_log.map(|f| Log {
            file: f.clone(),
            append: "off".into(),
        }),
        target: SerialTarget { port: 0 },
    }];
    let consoles = vec![Console {
        kind: "pty".into(),
        target: ConsoleTarget {
            kind: "serial".into(),
            port: 0,
        },
    }];
    (serials, consoles)
}

impl LibvirtCloud {
    /// The domain type for an arch: the configured one, or kvm when the host offers it.
    pub(super) fn domain_type_for(&self, conn: &Connect, arch: Arch) -> String {
        if self.is_test_driver() {
            return "test".into();
        }
        match self.cfg.domain_type {
            DomainType::Kvm => "kvm".into(),
            DomainType::Qemu => "qemu".into(),
            DomainType::Auto => {
                let machine = if arch == Arch::Arm64 {
                    "virt"
                } else {
                    self.cfg.machine_x86.as_str()
                };
                match conn.domain_capabilities(
                    None,
                    Some(arch.machine()),
                    Some(machine),
                    Some("kvm"),
                    0,
                ) {
                    Ok(_) => "kvm".into(),
                    Err(_) => "qemu".into(),
                }
            }
        }
    }

    /// The NIC of a node of `cluster` in the configured network mode.
    pub(super) fn nic_for(&self, cluster: &str) -> Nic {
        match &self.cfg.network {
            NetworkMode::Nat { .. } => Nic::Network(cluster_object_name(cluster)),
            NetworkMode::Existing(n) => Nic::Network(n.clone()),
            NetworkMode::User { forwards } => Nic::User(forwards.clone()),
        }
    }

    /// The XML kprov would define for a request (for `kprov` debugging and tests); does not
    /// touch pools or volumes except to read the pool's path.
    pub async fn render_domain_xml(&self, req: &InstanceRequest) -> CloudResult<String> {
        let req = req.clone();
        let this = self.shallow();
        self.with_conn(move |conn| {
            let prefix = volume_prefix(&req.cluster);
            let nic = this.nic_for(&req.cluster);
            let direct = this
                .cfg
                .images
                .get(&req.arch)
                .and_then(|i| i.direct_boot.as_ref())
                .map(|d| {
                    (
                        d.kernel.display().to_string(),
                        d.initrd.display().to_string(),
                        d.cmdline.clone(),
                    )
                });
            let p = DomainParams {
                req: &req,
                domain_type: this.domain_type_for(conn, req.arch),
                machine_x86: this.cfg.machine_x86.clone(),
                pool: this.pool_name(&req.cluster),
                root_volume: format!("{prefix}{}.root.qcow2", req.name),
                seed_volume: format!("{prefix}{}.seed.iso", req.name),
                direct_boot: direct,
                nic,
                hostdevs: vec![],
                console_log: None,
            };
            to_xml(&domain_xml(&p)?).map_err(|e| CloudError::Protocol {
                provider: PROVIDER,
                message: e.to_string(),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_of_instance_id() {
        let id = crate::instance_id("demo", "nodes", 0);
        let u = domain_uuid(&id);
        assert_eq!(u.replace('-', ""), id);
    }
}
