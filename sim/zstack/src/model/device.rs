//! Passthrough PCI devices and mdev (vGPU) slices, with the specs (profiles) that group them.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `PciDeviceSpecInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PciDeviceSpec {
    /// 32-hex uuid.
    pub uuid: String,
    /// Spec name; PCI devices in a fixture can refer to the spec by it.
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
    /// Device name (`pci-<address>` when a fixture omits it); part of its derived uuid.
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
    /// Slice name; the derived uuid uses it and the host's.
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
