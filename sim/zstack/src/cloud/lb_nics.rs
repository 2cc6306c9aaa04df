//! VM NICs behind load-balancer listeners: `AddVmNicToLoadBalancer`,
//! `RemoveVmNicFromLoadBalancer`, and what VM lifecycle events do to the refs
//! (`LoadBalancerApiInterceptor.java`, `LoadBalancerBase.java`, `LoadBalancerExtension.java`).

use super::params::{self, msg};
use super::{new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use serde_json::Value;

/// The network service a NIC's L3 must offer to be a load-balancer backend.
const LB_SERVICE: &str = "LoadBalancer";

/// The provider type the simulator reports on a VIP once a backend is bound (the VPC virtual
/// router's; unconfirmed).
const LB_PROVIDER: &str = "vrouter";

impl CloudState {
    /// A NIC (of a VM in any state until expunged) by uuid.
    pub(super) fn nic(&self, uuid: &str) -> Option<&VmNic> {
        self.vms
            .iter()
            .flat_map(|v| v.vm_nics.iter())
            .find(|n| n.uuid == uuid)
    }

    /// Checks `vmNicUuids` (nonempty, all known NICs); returns them trimmed.
    fn check_nic_list(&self, nics: Option<&[String]>, msg: &str) -> Result<Vec<String>, ErrorCode> {
        let nics: Vec<String> = params::mandatory(nics, "vmNicUuids", msg)?
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        params::nonempty(&nics, "vmNicUuids")?;
        let missing: Vec<String> = nics
            .iter()
            .filter(|u| self.nic(u).is_none())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(params::not_found_list("vmNicUuids", &missing, "VmNicVO"));
        }
        Ok(nics)
    }

    /// `AddVmNicToLoadBalancer`: validates in the interceptor's order, creates the listener's
    /// default server group on first use and adds the NICs as `Active` refs. Answers the
    /// listener.
    pub fn add_vm_nics(
        &mut self,
        listener: &str,
        nics: Option<&[String]>,
    ) -> Result<Value, ErrorCode> {
        let nics = self.check_nic_list(nics, msg::ADD_NIC)?;
        let Some((i, j)) = self.listener_pos(listener) else {
            return Err(params::not_found(
                "listenerUuid",
                listener,
                "LoadBalancerListenerVO",
            ));
        };
        let mut l3s: Vec<String> = Vec::new();
        for u in &nics {
            let l3 = self.nic(u).expect("checked above").l3_network_uuid.clone();
            if !l3s.contains(&l3) {
                l3s.push(l3);
            }
        }
        let mut without: Vec<String> = l3s
            .iter()
            .filter(|u| {
                !self.l3_networks.iter().any(|l| {
                    &l.uuid == *u
                        && l.network_services
                            .iter()
                            .any(|s| s.network_service_type == LB_SERVICE)
                })
            })
            .cloned()
            .collect();
        if !without.is_empty() {
            without.sort();
            return Err(ErrorCode::operation(format!(
                "L3 networks[uuids:{}] of the vm nics has no network service[{LB_SERVICE}] enabled",
                params::java_list(&without)
            )));
        }
        let l = &self.load_balancers[i].listeners[j];
        if let Some(group) = &l.server_group_uuid {
            if let Some(dup) = nics
                .iter()
                .find(|u| l.vm_nic_refs.iter().any(|r| &r.vm_nic_uuid == *u))
            {
                return Err(ErrorCode::operation(format!(
                    "could not attach vm nic to load balancer listener, because the vm nic[uuid:{dup}] are already on the default server group [uuid:{group}]"
                )));
            }
        }
        self.lb_ref_counter += 1;
        let group_ref_id = self.lb_ref_counter;
        let first_id = self.lb_ref_counter + 1;
        self.lb_ref_counter += nics.len() as u64;
        let lb = &mut self.load_balancers[i];
        let l = &mut lb.listeners[j];
        if l.server_group_uuid.is_none() {
            let group = new_uuid();
            l.server_group_refs.push(LbServerGroupRef {
                id: group_ref_id,
                listener_uuid: l.uuid.clone(),
                server_group_uuid: group.clone(),
                ..Default::default()
            });
            l.server_group_uuid = Some(group);
        }
        let mut seen = Vec::new();
        for (k, u) in nics.iter().enumerate() {
            if seen.contains(u) {
                continue;
            }
            seen.push(u.clone());
            l.vm_nic_refs.push(LbVmNicRef {
                id: first_id + k as u64,
                listener_uuid: l.uuid.clone(),
                vm_nic_uuid: u.clone(),
                status: "Active".into(),
                ..Default::default()
            });
        }
        l.last_op_date = GsonTime::now();
        let vip = lb.vip_uuid.clone();
        if let Some(v) = self.vips.iter_mut().find(|v| Some(&v.uuid) == vip.as_ref()) {
            // The backend binds the VIP: provider and peer (guest) L3s.
            v.service_provider = Some(LB_PROVIDER.into());
            let peers = v.peer_l3_network_uuids.get_or_insert_with(Vec::new);
            for l3 in l3s {
                if !peers.contains(&l3) {
                    peers.push(l3);
                }
            }
            v.last_op_date = GsonTime::now();
        }
        self.listener_result(listener)
    }

    /// `RemoveVmNicFromLoadBalancer`: removes the NICs' refs (a NIC not on the listener is a
    /// no-op). A listener that never had a NIC has no server group: SYS.1006. Answers the load
    /// balancer.
    pub fn remove_vm_nics(
        &mut self,
        listener: &str,
        nics: Option<&[String]>,
    ) -> Result<Value, ErrorCode> {
        let nics = self.check_nic_list(nics, msg::REMOVE_NIC)?;
        let Some((i, j)) = self.listener_pos(listener) else {
            return Err(params::not_found(
                "listenerUuid",
                listener,
                "LoadBalancerListenerVO",
            ));
        };
        let lb = &mut self.load_balancers[i];
        let l = &mut lb.listeners[j];
        if l.server_group_uuid.is_none() {
            return Err(ErrorCode::operation(format!(
                "could not detach vm nic to load balancer listener[uuid:{listener}], because default server group for listener has been deleted"
            )));
        }
        let before = l.vm_nic_refs.len();
        l.vm_nic_refs.retain(|r| !nics.contains(&r.vm_nic_uuid));
        if l.vm_nic_refs.len() != before {
            l.last_op_date = GsonTime::now();
        }
        let lb_uuid = lb.uuid.clone();
        self.lb_result(&lb_uuid)
    }

    /// Sets the status of every listener ref to one of the VM's NICs: `Inactive` when the VM
    /// stops (`LoadBalancerDeactiveVmNicMsg`), `Active` when it starts again.
    pub(super) fn set_lb_nic_status(&mut self, vm: &str, status: &str) {
        let Some(nics) = self.vm_nic_uuids(vm) else {
            return;
        };
        for r in self.lb_refs_mut().filter(|r| nics.contains(&r.vm_nic_uuid)) {
            if r.status != status {
                r.status = status.into();
                r.last_op_date = GsonTime::now();
            }
        }
    }

    /// Removes the VM's NICs from every listener (`LoadBalancerRemoveVmNicMsg` on destroy; the
    /// refs' foreign key cascades on expunge).
    pub(super) fn remove_lb_nics_of(&mut self, vm: &str) {
        let Some(nics) = self.vm_nic_uuids(vm) else {
            return;
        };
        for l in self
            .load_balancers
            .iter_mut()
            .flat_map(|lb| lb.listeners.iter_mut())
        {
            l.vm_nic_refs.retain(|r| !nics.contains(&r.vm_nic_uuid));
        }
    }

    fn vm_nic_uuids(&self, vm: &str) -> Option<Vec<String>> {
        self.vm(vm)
            .map(|v| v.vm_nics.iter().map(|n| n.uuid.clone()).collect())
    }

    fn lb_refs_mut(&mut self) -> impl Iterator<Item = &mut LbVmNicRef> {
        self.load_balancers
            .iter_mut()
            .flat_map(|lb| lb.listeners.iter_mut())
            .flat_map(|l| l.vm_nic_refs.iter_mut())
    }
}
