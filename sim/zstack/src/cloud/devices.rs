//! PCI passthrough and mdev (vGPU) devices: attaching, detaching and claiming by spec.

use super::placement::pci_passthrough_free;
use super::{arg_not_found, wrong_state, CloudState};
use crate::error::ErrorCode;
use crate::time::GsonTime;
use serde_json::{json, Value};

impl CloudState {
    /// Can `vm_uuid` take a device on `dev_host`? It must exist and not be destroyed, match the
    /// host's architecture, and not run on or hold devices of another host.
    fn check_device_vm(&self, vm_uuid: &str, dev_host: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(vm_uuid)?;
        if matches!(vm.state.as_str(), "Destroyed" | "Expunging" | "Destroying") {
            return Err(wrong_state(vm, "AttachPciDeviceToVm"));
        }
        let host = self
            .hosts
            .iter()
            .find(|h| h.uuid == dev_host)
            .ok_or_else(|| {
                ErrorCode::internal(format!("host[uuid:{dev_host}] of the device is missing"))
            })?;
        if vm
            .architecture
            .as_deref()
            .is_some_and(|a| a != host.architecture)
        {
            return Err(ErrorCode::operation(format!(
                "the device is on a {} host but vm[uuid:{vm_uuid}] is {}",
                host.architecture,
                vm.architecture.as_deref().unwrap_or("?")
            )));
        }
        if let Some(h) = &vm.host_uuid {
            if h != dev_host {
                return Err(ErrorCode::operation(format!(
                    "vm[uuid:{vm_uuid}] runs on host[uuid:{h}], the device is on host[uuid:{dev_host}]"
                )));
            }
        }
        if let Some(p) = self.device_pin(vm_uuid)? {
            if p != dev_host {
                return Err(ErrorCode::operation(format!(
                    "vm[uuid:{vm_uuid}] already has devices on host[uuid:{p}], the device is on host[uuid:{dev_host}]"
                )));
            }
        }
        Ok(())
    }

