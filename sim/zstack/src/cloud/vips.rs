//! `CreateVip` / `DeleteVip`: virtual IPs taken from an L3's ranges, from the pool NIC
//! addresses come from (`plugin/vip/.../VipApiInterceptor.java`, `VipManagerImpl.java`,
//! `VipBase.java`; facts in docs/providers/zstack-api.md §8).

use super::ips::IpPick;
use super::params::{self, msg};
use super::tags::validate_system_tag_format;
use super::{check_resource_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Parsed `params` of `CreateVip` (unknown keys ignored); tags may come from the body's top
/// level too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateVipParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub l3_network_uuid: Option<String>,
    pub allocator_strategy: Option<String>,
    pub ip_range_uuid: Option<String>,
    pub required_ip: Option<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

/// IP allocator strategies a VIP create accepts (`IpAllocatorType`; the list is unconfirmed).
const ALLOCATOR_STRATEGIES: &[&str] = &[
    "RandomIpAllocatorStrategy",
    "FirstAvailableIpAllocatorStrategy",
];

impl CloudState {
    /// Validates a `CreateVip` in the MN's order and inserts the VIP with its address claimed.
    /// Returns its uuid; nothing changes when it fails.
    pub fn create_vip(&mut self, p: &CreateVipParams) -> Result<String, ErrorCode> {
        check_resource_uuid(p.resource_uuid.as_deref())?;
        let name = params::trimmed(&p.name);
        let description = params::trimmed(&p.description);
        params::max_length(name.as_deref(), "name", msg::CREATE_VIP, 255)?;
        let name = params::mandatory(name, "name", msg::CREATE_VIP)?;
        params::max_length(description.as_deref(), "description", msg::CREATE_VIP, 2048)?;
        let l3_uuid = params::mandatory(
            params::trimmed(&p.l3_network_uuid),
            "l3NetworkUuid",
            msg::CREATE_VIP,
        )?;
        let l3 = self
            .l3_networks
            .iter()
            .find(|l| l.uuid == l3_uuid)
            .ok_or_else(|| params::not_found("l3NetworkUuid", &l3_uuid, "L3NetworkVO"))?
            .clone();
        let range = params::trimmed(&p.ip_range_uuid);
        if let Some(r) = &range {
            if !self
                .l3_networks
                .iter()
                .any(|l| l.ip_ranges.iter().any(|x| &x.uuid == r))
            {
                return Err(params::not_found("ipRangeUuid", r, "IpRangeVO"));
            }
        }
        if let Some(s) = &p.allocator_strategy {
            if !ALLOCATOR_STRATEGIES.contains(&s.as_str()) {
                return Err(ErrorCode::invalid_argument(format!(
                    "unsupported ip allocation strategy[{s}]"
                )));
            }
        }
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
        }
        let (ip, r) =
            self.allocate_vip_ip(&l3, range.as_deref(), params::trimmed(&p.required_ip))?;
        let uuid = self.claim_uuid(p.resource_uuid.as_deref(), "VipVO")?;
        self.vips.push(Vip {
            uuid: uuid.clone(),
            name,
            description,
            l3_network_uuid: l3.uuid.clone(),
            ip: ip.to_string(),
            gateway: r.gateway.clone(),
            netmask: r.netmask.clone(),
            prefix_len: r.prefix_len,
            ..Default::default()
        });
        self.add_create_tags(&uuid, "VipVO", &p.user_tags, &p.system_tags);
        Ok(uuid)
    }

    /// The VIP's address: `requiredIp` checked as VipApiInterceptor then the allocator do, or
    /// the first free one of the L3 (or of range `range`).
    fn allocate_vip_ip(
        &self,
        l3: &L3Network,
        range: Option<&str>,
        required: Option<String>,
    ) -> Result<(Ipv4Addr, IpRange), ErrorCode> {
        let Some(req) = required else {
            return self.pick_ip(l3, range, None, &HashSet::new()).map_err(|_| {
                ErrorCode::new(
                    "L3.1000",
                    format!(
                        "IP allocator strategy[RandomIpAllocatorStrategy] failed, because no ip is available in this l3Network[name:{}, uuid:{}]",
                        l3.name, l3.uuid
                    ),
                )
            });
        };
        // The simulator's L3s are IPv4 only: an IPv6 address fails the version check (its
        // message says IPv4 either way).
        if req.parse::<Ipv6Addr>().is_ok() {
            return Err(ErrorCode::invalid_argument(format!(
                "requiredIp[{req}] is not in valid IPv4 mediaType"
            )));
        }
        if self
            .vips
            .iter()
            .any(|v| v.l3_network_uuid == l3.uuid && v.ip == req)
        {
            return Err(ErrorCode::operation(format!(
                "there is already a vip[{req}] on l3Network[uuid:{}]",
                l3.uuid
            )));
        }
        // A malformed address passes the interceptor; the allocator's parser then throws, an
        // internal error (the exact wrapping text is unconfirmed).
        let Ok(ip) = req.parse::<Ipv4Addr>() else {
            return Err(ErrorCode::internal(format!(
                "{req} is not a valid ipv4 address"
            )));
        };
        if self.ip_in_use(l3, ip) {
            return Err(ErrorCode::operation(format!(
                "required ip address [{req}] is already used"
            )));
        }
        self.pick_ip(l3, range, Some(ip), &HashSet::new()).map_err(|e| match e {
            IpPick::OutOfRange => ErrorCode::new(
                "L3.1000",
                format!(
                    "cannot find ip range that has ip[{req}] in l3Network[uuid:{}]",
                    l3.uuid
                ),
            ),
            _ => ErrorCode::new(
                "L3.1000",
                format!(
                    "IP allocator strategy[RandomIpAllocatorStrategy] failed, because IP[{req}] is not available"
                ),
            ),
        })
    }

    /// The VIP's `{"inventory": ...}` job result.
    pub fn vip_result(&self, uuid: &str) -> Result<Value, ErrorCode> {
        self.vips
            .iter()
            .find(|v| v.uuid == uuid)
            .map(|v| json!({ "inventory": v }))
            .ok_or_else(|| {
                ErrorCode::internal(format!("vip[uuid:{uuid}] vanished while being created"))
            })
    }

    /// `DeleteVip`: cascades to every load balancer on it (with their listeners), then removes
    /// the VIP and its tags; its address returns to the pool. A missing VIP is a success.
    pub fn delete_vip(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        let Some(vip) = self.vips.iter().find(|v| v.uuid == uuid) else {
            params::check_delete_target(uuid)?;
            return Ok(json!({}));
        };
        if vip.system {
            return Err(ErrorCode::invalid_argument(
                "system vip can not be deleted by API message",
            ));
        }
        let lbs: Vec<String> = self
            .load_balancers
            .iter()
            .filter(|l| {
                l.vip_uuid.as_deref() == Some(uuid) || l.ipv6_vip_uuid.as_deref() == Some(uuid)
            })
            .map(|l| l.uuid.clone())
            .collect();
        for lb in lbs {
            self.delete_load_balancer(&lb)?;
        }
        self.vips.retain(|v| v.uuid != uuid);
        self.drop_tags_of(&HashSet::from([uuid.to_string()]));
        Ok(json!({}))
    }

    /// Adds `services` (a load balancer's uuid) to the VIP's `servicesRefs` as `LoadBalancer`.
    pub(super) fn acquire_vip(&mut self, vip: &str, service: &str) {
        if let Some(v) = self.vips.iter_mut().find(|v| v.uuid == vip) {
            v.services_refs.push(VipServicesRef {
                uuid: service.into(),
                service_type: "LoadBalancer".into(),
                vip_uuid: vip.into(),
                ..Default::default()
            });
            refresh_use_for(v);
        }
    }

    /// Removes `service` from the VIP's `servicesRefs`; with none left the VIP is unbound
    /// (`useFor`, `serviceProvider` and `peerL3NetworkUuids` back to null).
    pub(super) fn release_vip(&mut self, vip: &str, service: &str) {
        if let Some(v) = self.vips.iter_mut().find(|v| v.uuid == vip) {
            v.services_refs.retain(|r| r.uuid != service);
            refresh_use_for(v);
            if v.services_refs.is_empty() {
                v.service_provider = None;
                v.peer_l3_network_uuids = None;
            }
        }
    }
}

/// `useFor` = the distinct service types of the refs, comma-joined (`VipUseForList`); null when
/// none.
fn refresh_use_for(v: &mut Vip) {
    let mut types: Vec<&str> = Vec::new();
    for r in &v.services_refs {
        if !types.contains(&r.service_type.as_str()) {
            types.push(&r.service_type);
        }
    }
    v.use_for = (!types.is_empty()).then(|| types.join(","));
    v.last_op_date = GsonTime::now();
}
