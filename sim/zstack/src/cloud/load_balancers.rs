//! Load balancers and their listeners: create and delete, with ZStack's cascades
//! (`plugin/loadBalancer/.../LoadBalancerApiInterceptor.java`, `LoadBalancerManagerImpl.java`,
//! `LoadBalancerBase.java`; facts in docs/providers/zstack-api.md §8).

use super::params::{self, msg};
use super::tags::validate_system_tag_format;
use super::{check_resource_uuid, new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;

/// Parsed `params` of `CreateLoadBalancer` (unknown keys ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateLoadBalancerParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub vip_uuid: Option<String>,
    pub ipv6_vip_uuid: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

/// Parsed `params` of `CreateLoadBalancerListener`; the load balancer comes from the path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateListenerParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub instance_port: Option<i64>,
    pub load_balancer_port: Option<i64>,
    pub protocol: Option<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    /// Accepted and ignored: the MN's create path persists only system tags on a listener.
    pub user_tags: Vec<String>,
}

/// Listener protocols (`validValues` of `protocol`).
const PROTOCOLS: &[&str] = &["udp", "tcp", "http", "https"];

/// udp and the TCP-based protocols are separate port spaces on one load balancer.
fn port_family(protocol: &str) -> &'static str {
    if protocol == "udp" {
        "udp"
    } else {
        "tcp"
    }
}

impl CloudState {
    /// A load balancer by uuid.
    pub(super) fn lb(&self, uuid: &str) -> Option<&LoadBalancer> {
        self.load_balancers.iter().find(|l| l.uuid == uuid)
    }

    /// A listener (with its load balancer's index) by uuid.
    pub(super) fn listener_pos(&self, uuid: &str) -> Option<(usize, usize)> {
        self.load_balancers.iter().enumerate().find_map(|(i, lb)| {
            lb.listeners
                .iter()
                .position(|l| l.uuid == uuid)
                .map(|j| (i, j))
        })
    }

