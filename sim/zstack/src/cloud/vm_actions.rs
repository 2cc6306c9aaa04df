//! The VM lifecycle after creation: start, stop, reboot, destroy, expunge, recover and update.

use super::placement::PlacementReq;
use super::{arg_not_found, wrong_state, CloudState};
use crate::error::ErrorCode;
use crate::model::VmInstance;
use crate::time::GsonTime;
use serde_json::{json, Value};
use std::collections::HashSet;

impl CloudState {
    /// The VM, or SYS.1007 naming the `uuid` field, as an action on a missing VM gets.
    pub(super) fn existing_vm(&self, uuid: &str) -> Result<&VmInstance, ErrorCode> {
        self.vm(uuid)
            .ok_or_else(|| arg_not_found("uuid", uuid, "VmInstanceVO"))
    }

    /// Moves the VM to `state` (a missing VM is left alone: the caller checked it).
    fn set_state(&mut self, uuid: &str, state: &str) {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = state.into();
            v.last_op_date = GsonTime::now();
        }
    }

    /// Start: `Ok(true)` when a transition began, `Ok(false)` when already Running (no-op).
    pub fn start_begin(&mut self, uuid: &str, params: &Value) -> Result<bool, ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        match vm.state.as_str() {
            "Running" => return Ok(false),
            "Stopped" | "Created" => {}
            _ => return Err(wrong_state(&vm, "StartVmInstance")),
        }
        let host_param = params.get("hostUuid").and_then(Value::as_str);
        let cluster_param = params.get("clusterUuid").and_then(Value::as_str);
        if let Some(h) = host_param {
            if !self.hosts.iter().any(|x| x.uuid == h) {
                return Err(arg_not_found("hostUuid", h, "HostVO"));
            }
        }
        if let Some(c) = cluster_param {
            if !self.clusters.iter().any(|x| x.uuid == c) {
                return Err(arg_not_found("clusterUuid", c, "ClusterVO"));
            }
        }
        let req = PlacementReq {
            arch: vm.architecture.clone().unwrap_or_else(|| "x86_64".into()),
            cpu: vm.cpu_num,
            mem: vm.memory_size,
            zone: vm.zone_uuid.as_deref(),
            cluster: cluster_param,
            host: host_param,
            pinned: self.device_pin(uuid)?,
            prefer: vm.last_host_uuid.clone(),
            ..Default::default()
        };
        let host = self.place(&req)?;
        let cluster = self
            .hosts
            .iter()
            .find(|h| h.uuid == host)
            .map(|h| h.cluster_uuid.clone());
        let v = self.vm_mut(uuid).expect("checked above");
        v.host_uuid = Some(host);
        v.cluster_uuid = cluster;
        v.state = "Starting".into();
        v.last_op_date = GsonTime::now();
        Ok(true)
    }

    /// Running on the host `start_begin` chose, which becomes its last host. Its NICs on
    /// load-balancer listeners become `Active` again.
    pub fn start_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Running".into();
            v.last_host_uuid = v.host_uuid.clone();
            v.last_op_date = GsonTime::now();
        }
        self.set_lb_nic_status(uuid, "Active");
        self.vm_result(uuid)
    }

    /// Stop: `Ok(false)` when already Stopped (no-op).
    pub fn stop_begin(&mut self, uuid: &str, params: &Value) -> Result<bool, ErrorCode> {
        if let Some(t) = params.get("type").and_then(Value::as_str) {
            if !matches!(t, "grace" | "cold") {
                return Err(ErrorCode::invalid_argument(format!(
                    "type[{t}] is not one of [grace, cold]"
                )));
            }
        }
        let vm = self.existing_vm(uuid)?.clone();
        match vm.state.as_str() {
            "Stopped" => Ok(false),
            "Running" => {
                self.set_state(uuid, "Stopping");
                Ok(true)
            }
            _ => Err(wrong_state(&vm, "StopVmInstance")),
        }
    }

    /// Stopped VMs release their host (ZStack nulls `hostUuid`, keeps `lastHostUuid`); their
    /// NICs on load-balancer listeners become `Inactive`.
    pub fn stop_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Stopped".into();
            if v.host_uuid.is_some() {
                v.last_host_uuid = v.host_uuid.take();
            }
            v.last_op_date = GsonTime::now();
        }
        self.set_lb_nic_status(uuid, "Inactive");
        self.vm_result(uuid)
    }

    /// Reboot: only from Running; otherwise VM.1003 → SYS.1006 → VM.1010.
    pub fn reboot_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Running" {
            return Err(
                ErrorCode::new("VM.1003", format!("unable to reboot vm[uuid:{uuid}]"))
                    .with_cause(wrong_state(&vm, "RebootVmInstance")),
            );
        }
        self.set_state(uuid, "Rebooting");
        Ok(())
    }

    /// Back to Running, on the same host.
    pub fn reboot_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        self.set_state(uuid, "Running");
        self.vm_result(uuid)
    }

    /// Destroy: `Ok(false)` when nothing is to be done (missing or already Destroyed).
    pub fn destroy_begin(&mut self, uuid: &str) -> Result<bool, ErrorCode> {
        let Some(vm) = self.vm(uuid).cloned() else {
            return Ok(false);
        };
        match vm.state.as_str() {
            "Destroyed" => Ok(false),
            "Created" | "Running" | "Stopped" | "Starting" | "Stopping" | "Rebooting"
            | "Migrating" | "Error" | "Unknown" | "Paused" | "Crashed" | "NoState" => {
                self.set_state(uuid, "Destroying");
                Ok(true)
            }
            _ => Err(wrong_state(&vm, "DestroyVmInstance")),
        }
    }

    /// Destroyed VMs keep IPs, tags and devices until expunged (§11.5), but not their host;
    /// their NICs leave every load-balancer listener.
    pub fn destroy_finish(&mut self, uuid: &str) -> Value {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Destroyed".into();
            if v.host_uuid.is_some() {
                v.last_host_uuid = v.host_uuid.take();
            }
            v.last_op_date = GsonTime::now();
        }
        self.remove_lb_nics_of(uuid);
        json!({})
    }

    /// Expunge: only a Destroyed VM can be expunged.
    pub fn expunge_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Destroyed" {
            return Err(wrong_state(&vm, "ExpungeVmInstance"));
        }
        self.set_state(uuid, "Expunging");
        Ok(())
    }

    /// Deletes the VM and frees its IPs (with the NICs, which leave any listener), tags and
    /// devices.
    pub fn expunge_finish(&mut self, uuid: &str) -> Value {
        let Some(pos) = self.vms.iter().position(|v| v.uuid == uuid) else {
            return json!({});
        };
        self.remove_lb_nics_of(uuid);
        let vm = self.vms.remove(pos);
        let mut owned: HashSet<String> = HashSet::from([vm.uuid.clone()]);
        owned.extend(vm.vm_nics.iter().map(|n| n.uuid.clone()));
        owned.extend(vm.all_volumes.iter().map(|n| n.uuid.clone()));
        self.drop_tags_of(&owned);
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(uuid))
        {
            d.vm_instance_uuid = None;
            d.status = "Active".into();
            d.last_op_date = GsonTime::now();
        }
        for d in self
            .mdev_devices
            .iter_mut()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(uuid))
        {
            d.vm_instance_uuid = None;
            d.status = "Active".into();
            d.last_op_date = GsonTime::now();
        }
        json!({})
    }

    /// Recover: only a Destroyed VM can be recovered; nothing changes until the job finishes.
    pub fn recover_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Destroyed" {
            return Err(wrong_state(&vm, "RecoverVmInstance"));
        }
        Ok(())
    }

    /// A recovered VM is Stopped (it kept its IPs, tags and devices while Destroyed).
    pub fn recover_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        self.set_state(uuid, "Stopped");
        self.vm_result(uuid)
    }

    /// `updateVmInstance`: name / description.
    pub fn update_vm(&mut self, uuid: &str, params: &Value) -> Result<Value, ErrorCode> {
        self.existing_vm(uuid)?;
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(n) = &name {
            if n.is_empty() || n.chars().count() > 255 {
                return Err(ErrorCode::invalid_argument(
                    "name must be 1..255 characters",
                ));
            }
        }
        let desc = params
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        let v = self.vm_mut(uuid).expect("checked above");
        if let Some(n) = name {
            v.name = n;
        }
        if desc.is_some() {
            v.description = desc;
        }
        v.last_op_date = GsonTime::now();
        self.vm_result(uuid)
    }
}
