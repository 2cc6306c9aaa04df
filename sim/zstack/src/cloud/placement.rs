//! Host placement: which host a starting VM lands on, given architecture, capacity, location
//! and device requests.

use super::CloudState;
use crate::error::ErrorCode;
use crate::model::*;
use std::collections::HashSet;

/// SYS.1006 wrapping HOST_ALLOCATION.1001, what the MN reports when no host fits.
fn no_host(reason: String) -> ErrorCode {
    ErrorCode::operation(format!("unable to allocate a host: {reason}"))
        .with_cause(ErrorCode::new("HOST_ALLOCATION.1001", reason))
}

/// What a host must satisfy.
#[derive(Debug, Default)]
pub(super) struct PlacementReq<'a> {
    pub arch: String,
    pub cpu: u64,
    pub mem: u64,
    pub zone: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub host: Option<&'a str>,
    pub pinned: Option<String>,
    pub prefer: Option<String>,
    pub pci_specs: Vec<(String, usize)>,
    pub mdev_specs: Vec<(String, usize)>,
}

impl CloudState {
    /// The host's PCI devices of `spec` free for passthrough.
    pub(super) fn free_pci_on(&self, host: &str, spec: &str) -> Vec<String> {
        self.pci_devices
            .iter()
            .filter(|d| {
                d.host_uuid == host
                    && d.pci_spec_uuid.as_deref() == Some(spec)
                    && pci_passthrough_free(d)
            })
            .map(|d| d.uuid.clone())
            .collect()
    }

    /// The host's unattached, Enabled mdev devices of `spec`.
    pub(super) fn free_mdev_on(&self, host: &str, spec: &str) -> Vec<String> {
        self.mdev_devices
            .iter()
            .filter(|d| {
                d.host_uuid == host
                    && d.mdev_spec_uuid.as_deref() == Some(spec)
                    && d.vm_instance_uuid.is_none()
                    && d.state == "Enabled"
            })
            .map(|d| d.uuid.clone())
            .collect()
    }

    /// Picks a host: right architecture, inside the requested zone/cluster/host, Enabled and
    /// Connected, with free CPU/memory and the requested free devices. Prefers `prefer` (the
    /// last host on start), then the host with most free memory. Errors say which filter emptied
    /// the candidate list.
    pub(super) fn place(&self, r: &PlacementReq) -> Result<String, ErrorCode> {
        let mut c: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| r.zone.is_none_or(|z| h.zone_uuid == z))
            .filter(|h| r.cluster.is_none_or(|x| h.cluster_uuid == x))
            .filter(|h| r.host.is_none_or(|x| h.uuid == x))
            .filter(|h| r.pinned.as_deref().is_none_or(|x| h.uuid == x))
            .collect();
        if c.is_empty() {
            return Err(no_host(
                "no host in the requested zone/cluster/host (or the one holding the VM's devices)"
                    .into(),
            ));
        }
        c.retain(|h| h.architecture == r.arch);
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] among the candidates",
                r.arch
            )));
        }
        c.retain(|h| h.state == "Enabled" && h.status == "Connected");
        if c.is_empty() {
            return Err(no_host(format!(
                "no Enabled and Connected host of architecture[{}]",
                r.arch
            )));
        }
        c.retain(|h| {
            let (cpu, mem) = self.used_capacity(&h.uuid);
            h.total_cpu_capacity.saturating_sub(cpu) >= r.cpu
                && h.total_memory_capacity.saturating_sub(mem) >= r.mem
        });
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] has enough capacity for cpu[{}] memory[{} bytes]",
                r.arch, r.cpu, r.mem
            )));
        }
        c.retain(|h| {
            r.pci_specs
                .iter()
                .all(|(s, n)| self.free_pci_on(&h.uuid, s).len() >= *n)
                && r.mdev_specs
                    .iter()
                    .all(|(s, n)| self.free_mdev_on(&h.uuid, s).len() >= *n)
        });
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] with enough capacity has the requested free devices {:?} {:?}",
                r.arch, r.pci_specs, r.mdev_specs
            )));
        }
        if let Some(p) = &r.prefer {
            if c.iter().any(|h| &h.uuid == p) {
                return Ok(p.clone());
            }
        }
        c.sort_by(|a, b| {
            let fa = a
                .total_memory_capacity
                .saturating_sub(self.used_capacity(&a.uuid).1);
            let fb = b
                .total_memory_capacity
                .saturating_sub(self.used_capacity(&b.uuid).1);
            fb.cmp(&fa).then_with(|| a.name.cmp(&b.name))
        });
        Ok(c[0].uuid.clone())
    }

    /// The host the VM's attached devices pin it to (and an error if they disagree).
    pub(super) fn device_pin(&self, vm: &str) -> Result<Option<String>, ErrorCode> {
        let hosts: HashSet<&str> = self
            .pci_devices
            .iter()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(vm))
            .map(|d| d.host_uuid.as_str())
            .chain(
                self.mdev_devices
                    .iter()
                    .filter(|d| d.vm_instance_uuid.as_deref() == Some(vm))
                    .map(|d| d.host_uuid.as_str()),
            )
            .collect();
        match hosts.len() {
            0 => Ok(None),
            1 => Ok(hosts.into_iter().next().map(str::to_string)),
            _ => Err(ErrorCode::operation(format!(
                "the devices attached to vm[uuid:{vm}] are on different hosts"
            ))),
        }
    }
}

/// Free for passthrough: unattached, Enabled, Active and not virtualized (`*_VIRTUALIZED`,
/// e.g. split into mdevs).
pub(super) fn pci_passthrough_free(d: &PciDevice) -> bool {
    d.vm_instance_uuid.is_none()
        && d.state == "Enabled"
        && d.status == "Active"
        && !d.virt_status.ends_with("_VIRTUALIZED")
}
