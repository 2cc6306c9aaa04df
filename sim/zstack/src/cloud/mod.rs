//! The simulated cloud: persisted state plus the operations the API performs on it.
//!
//! Operations are split the way a running job is observed: `*_begin` validates, claims resources
//! and puts the VM into its transitional state (Starting, Stopping, ...) when the job starts;
//! `*_finish` applies the final state when the job completes. Both run under the state mutex, so
//! claims (IPs, PCI devices, host capacity) are atomic across concurrent calls.
//!
//! `CloudState` and the helpers every operation shares live here; the operations are grouped
//! by concern in the submodules, each adding an `impl CloudState` block.

mod devices;
mod identity;
mod images;
mod ips;
mod jobs;
mod lb_nics;
mod load_balancers;
mod lookup;
mod params;
mod persist;
mod placement;
mod query_source;
mod tags;
mod vips;
mod vm_actions;
mod vm_create;

#[cfg(test)]
mod tests;

pub(crate) use identity::{AccessKey, Account, Session};
pub(crate) use images::AddImageParams;
pub(crate) use jobs::{Job, JobOutcome};
pub(crate) use load_balancers::{CreateListenerParams, CreateLoadBalancerParams};
pub(crate) use vips::CreateVipParams;
pub(crate) use vm_create::CreateVmParams;

use crate::error::ErrorCode;
use crate::model::*;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use std::sync::OnceLock;

/// Everything the simulator persists: one list per resource kind (in the `model` wire shape),
/// plus identities, sessions and jobs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CloudState {
    /// The state-file layout version; a file of another version is refused on load.
    pub format: u32,
    pub zones: Vec<Zone>,
    pub clusters: Vec<Cluster>,
    pub hosts: Vec<Host>,
    pub primary_storages: Vec<PrimaryStorage>,
    pub backup_storages: Vec<BackupStorage>,
    pub images: Vec<Image>,
    pub instance_offerings: Vec<InstanceOffering>,
    pub l3_networks: Vec<L3Network>,
    pub pci_device_specs: Vec<PciDeviceSpec>,
    pub pci_devices: Vec<PciDevice>,
    pub mdev_device_specs: Vec<MdevDeviceSpec>,
    pub mdev_devices: Vec<MdevDevice>,
    pub vms: Vec<VmInstance>,
    /// Virtual IPs (their addresses are taken from the same pool as NIC addresses).
    pub vips: Vec<Vip>,
    /// Load balancers with their listeners and NIC refs embedded.
    pub load_balancers: Vec<LoadBalancer>,
    pub tags: Vec<Tag>,
    pub accounts: Vec<Account>,
    pub access_keys: Vec<AccessKey>,
    pub sessions: Vec<Session>,
    pub jobs: Vec<Job>,
    /// Monotonic counter for libvirt-style NIC names.
    pub nic_counter: u64,
    /// Last row id given to a listener's NIC ref or server-group ref (the `id` fields).
    pub lb_ref_counter: u64,
}

/// Lowercase hex SHA-512, the password form clients send.
pub(crate) fn sha512_hex(s: &str) -> String {
    hex::encode(Sha512::digest(s.as_bytes()))
}

/// A fresh random 32-hex uuid.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `StringDSL.isZStackUuid`: a version 1-5, RFC-variant uuid without dashes.
pub(crate) fn is_zstack_uuid(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new("^[0-9a-f]{8}[0-9a-f]{4}[1-5][0-9a-f]{3}[89ab][0-9a-f]{3}[0-9a-f]{12}$")
            .expect("static regex")
    })
    .is_match(s)
}

/// The `resourceUuid` format check every create runs first (`ApiMediatorImpl`): SYS.1007.
pub(crate) fn check_resource_uuid(r: Option<&str>) -> Result<(), ErrorCode> {
    match r {
        Some(r) if !is_zstack_uuid(r) => Err(ErrorCode::invalid_argument(format!(
            "resourceUuid[{r}] is not a valid uuid. A valid uuid is a UUID(v4 recommended) with '-' stripped"
        ))),
        _ => Ok(()),
    }
}

impl CloudState {
    /// The uuid a create persists its `vo` (`VmInstanceVO`, `VipVO`, ...) under: `resourceUuid`
    /// or a fresh one. A uuid any resource already has surfaces when the VO is persisted, as an
    /// unhandled exception: SYS.1000.
    pub(crate) fn claim_uuid(
        &self,
        resource_uuid: Option<&str>,
        vo: &str,
    ) -> Result<String, ErrorCode> {
        let uuid = resource_uuid.map(str::to_string).unwrap_or_else(new_uuid);
        if self.uuid_exists(&uuid) {
            return Err(ErrorCode::internal(format!(
                "could not persist {vo}: a resource with uuid[{uuid}] already exists (duplicate primary key)"
            )));
        }
        Ok(uuid)
    }
}

/// SYS.1007 for a `field` naming a resource that does not exist, worded like the MN's.
fn arg_not_found(field: &str, uuid: &str, type_: &str) -> ErrorCode {
    ErrorCode::invalid_argument(format!(
        "invalid field[{field}], resource[uuid:{uuid}, type:{type_}] not found"
    ))
}

/// SYS.1006 wrapping VM.1010, what `validateOperationByState` produces.
pub(crate) fn wrong_state(vm: &VmInstance, op: &str) -> ErrorCode {
    ErrorCode::operation(format!(
        "the operation[{op}] cannot be performed on vm[uuid:{}] in state[{}]",
        vm.uuid, vm.state
    ))
    .with_cause(ErrorCode::new(
        "VM.1010",
        format!(
            "The vm[uuid:{}] is in state[{}], which doesn't allow operation[{op}]",
            vm.uuid, vm.state
        ),
    ))
}
