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
mod lookup;
mod persist;
mod placement;
mod query_source;
mod tags;
mod vm_actions;
mod vm_create;

#[cfg(test)]
mod tests;

pub(crate) use identity::{AccessKey, Account, Session};
pub(crate) use images::AddImageParams;
pub(crate) use jobs::{Job, JobOutcome};
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
    pub tags: Vec<Tag>,
    pub accounts: Vec<Account>,
    pub access_keys: Vec<AccessKey>,
    pub sessions: Vec<Session>,
    pub jobs: Vec<Job>,
    /// Monotonic counter for libvirt-style NIC names.
    pub nic_counter: u64,
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
