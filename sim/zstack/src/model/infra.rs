//! Where VMs run and where their disks and images are stored: zones, clusters, KVM hosts and
//! primary / backup storages.

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
    /// Storage name; fixtures and `SimHandle::uuid_of` can refer to the storage by it.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Zone (a fixture may name it, or omit it when there is only one).
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
    /// Size in bytes (fixture data: root volumes are not deducted from it).
    pub total_capacity: u64,
    /// Free bytes as the fixture says (the simulator does not track volume sizes here).
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
    /// Storage name; fixtures and `SimHandle::uuid_of` can refer to the storage by it.
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
    /// Size in bytes (fixture data: images are not deducted from it).
    pub total_capacity: u64,
    /// Free bytes as the fixture says (the simulator does not track image sizes here).
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
