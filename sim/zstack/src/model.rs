//! Resource records, shaped exactly like the ZStack `*Inventory` classes (`sdk/*Inventory.java`).
//!
//! The same structs serve three purposes: the JSON the API returns, the persisted state file and
//! the fixture YAML (every field defaults, so fixtures only list what matters). Keeping one shape
//! means a query can filter on any field the wire shows, with no mapping layer to drift.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `ZoneInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Zone {
    /// 32-hex uuid (derived from the name when a fixture omits it).
    pub uuid: String,
    /// Zone name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: String,
    /// Always `zstack`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Zone {
    fn default() -> Self {
        Zone {
            uuid: String::new(),
            name: String::new(),
            description: None,
            state: "Enabled".into(),
            type_: "zstack".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `ClusterInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cluster {
    /// 32-hex uuid.
    pub uuid: String,
    /// Cluster name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Owning zone (a fixture may give the zone's name; it is resolved on load).
    pub zone_uuid: String,
    /// `Enabled` / `Disabled`.
    pub state: String,
    /// `KVM`.
    pub hypervisor_type: String,
    /// `zstack`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `x86_64`, `aarch64`, ...; hosts inherit it.
    pub architecture: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            uuid: String::new(),
            name: String::new(),
            description: None,
            zone_uuid: String::new(),
            state: "Enabled".into(),
            hypervisor_type: "KVM".into(),
            type_: "zstack".into(),
            architecture: "x86_64".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `HostInventory` (KVM host). `available*` are recomputed from the VMs on every read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Host {
    /// 32-hex uuid.
    pub uuid: String,
    /// Host name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Zone (filled from the cluster on load).
    pub zone_uuid: String,
    /// Cluster (name or uuid in fixtures).
    pub cluster_uuid: String,
    /// Management address: data only, the simulator never connects to it.
    pub management_ip: String,
    /// `KVM`.
    pub hypervisor_type: String,
    /// `Enabled` / `Disabled` / `Maintenance`; placement only uses `Enabled`.
    pub state: String,
    /// `Connected` / `Disconnected`; placement only uses `Connected`.
    pub status: String,
    /// Filled from the cluster when empty.
    pub architecture: String,
    /// Physical cores.
    pub cpu_num: u64,
    /// Sockets (informational).
    pub cpu_sockets: u64,
    /// Cores available for VMs (no over-provisioning in the simulator).
    pub total_cpu_capacity: u64,
    /// Cores not used by VMs that hold this host.
    pub available_cpu_capacity: u64,
    /// Bytes available for VMs.
    pub total_memory_capacity: u64,
    /// Bytes not used by VMs that hold this host.
    pub available_memory_capacity: u64,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            uuid: String::new(),
            name: String::new(),
            description: None,
            zone_uuid: String::new(),
            cluster_uuid: String::new(),
            management_ip: String::new(),
            hypervisor_type: "KVM".into(),
            state: "Enabled".into(),
            status: "Connected".into(),
            architecture: String::new(),
            cpu_num: 0,
            cpu_sockets: 1,
            total_cpu_capacity: 0,
            available_cpu_capacity: 0,
            total_memory_capacity: 0,
            available_memory_capacity: 0,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `PrimaryStorageInventory` (root volumes live here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrimaryStorage {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Zone.
    pub zone_uuid: String,
    /// Storage URL (data only).
    pub url: String,
    /// `LocalStorage`, `Ceph`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled`.
    pub state: String,
    /// `Connected`.
    pub status: String,
    /// Bytes.
    pub total_capacity: u64,
    /// Bytes.
    pub available_capacity: u64,
    /// Clusters it is attached to (all clusters of the zone when empty in a fixture).
    pub attached_cluster_uuids: Vec<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for PrimaryStorage {
    fn default() -> Self {
        PrimaryStorage {
            uuid: String::new(),
            name: String::new(),
            description: None,
            zone_uuid: String::new(),
            url: "/zstack_ps".into(),
            type_: "LocalStorage".into(),
            state: "Enabled".into(),
            status: "Connected".into(),
            total_capacity: 0,
            available_capacity: 0,
            attached_cluster_uuids: Vec::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `BackupStorageInventory` (images live here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupStorage {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// URL (data only).
    pub url: String,
    /// `ImageStoreBackupStorage`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled`.
    pub state: String,
    /// `Connected`.
    pub status: String,
    /// Bytes.
    pub total_capacity: u64,
    /// Bytes.
    pub available_capacity: u64,
    /// Zones it serves (all zones when empty in a fixture).
    pub attached_zone_uuids: Vec<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for BackupStorage {
    fn default() -> Self {
        BackupStorage {
            uuid: String::new(),
            name: String::new(),
            description: None,
            url: "/zstack_bs".into(),
            type_: "ImageStoreBackupStorage".into(),
            state: "Enabled".into(),
            status: "Connected".into(),
            total_capacity: 0,
            available_capacity: 0,
            attached_zone_uuids: Vec::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `ImageBackupStorageRefInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageBackupStorageRef {
    /// The image.
    pub image_uuid: String,
    /// The backup storage.
    pub backup_storage_uuid: String,
    /// Path on the storage (data only).
    pub install_path: String,
    /// `Ready` / `Downloading`.
    pub status: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for ImageBackupStorageRef {
    fn default() -> Self {
        ImageBackupStorageRef {
            image_uuid: String::new(),
            backup_storage_uuid: String::new(),
            install_path: String::new(),
            status: "Ready".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `ImageInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Image {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: String,
    /// `Creating`/`Downloading`/`Ready`/`Error`/`Deleted`/`Migrating`.
    pub status: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Bytes on the backup storage.
    pub actual_size: u64,
    /// Checksum (informational).
    pub md5_sum: Option<String>,
    /// Source URL (data only: the simulator never downloads).
    pub url: Option<String>,
    /// `RootVolumeTemplate` / `ISO` / `DataVolumeTemplate`.
    pub media_type: String,
    /// e.g. `Ubuntu 22.04`.
    pub guest_os_type: Option<String>,
    /// `zstack`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Linux` / `Windows` / `Other`.
    pub platform: String,
    /// `x86_64` / `aarch64` / ...
    pub architecture: String,
    /// `qcow2` / `raw` / `iso`.
    pub format: String,
    /// System image flag.
    pub system: bool,
    /// Where the image is stored (all backup storages when empty in a fixture).
    pub backup_storage_refs: Vec<ImageBackupStorageRef>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Image {
    fn default() -> Self {
        Image {
            uuid: String::new(),
            name: String::new(),
            description: None,
            state: "Enabled".into(),
            status: "Ready".into(),
            size: 2_361_393_152,
            actual_size: 658_505_728,
            md5_sum: None,
            url: None,
            media_type: "RootVolumeTemplate".into(),
            guest_os_type: None,
            type_: "zstack".into(),
            platform: "Linux".into(),
            architecture: "x86_64".into(),
            format: "qcow2".into(),
            system: false,
            backup_storage_refs: Vec::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `InstanceOfferingInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InstanceOffering {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// vCPUs.
    pub cpu_num: u64,
    /// Unused (0).
    pub cpu_speed: u64,
    /// Bytes.
    pub memory_size: u64,
    /// Ordering hint.
    pub sort_key: i64,
    /// Host allocator.
    pub allocator_strategy: String,
    /// `UserVm`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled` / `Disabled`.
    pub state: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for InstanceOffering {
    fn default() -> Self {
        InstanceOffering {
            uuid: String::new(),
            name: String::new(),
            description: None,
            cpu_num: 1,
            cpu_speed: 0,
            memory_size: 1 << 30,
            sort_key: 0,
            allocator_strategy: "LeastVmPreferredHostAllocatorStrategy".into(),
            type_: "UserVm".into(),
            state: "Enabled".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `IpRangeInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpRange {
    /// 32-hex uuid.
    pub uuid: String,
    /// The L3 network.
    pub l3_network_uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// First allocatable address (data only).
    pub start_ip: String,
    /// Last allocatable address (data only).
    pub end_ip: String,
    /// Dotted netmask.
    pub netmask: String,
    /// Gateway (never allocated to a NIC).
    pub gateway: String,
    /// e.g. `172.20.0.0/22` (computed on load when empty).
    pub network_cidr: String,
    /// Prefix length (computed on load when 0).
    pub prefix_len: u32,
    /// 4.
    pub ip_version: u32,
    /// Null for IPv4.
    pub address_mode: Option<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for IpRange {
    fn default() -> Self {
        IpRange {
            uuid: String::new(),
            l3_network_uuid: String::new(),
            name: String::new(),
            description: None,
            start_ip: String::new(),
            end_ip: String::new(),
            netmask: String::new(),
            gateway: String::new(),
            network_cidr: String::new(),
            prefix_len: 0,
            ip_version: 4,
            address_mode: None,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `NetworkServiceL3NetworkRefInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkServiceRef {
    /// The L3 network.
    pub l3_network_uuid: String,
    /// Provider (the flat provider in the seed).
    pub network_service_provider_uuid: String,
    /// `DHCP`, `Userdata`, `DNS`, `SecurityGroup`, ...
    pub network_service_type: String,
}

/// `L3NetworkInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L3Network {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `L3BasicNetwork`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Zone.
    pub zone_uuid: String,
    /// L2 network (synthetic).
    pub l2_network_uuid: String,
    /// `Enabled`.
    pub state: String,
    /// System network flag.
    pub system: bool,
    /// `Private` / `Public` / `System`.
    pub category: String,
    /// 4.
    pub ip_version: u32,
    /// DNS domain.
    pub dns_domain: Option<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// Address ranges.
    pub ip_ranges: Vec<IpRange>,
    /// Enabled network services.
    pub network_services: Vec<NetworkServiceRef>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for L3Network {
    fn default() -> Self {
        L3Network {
            uuid: String::new(),
            name: String::new(),
            description: None,
            type_: "L3BasicNetwork".into(),
            zone_uuid: String::new(),
            l2_network_uuid: String::new(),
            state: "Enabled".into(),
            system: false,
            category: "Private".into(),
            ip_version: 4,
            dns_domain: None,
            dns: Vec::new(),
            ip_ranges: Vec::new(),
            network_services: Vec::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `PciDeviceSpecInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PciDeviceSpec {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// PCI vendor id, e.g. `10de`.
    pub vendor_id: String,
    /// PCI device id, e.g. `20f1`.
    pub device_id: String,
    /// Sub-vendor id.
    pub subvendor_id: Option<String>,
    /// Sub-device id.
    pub subdevice_id: Option<String>,
    /// e.g. `NVIDIA Corporation`.
    pub vendor: String,
    /// e.g. `GA100 [A100 PCIe 40GB]`.
    pub device: String,
    /// Device class, e.g. `GPU_3D_Controller`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Device memory in bytes.
    pub ram_size: Option<u64>,
    /// Max mdev partitions.
    pub max_part_num: Option<u64>,
    /// Virtual function flag.
    pub is_virtual: bool,
    /// `Enabled`.
    pub state: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for PciDeviceSpec {
    fn default() -> Self {
        PciDeviceSpec {
            uuid: String::new(),
            name: String::new(),
            description: None,
            vendor_id: String::new(),
            device_id: String::new(),
            subvendor_id: None,
            subdevice_id: None,
            vendor: String::new(),
            device: String::new(),
            type_: "GPU_3D_Controller".into(),
            ram_size: None,
            max_part_num: None,
            is_virtual: false,
            state: "Enabled".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `PciDeviceInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PciDevice {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Host carrying the device.
    pub host_uuid: String,
    /// Parent device (virtual functions).
    pub parent_uuid: Option<String>,
    /// The VM using it; null when free.
    pub vm_instance_uuid: Option<String>,
    /// Spec (name or uuid in fixtures).
    pub pci_spec_uuid: Option<String>,
    /// Device class, e.g. `GPU_3D_Controller`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled` / `Disabled`.
    pub state: String,
    /// `Active` (free) / `Attached` / `System` / `Reserved`.
    pub status: String,
    /// `UNVIRTUALIZABLE`, `VFIO_MDEV_VIRTUALIZED` (split into mdevs: not passthrough-able), ...
    pub virt_status: String,
    /// PCI vendor id.
    pub vendor_id: String,
    /// PCI device id.
    pub device_id: String,
    /// Sub-vendor id.
    pub subvendor_id: Option<String>,
    /// Sub-device id.
    pub subdevice_id: Option<String>,
    /// Vendor name.
    pub vendor: String,
    /// Device name.
    pub device: String,
    /// `0000:06:00.1`.
    pub pci_device_address: String,
    /// IOMMU group.
    pub iommu_group: Option<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for PciDevice {
    fn default() -> Self {
        PciDevice {
            uuid: String::new(),
            name: String::new(),
            description: None,
            host_uuid: String::new(),
            parent_uuid: None,
            vm_instance_uuid: None,
            pci_spec_uuid: None,
            type_: "GPU_3D_Controller".into(),
            state: "Enabled".into(),
            status: "Active".into(),
            virt_status: "UNVIRTUALIZABLE".into(),
            vendor_id: String::new(),
            device_id: String::new(),
            subvendor_id: None,
            subdevice_id: None,
            vendor: String::new(),
            device: String::new(),
            pci_device_address: String::new(),
            iommu_group: None,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `MdevDeviceSpecInventory` (a vGPU profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MdevDeviceSpec {
    /// 32-hex uuid.
    pub uuid: String,
    /// e.g. `GRID T4-4Q`.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Profile details (free text).
    pub specification: Option<String>,
    /// Device class.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled`.
    pub state: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for MdevDeviceSpec {
    fn default() -> Self {
        MdevDeviceSpec {
            uuid: String::new(),
            name: String::new(),
            description: None,
            specification: None,
            type_: "GPU_Video_Controller".into(),
            state: "Enabled".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `MdevDeviceInventory` (a vGPU slice of a PCI device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MdevDevice {
    /// 32-hex uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Host carrying it.
    pub host_uuid: String,
    /// The PCI device it is carved from.
    pub parent_uuid: Option<String>,
    /// The VM using it; null when free.
    pub vm_instance_uuid: Option<String>,
    /// Its profile (name or uuid in fixtures).
    pub mdev_spec_uuid: Option<String>,
    /// Device class.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Enabled`.
    pub state: String,
    /// `Active` (free) / `Attached`.
    pub status: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for MdevDevice {
    fn default() -> Self {
        MdevDevice {
            uuid: String::new(),
            name: String::new(),
            description: None,
            host_uuid: String::new(),
            parent_uuid: None,
            vm_instance_uuid: None,
            mdev_spec_uuid: None,
            type_: "GPU_Video_Controller".into(),
            state: "Enabled".into(),
            status: "Active".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `VmNicInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmNic {
    /// 32-hex uuid.
    pub uuid: String,
    /// Owning VM.
    pub vm_instance_uuid: String,
    /// L3 network.
    pub l3_network_uuid: String,
    /// Allocated address (data only).
    pub ip: Option<String>,
    /// `fa:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Netmask of the range.
    pub netmask: Option<String>,
    /// Gateway of the range.
    pub gateway: Option<String>,
    /// 4.
    pub ip_version: u32,
    /// Position on the VM.
    pub device_id: u32,
    /// `KVM`.
    pub hypervisor_type: String,
    /// `VNIC`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `virtio`.
    pub driver_type: String,
    /// libvirt name, e.g. `vnic12.0`.
    pub internal_name: String,
    /// `enable`.
    pub state: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for VmNic {
    fn default() -> Self {
        VmNic {
            uuid: String::new(),
            vm_instance_uuid: String::new(),
            l3_network_uuid: String::new(),
            ip: None,
            mac: String::new(),
            netmask: None,
            gateway: None,
            ip_version: 4,
            device_id: 0,
            hypervisor_type: "KVM".into(),
            type_: "VNIC".into(),
            driver_type: "virtio".into(),
            internal_name: String::new(),
            state: "enable".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `VolumeInventory` (only root volumes are simulated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    /// 32-hex uuid.
    pub uuid: String,
    /// `ROOT-for-<vm name>`.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Primary storage.
    pub primary_storage_uuid: Option<String>,
    /// Owning VM.
    pub vm_instance_uuid: Option<String>,
    /// Disk offering (null for root volumes from an image).
    pub disk_offering_uuid: Option<String>,
    /// Source image.
    pub root_image_uuid: Option<String>,
    /// Path on the storage (data only).
    pub install_path: String,
    /// `Root` / `Data`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `qcow2`.
    pub format: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Allocated bytes.
    pub actual_size: u64,
    /// Position on the VM.
    pub device_id: u32,
    /// `Enabled`.
    pub state: String,
    /// `Ready`.
    pub status: String,
    /// Shareable flag.
    pub is_shareable: bool,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            uuid: String::new(),
            name: String::new(),
            description: None,
            primary_storage_uuid: None,
            vm_instance_uuid: None,
            disk_offering_uuid: None,
            root_image_uuid: None,
            install_path: String::new(),
            type_: "Root".into(),
            format: "qcow2".into(),
            size: 0,
            actual_size: 0,
            device_id: 0,
            state: "Enabled".into(),
            status: "Ready".into(),
            is_shareable: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `VmInstanceInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmInstance {
    /// 32-hex uuid (the create call's `resourceUuid` when given).
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Zone.
    pub zone_uuid: Option<String>,
    /// Cluster.
    pub cluster_uuid: Option<String>,
    /// Current host; null when not running (ZStack clears it on stop).
    pub host_uuid: Option<String>,
    /// Host it last ran on.
    pub last_host_uuid: Option<String>,
    /// Source image.
    pub image_uuid: Option<String>,
    /// Offering (null when created from cpuNum/memorySize).
    pub instance_offering_uuid: Option<String>,
    /// Root volume.
    pub root_volume_uuid: Option<String>,
    /// Default L3.
    pub default_l3_network_uuid: Option<String>,
    /// `Linux`, ...
    pub platform: Option<String>,
    /// `x86_64` / `aarch64` / ...
    pub architecture: Option<String>,
    /// Guest OS.
    pub guest_os_type: Option<String>,
    /// `UserVm`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `KVM`.
    pub hypervisor_type: String,
    /// vCPUs.
    pub cpu_num: u64,
    /// 0.
    pub cpu_speed: u64,
    /// Bytes.
    pub memory_size: u64,
    /// 0.
    pub reserved_memory_size: u64,
    /// Host allocator.
    pub allocator_strategy: Option<String>,
    /// `VmInstanceState`.
    pub state: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
    /// NICs.
    pub vm_nics: Vec<VmNic>,
    /// Volumes (root only).
    pub all_volumes: Vec<Volume>,
    /// CD-ROMs (always empty).
    pub vm_cd_roms: Vec<serde_json::Value>,
}

impl Default for VmInstance {
    fn default() -> Self {
        VmInstance {
            uuid: String::new(),
            name: String::new(),
            description: None,
            zone_uuid: None,
            cluster_uuid: None,
            host_uuid: None,
            last_host_uuid: None,
            image_uuid: None,
            instance_offering_uuid: None,
            root_volume_uuid: None,
            default_l3_network_uuid: None,
            platform: None,
            architecture: None,
            guest_os_type: None,
            type_: "UserVm".into(),
            hypervisor_type: "KVM".into(),
            cpu_num: 0,
            cpu_speed: 0,
            memory_size: 0,
            reserved_memory_size: 0,
            allocator_strategy: None,
            state: "Created".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
            vm_nics: Vec::new(),
            all_volumes: Vec::new(),
            vm_cd_roms: Vec::new(),
        }
    }
}

/// `SystemTagInventory` / `UserTagInventory` (`sdk/TagInventory.java`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tag {
    /// 32-hex uuid.
    pub uuid: String,
    /// Tagged resource.
    pub resource_uuid: String,
    /// e.g. `VmInstanceVO`.
    pub resource_type: String,
    /// The tag string, e.g. `kprov::cluster::demo` or `hostname::node-1`.
    pub tag: String,
    /// `User` / `System`.
    #[serde(rename = "type")]
    pub type_: String,
    /// System tags only: created by the system itself.
    pub inherent: bool,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Tag {
    fn default() -> Self {
        Tag {
            uuid: String::new(),
            resource_uuid: String::new(),
            resource_type: String::new(),
            tag: String::new(),
            type_: "User".into(),
            inherent: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `SessionInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionView {
    /// The session id used in `Authorization: OAuth <uuid>`.
    pub uuid: String,
    /// Account.
    pub account_uuid: String,
    /// User (the account itself for account logins).
    pub user_uuid: String,
    /// `AccountVO` for account logins (unconfirmed value).
    pub user_type: String,
    /// Expiry.
    pub expired_date: GsonTime,
    /// Creation.
    pub create_date: GsonTime,
}

impl Default for SessionView {
    fn default() -> Self {
        SessionView {
            uuid: String::new(),
            account_uuid: String::new(),
            user_uuid: String::new(),
            user_type: "AccountVO".into(),
            expired_date: GsonTime::now(),
            create_date: GsonTime::now(),
        }
    }
}
