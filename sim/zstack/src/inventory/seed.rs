//! The built-in fixture: the cloud a simulator starts with when no inventory is given.

use super::{AccessKeyFixture, Inventory, GIB};
use crate::model::*;

impl Inventory {
    /// The default seed with every host's CPUs and CPU capacity multiplied by `cpu` and its
    /// memory by `memory`: room for the benchmarks' hundreds of small VMs.
    pub fn scaled_seed(cpu: u64, memory: u64) -> Self {
        let mut inv = Self::default_seed();
        for h in &mut inv.hosts {
            h.cpu_num *= cpu;
            h.total_cpu_capacity *= cpu;
            h.total_memory_capacity *= memory;
        }
        inv
    }

    /// The default seeded cloud: one zone, an aarch64 cluster of 4 hosts (48 cores / 256 GiB;
    /// hosts 1 and 2 carry 4 NVIDIA A100 each, host 3 two mdev-split T4s), an x86_64 cluster of
    /// 2 hosts (32 cores / 128 GiB), arm64 + amd64 Ubuntu images, 4 offerings, the `k8s-net` L3
    /// with DHCP + Userdata + LoadBalancer, storages and one AccessKey pair for the admin account.
    pub fn default_seed() -> Self {
        let (zone, clusters, hosts) = Self::seed_compute();
        let (images, instance_offerings) = Self::seed_catalog();
        let l3 = Self::seed_network();
        let (pci_device_specs, pci_devices, mdev_devices) = Self::seed_gpus();
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
            pci_device_specs,
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

    /// `zone-1` with an aarch64 cluster of 4 hosts (48 cores / 256 GiB each) and an x86_64
    /// cluster of 2 (32 cores / 128 GiB each).
    fn seed_compute() -> (Zone, Vec<Cluster>, Vec<Host>) {
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
        (zone, clusters, hosts)
    }

    /// Ubuntu 22.04 images for arm64 and amd64, and the small / medium / large / xlarge offerings.
    fn seed_catalog() -> (Vec<Image>, Vec<InstanceOffering>) {
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
        (images, instance_offerings)
    }

    /// `k8s-net`: 172.20.0.0/22 (allocating from 172.20.0.10; gateway 172.20.0.1) with the DHCP
    /// and Userdata network services of the flat provider and, as on a VPC network, the
    /// LoadBalancer service of the virtual-router provider (so its VMs can be LB backends).
    fn seed_network() -> L3Network {
        L3Network {
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
            network_services: vec![
                service("DHCP", "Flat"),
                service("Userdata", "Flat"),
                service("LoadBalancer", "vrouter"),
            ],
            ..Default::default()
        }
    }

    /// GPUs: 4 A100s on each of arm-host-1 and -2 (passthrough), and on arm-host-3 two T4s
    /// split into 4 mdev slices each (not passthrough-able).
    fn seed_gpus() -> (Vec<PciDeviceSpec>, Vec<PciDevice>, Vec<MdevDevice>) {
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
        (vec![a100, t4], pci_devices, mdev_devices)
    }
}

/// A network service of `provider` (`Flat`, `vrouter`): its provider uuid is derived from the
/// provider's name, as `normalize` does for services that name none.
fn service(type_: &str, provider: &str) -> NetworkServiceRef {
    NetworkServiceRef {
        network_service_type: type_.into(),
        network_service_provider_uuid: super::derived_uuid("network-service-provider", provider),
        ..Default::default()
    }
}
