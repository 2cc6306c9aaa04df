//! VM instances with the NICs and root volumes they own.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

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
    /// Always 4: the simulator models IPv4 only.
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
    /// Name from the create call (1 to 255 characters); `updateVmInstance` can change it.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Its host's zone, else the requested zone, else its first L3's zone.
    pub zone_uuid: Option<String>,
    /// Cluster of the host it was placed on; null for a JustCreate VM not started yet.
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
    /// Always 0: the simulator does not model CPU speed.
    pub cpu_speed: u64,
    /// Memory in bytes; counts against its host's capacity unless the VM is Created, Stopped or
    /// destroyed.
    pub memory_size: u64,
    /// Always 0: the simulator reserves no memory beyond `memorySize`.
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
