//! Finding resources by uuid, and the derived views (a host's free capacity) reads need.

use super::CloudState;
use crate::error::ErrorCode;
use crate::model::*;
use serde_json::{json, Value};

/// Which VM states hold their host's CPU/memory.
fn holds_host(state: &str) -> bool {
    !matches!(
        state,
        "Stopped" | "Created" | "Destroyed" | "Expunging" | "Destroying"
    )
}

impl CloudState {
    /// True if any resource has this uuid (resourceUuid conflicts are global in ZStack).
    pub fn uuid_exists(&self, u: &str) -> bool {
        self.zones.iter().any(|x| x.uuid == u)
            || self.clusters.iter().any(|x| x.uuid == u)
            || self.hosts.iter().any(|x| x.uuid == u)
            || self.primary_storages.iter().any(|x| x.uuid == u)
            || self.backup_storages.iter().any(|x| x.uuid == u)
            || self.images.iter().any(|x| x.uuid == u)
            || self.instance_offerings.iter().any(|x| x.uuid == u)
            || self
                .l3_networks
                .iter()
                .any(|x| x.uuid == u || x.ip_ranges.iter().any(|r| r.uuid == u))
            || self.pci_device_specs.iter().any(|x| x.uuid == u)
            || self.pci_devices.iter().any(|x| x.uuid == u)
            || self.mdev_device_specs.iter().any(|x| x.uuid == u)
            || self.mdev_devices.iter().any(|x| x.uuid == u)
            || self.vms.iter().any(|x| {
                x.uuid == u
                    || x.vm_nics.iter().any(|n| n.uuid == u)
                    || x.all_volumes.iter().any(|v| v.uuid == u)
            })
            || self.tags.iter().any(|x| x.uuid == u)
            || self.vips.iter().any(|x| x.uuid == u)
            || self.load_balancers.iter().any(|x| {
                x.uuid == u
                    || x.server_group_uuid.as_deref() == Some(u)
                    || x.listeners
                        .iter()
                        .any(|l| l.uuid == u || l.server_group_uuid.as_deref() == Some(u))
            })
    }

    /// The resource type name (`VmInstanceVO`, ...) of a uuid, for tag validation.
    pub(super) fn resource_type_of(&self, u: &str) -> Option<&'static str> {
        if self.vms.iter().any(|x| x.uuid == u) {
            Some("VmInstanceVO")
        } else if self
            .vms
            .iter()
            .any(|x| x.vm_nics.iter().any(|n| n.uuid == u))
        {
            Some("VmNicVO")
        } else if self
            .vms
            .iter()
            .any(|x| x.all_volumes.iter().any(|n| n.uuid == u))
        {
            Some("VolumeVO")
        } else if self.images.iter().any(|x| x.uuid == u) {
            Some("ImageVO")
        } else if self.hosts.iter().any(|x| x.uuid == u) {
            Some("HostVO")
        } else if self.clusters.iter().any(|x| x.uuid == u) {
            Some("ClusterVO")
        } else if self.zones.iter().any(|x| x.uuid == u) {
            Some("ZoneVO")
        } else if self.l3_networks.iter().any(|x| x.uuid == u) {
            Some("L3NetworkVO")
        } else if self.instance_offerings.iter().any(|x| x.uuid == u) {
            Some("InstanceOfferingVO")
        } else if self.pci_devices.iter().any(|x| x.uuid == u) {
            Some("PciDeviceVO")
        } else if self.backup_storages.iter().any(|x| x.uuid == u) {
            Some("BackupStorageVO")
        } else if self.primary_storages.iter().any(|x| x.uuid == u) {
            Some("PrimaryStorageVO")
        } else if self.vips.iter().any(|x| x.uuid == u) {
            Some("VipVO")
        } else if self.load_balancers.iter().any(|x| x.uuid == u) {
            Some("LoadBalancerVO")
        } else if self.listener_pos(u).is_some() {
            Some("LoadBalancerListenerVO")
        } else {
            None
        }
    }

    /// A VM by uuid, in any state until expunged.
    pub fn vm(&self, u: &str) -> Option<&VmInstance> {
        self.vms.iter().find(|v| v.uuid == u)
    }

    /// A VM by uuid, to change it.
    pub(super) fn vm_mut(&mut self, u: &str) -> Option<&mut VmInstance> {
        self.vms.iter_mut().find(|v| v.uuid == u)
    }

    /// The VM's `{"inventory": ...}` job result.
    pub fn vm_result(&self, u: &str) -> Result<Value, ErrorCode> {
        self.vm(u)
            .map(|v| json!({ "inventory": v }))
            .ok_or_else(|| ErrorCode::new("SYS.1003", format!("vm[uuid:{u}] not found")))
    }

    /// The host as queries show it: `available*` capacity recomputed from the VMs holding it.
    pub(super) fn host_view(&self, h: &Host) -> Host {
        let (cpu, mem) = self.used_capacity(&h.uuid);
        let mut v = h.clone();
        v.available_cpu_capacity = h.total_cpu_capacity.saturating_sub(cpu);
        v.available_memory_capacity = h.total_memory_capacity.saturating_sub(mem);
        v
    }

    /// CPUs and memory bytes the VMs holding the host use.
    pub(super) fn used_capacity(&self, host: &str) -> (u64, u64) {
        self.vms
            .iter()
            .filter(|v| v.host_uuid.as_deref() == Some(host) && holds_host(&v.state))
            .fold((0, 0), |(c, m), v| (c + v.cpu_num, m + v.memory_size))
    }
}
