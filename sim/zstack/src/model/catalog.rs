//! What a VM is made from: images (with their backup-storage copies) and instance offerings.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

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
    /// Image name; fixtures and `SimHandle::uuid_of` can refer to the image by it.
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
    /// Offering name (`small` ... `xlarge` in the seed).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// vCPUs.
    pub cpu_num: u64,
    /// Always 0: the simulator does not model CPU speed.
    pub cpu_speed: u64,
    /// Memory in bytes of a VM created with this offering.
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