    /// `AttachPciDeviceToVm`: claims the device exclusively (SYS.1006 if attached elsewhere).
    pub fn attach_pci(&mut self, dev: &str, vm_uuid: &str) -> Result<(), ErrorCode> {
        let d = self
            .pci_devices
            .iter()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("pciDeviceUuid", dev, "PciDeviceVO"))?
            .clone();
        if d.vm_instance_uuid.as_deref() == Some(vm_uuid) {
            self.existing_vm(vm_uuid)?;
            return Ok(()); // already attached to this VM: idempotent (unconfirmed)
        }
        if let Some(other) = &d.vm_instance_uuid {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] is already attached to vm[uuid:{other}]"
            )));
        }
        if !pci_passthrough_free(&d) {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] cannot be passed through: state[{}] status[{}] virtStatus[{}]",
                d.state, d.status, d.virt_status
            )));
        }
        self.check_device_vm(vm_uuid, &d.host_uuid)?;
        let d = self
            .pci_devices
            .iter_mut()
            .find(|x| x.uuid == dev)
            .expect("found above");
        d.vm_instance_uuid = Some(vm_uuid.into());
        d.status = "Attached".into();
        d.last_op_date = GsonTime::now();
        Ok(())
    }

    /// `DetachPciDeviceFromVm`.
    pub fn detach_pci(&mut self, dev: &str, vm_uuid: &str) -> Result<(), ErrorCode> {
        let d = self
            .pci_devices
            .iter_mut()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("pciDeviceUuid", dev, "PciDeviceVO"))?;
        if d.vm_instance_uuid.as_deref() != Some(vm_uuid) {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] is not attached to vm[uuid:{vm_uuid}]"
            )));
        }
        d.vm_instance_uuid = None;
        d.status = "Active".into();
        d.last_op_date = GsonTime::now();
        Ok(())
    }

    /// The device's `{"inventory": ...}` job result.
    pub fn pci_result(&self, dev: &str) -> Result<Value, ErrorCode> {
        self.pci_devices
            .iter()
            .find(|d| d.uuid == dev)
            .map(|d| json!({ "inventory": d }))
            .ok_or_else(|| ErrorCode::new("SYS.1003", format!("pci device[uuid:{dev}] not found")))
    }

    /// `AddPciDeviceSpecToVmInstance`: claims `n` free devices of the spec on the VM's (last)
    /// host, or on any host of its architecture when it has none yet.
    pub fn add_pci_spec(
        &mut self,
        spec: &str,
        vm_uuid: &str,
        n: usize,
    ) -> Result<Value, ErrorCode> {
        if !self.pci_device_specs.iter().any(|s| s.uuid == spec) {
            return Err(arg_not_found("pciSpecUuid", spec, "PciDeviceSpecVO"));
        }
        let vm = self.existing_vm(vm_uuid)?.clone();
        if n == 0 {
            return Err(ErrorCode::invalid_argument(
                "pciDeviceNumber must be positive",
            ));
        }
        let pinned = match self.device_pin(vm_uuid)? {
            Some(p) => Some(p),
            None => vm.host_uuid.clone(),
        };
        let arch = vm.architecture.clone().unwrap_or_default();
        let host = self
            .hosts
            .iter()
            .filter(|h| h.architecture == arch)
            .filter(|h| pinned.as_deref().is_none_or(|p| p == h.uuid))
            .find(|h| self.free_pci_on(&h.uuid, spec).len() >= n)
            .map(|h| h.uuid.clone())
            .ok_or_else(|| {
                ErrorCode::operation(format!(
                    "no host usable by vm[uuid:{vm_uuid}] has {n} free pci devices of spec[uuid:{spec}]"
                ))
            })?;
        let chosen: Vec<String> = self.free_pci_on(&host, spec).into_iter().take(n).collect();
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| chosen.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(vm_uuid.into());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }
        Ok(
            json!({"inventory": {"vmInstanceUuid": vm_uuid, "pciSpecUuid": spec, "pciDeviceNumber": n,
            "createDate": GsonTime::now(), "lastOpDate": GsonTime::now()}}),
        )
    }

    /// Attach a vGPU slice.
    pub fn attach_mdev(&mut self, dev: &str, vm_uuid: &str) -> Result<Value, ErrorCode> {
        let d = self
            .mdev_devices
            .iter()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("mdevDeviceUuid", dev, "MdevDeviceVO"))?
            .clone();
        if let Some(other) = &d.vm_instance_uuid {
            if other != vm_uuid {
                return Err(ErrorCode::operation(format!(
                    "mdev device[uuid:{dev}] is already attached to vm[uuid:{other}]"
                )));
            }
        } else {
            self.check_device_vm(vm_uuid, &d.host_uuid)?;
        }
        let d = self
            .mdev_devices
            .iter_mut()
            .find(|x| x.uuid == dev)
            .expect("found above");
        d.vm_instance_uuid = Some(vm_uuid.into());
        d.status = "Attached".into();
        d.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": d }))
    }

    /// Detach a vGPU slice.
    pub fn detach_mdev(&mut self, dev: &str, vm_uuid: &str) -> Result<Value, ErrorCode> {
        let d = self
            .mdev_devices
            .iter_mut()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("mdevDeviceUuid", dev, "MdevDeviceVO"))?;
        if d.vm_instance_uuid.as_deref() != Some(vm_uuid) {
            return Err(ErrorCode::operation(format!(
                "mdev device[uuid:{dev}] is not attached to vm[uuid:{vm_uuid}]"
            )));
        }
        d.vm_instance_uuid = None;
        d.status = "Active".into();
        d.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": d }))
    }

    /// Free passthrough devices a VM could use (`candidate-pci-devices`).
    pub fn candidate_pci(&self, vm_uuid: &str) -> Result<Vec<Value>, ErrorCode> {
        let vm = self.existing_vm(vm_uuid)?;
        let pin = self.device_pin(vm_uuid)?.or_else(|| vm.host_uuid.clone());
        Ok(self
            .pci_devices
            .iter()
            .filter(|d| pci_passthrough_free(d))
            .filter(|d| pin.as_deref().is_none_or(|p| p == d.host_uuid))
            .filter(|d| {
                self.hosts.iter().any(|h| {
                    h.uuid == d.host_uuid
                        && Some(h.architecture.as_str()) == vm.architecture.as_deref()
                })
            })
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect())
    }
}