    /// Validates a `CreateLoadBalancer` and inserts it (with a default server group) on its
    /// VIP, which gets a `LoadBalancer` services ref. Returns its uuid.
    pub fn create_load_balancer(
        &mut self,
        p: &CreateLoadBalancerParams,
    ) -> Result<String, ErrorCode> {
        check_resource_uuid(p.resource_uuid.as_deref())?;
        let name = params::trimmed(&p.name);
        let description = params::trimmed(&p.description);
        params::max_length(name.as_deref(), "name", msg::CREATE_LB, 255)?;
        let name = params::mandatory(name, "name", msg::CREATE_LB)?;
        params::max_length(description.as_deref(), "description", msg::CREATE_LB, 2048)?;
        let vip_uuid = params::trimmed(&p.vip_uuid);
        let v6_uuid = params::trimmed(&p.ipv6_vip_uuid);
        for (field, u) in [("vipUuid", &vip_uuid), ("ipv6VipUuid", &v6_uuid)] {
            if let Some(u) = u {
                if !self.vips.iter().any(|v| &v.uuid == u) {
                    return Err(params::not_found(field, u, "VipVO"));
                }
            }
        }
        // LoadBalancerApiInterceptor.validateVipOfLoadBalancer.
        let Some(vip_uuid) = vip_uuid else {
            return Err(match v6_uuid {
                None => ErrorCode::invalid_argument(
                    "could not create loadbalancer, because param of vip and ipv6 vip is empty",
                ),
                // Every simulated VIP is IPv4.
                Some(v6) => ErrorCode::invalid_argument(format!(
                    "cloud not create loadbalancer, because param ipv6VipUuid point to VIP[{v6}] is not ipv6 VIP"
                )),
            });
        };
        if let Some(v6) = &v6_uuid {
            return Err(ErrorCode::invalid_argument(format!(
                "cloud not create loadbalancer, because param ipv6VipUuid point to VIP[{v6}] is not ipv6 VIP"
            )));
        }
        let vip = self
            .vips
            .iter()
            .find(|v| v.uuid == vip_uuid)
            .expect("checked above");
        // VipUseForList.validateNewAdded: only an Eip (or SLB) use conflicts with a load
        // balancer; another load balancer on the same VIP is accepted.
        if let Some(u) = &vip.use_for {
            if u.split(',').any(|t| t == "Eip" || t == "SLB") {
                return Err(ErrorCode::invalid_argument(format!(
                    "the vip[uuid:{vip_uuid}] has been occupied other network service entity[{u}]"
                )));
            }
        }
        let type_ = p.type_.clone().unwrap_or_else(|| "Shared".into());
        if type_ != "Shared" {
            // Only the Shared factory is in the open-source tree (exact error unconfirmed).
            return Err(ErrorCode::internal(format!(
                "cannot find LoadBalancerFactory for type[{type_}]"
            )));
        }
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
        }
        let uuid = self.claim_uuid(p.resource_uuid.as_deref(), "LoadBalancerVO")?;
        self.load_balancers.push(LoadBalancer {
            uuid: uuid.clone(),
            name,
            description,
            server_group_uuid: Some(new_uuid()),
            type_,
            vip_uuid: Some(vip_uuid.clone()),
            ..Default::default()
        });
        self.add_create_tags(&uuid, "LoadBalancerVO", &p.user_tags, &p.system_tags);
        self.acquire_vip(&vip_uuid, &uuid);
        Ok(uuid)
    }

    /// The load balancer's `{"inventory": ...}` (a job result).
    pub fn lb_result(&self, uuid: &str) -> Result<Value, ErrorCode> {
        self.lb(uuid)
            .map(|l| json!({ "inventory": l }))
            .ok_or_else(|| ErrorCode::internal(format!("load balancer[uuid:{uuid}] vanished")))
    }

    /// `DeleteLoadBalancer`: deletes its listeners (with their NIC refs) and releases its VIP,
    /// which stays. A missing load balancer is a success.
    pub fn delete_load_balancer(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        let Some(pos) = self.load_balancers.iter().position(|l| l.uuid == uuid) else {
            params::check_delete_target(uuid)?;
            return Ok(json!({}));
        };
        let lb = self.load_balancers.remove(pos);
        let mut gone: HashSet<String> = HashSet::from([lb.uuid.clone()]);
        gone.extend(lb.listeners.iter().map(|l| l.uuid.clone()));
        self.drop_tags_of(&gone);
        for v in [&lb.vip_uuid, &lb.ipv6_vip_uuid].into_iter().flatten() {
            self.release_vip(v, &lb.uuid);
        }
        Ok(json!({}))
    }

    /// Validates a `CreateLoadBalancerListener` on load balancer `lb` and adds it. Returns its
    /// uuid. User tags are not stored (the MN's create path persists only system tags).
    pub fn create_listener(
        &mut self,
        lb: &str,
        p: &CreateListenerParams,
    ) -> Result<String, ErrorCode> {
        check_resource_uuid(p.resource_uuid.as_deref())?;
        let name = params::trimmed(&p.name);
        let description = params::trimmed(&p.description);
        params::max_length(name.as_deref(), "name", msg::CREATE_LISTENER, 255)?;
        let name = params::mandatory(name, "name", msg::CREATE_LISTENER)?;
        params::max_length(
            description.as_deref(),
            "description",
            msg::CREATE_LISTENER,
            2048,
        )?;
        params::number_range(p.instance_port, "instancePort", 1, 65535)?;
        // `loadBalancerPort` is a Java int: absent reads as 0, out of range.
        let lb_port = p.load_balancer_port.unwrap_or(0);
        params::number_range(Some(lb_port), "loadBalancerPort", 1, 65535)?;
        let protocol = params::trimmed(&p.protocol);
        params::valid_values(
            protocol.as_deref(),
            "protocol",
            msg::CREATE_LISTENER,
            PROTOCOLS,
        )?;
        let Some(i) = self.load_balancers.iter().position(|l| l.uuid == lb) else {
            return Err(params::not_found("loadBalancerUuid", lb, "LoadBalancerVO"));
        };
        // LoadBalancerApiInterceptor: defaults, then the port conflict within a port family.
        let protocol = protocol
            .map(|s| s.to_lowercase())
            .unwrap_or_else(|| "tcp".into());
        let instance_port = p.instance_port.unwrap_or(lb_port);
        if let Some(other) = self.load_balancers[i].listeners.iter().find(|l| {
            i64::from(l.load_balancer_port) == lb_port
                && port_family(&l.protocol) == port_family(&protocol)
        }) {
            return Err(ErrorCode::invalid_argument(format!(
                "conflict loadBalancerPort[{lb_port}], a listener[uuid:{}] has used that port",
                other.uuid
            )));
        }
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
        }
        let uuid = self.claim_uuid(p.resource_uuid.as_deref(), "LoadBalancerListenerVO")?;
        let lbr = &mut self.load_balancers[i];
        lbr.listeners.push(LbListener {
            uuid: uuid.clone(),
            name,
            description,
            load_balancer_uuid: lb.into(),
            instance_port: instance_port as u32,
            load_balancer_port: lb_port as u32,
            protocol,
            ..Default::default()
        });
        lbr.last_op_date = GsonTime::now();
        self.add_create_tags(&uuid, "LoadBalancerListenerVO", &[], &p.system_tags);
        Ok(uuid)
    }

    /// The listener's `{"inventory": ...}` (a job result).
    pub fn listener_result(&self, uuid: &str) -> Result<Value, ErrorCode> {
        self.listener_pos(uuid)
            .map(|(i, j)| json!({ "inventory": self.load_balancers[i].listeners[j] }))
            .ok_or_else(|| ErrorCode::internal(format!("listener[uuid:{uuid}] vanished")))
    }

    /// `DeleteLoadBalancerListener`: removes the listener with its NIC refs and server group;
    /// answers the parent load balancer. A missing listener is a success (`{}`).
    pub fn delete_listener(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        let Some((i, j)) = self.listener_pos(uuid) else {
            params::check_delete_target(uuid)?;
            return Ok(json!({}));
        };
        let lb = &mut self.load_balancers[i];
        lb.listeners.remove(j);
        lb.last_op_date = GsonTime::now();
        let lb_uuid = lb.uuid.clone();
        self.drop_tags_of(&HashSet::from([uuid.to_string()]));
        self.lb_result(&lb_uuid)
    }
}
