//! IP address management: free addresses of an L3 and allocation for new NICs.

use super::CloudState;
use crate::error::ErrorCode;
use crate::model::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

impl CloudState {
    /// Addresses the NICs on `l3` hold (destroyed VMs keep theirs until expunged).
    fn used_ips(&self, l3: &str) -> HashSet<Ipv4Addr> {
        self.vms
            .iter()
            .flat_map(|v| v.vm_nics.iter())
            .filter(|n| n.l3_network_uuid == l3)
            .filter_map(|n| n.ip.as_deref()?.parse().ok())
            .collect()
    }

    /// Free addresses of an L3, in range order (`GET /l3-networks/{uuid}/ip/free`).
    pub fn free_ips(&self, l3: &L3Network, start: usize, limit: usize) -> Vec<Value> {
        let used = self.used_ips(&l3.uuid);
        let mut out = Vec::new();
        let mut skipped = 0;
        for r in &l3.ip_ranges {
            let (Ok(s), Ok(e), Ok(g)) = (
                r.start_ip.parse::<Ipv4Addr>(),
                r.end_ip.parse::<Ipv4Addr>(),
                r.gateway.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            for a in u32::from(s)..=u32::from(e) {
                let ip = Ipv4Addr::from(a);
                if ip == g || used.contains(&ip) {
                    continue;
                }
                if skipped < start {
                    skipped += 1;
                    continue;
                }
                if out.len() >= limit {
                    return out;
                }
                out.push(
                    json!({"ipRangeUuid": r.uuid, "l3NetworkUuid": l3.uuid, "ip": ip.to_string(),
                    "netmask": r.netmask, "gateway": r.gateway}),
                );
            }
        }
        out
    }

    /// Allocates an address on `l3`: `wanted` (from a `staticIp::` tag) or the first free one.
    pub(super) fn allocate_ip(
        &self,
        l3: &L3Network,
        wanted: Option<&str>,
        taken: &HashSet<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, IpRange), ErrorCode> {
        let mut used = self.used_ips(&l3.uuid);
        used.extend(taken.iter().copied());
        if let Some(w) = wanted {
            let ip: Ipv4Addr = w.parse().map_err(|_| {
                ErrorCode::invalid_argument(format!("staticIp[{w}] is not a valid IPv4 address"))
            })?;
            let range = l3
                .ip_ranges
                .iter()
                .find(|r| {
                    let (Ok(s), Ok(e)) =
                        (r.start_ip.parse::<Ipv4Addr>(), r.end_ip.parse::<Ipv4Addr>())
                    else {
                        return false;
                    };
                    (u32::from(s)..=u32::from(e)).contains(&u32::from(ip))
                })
                .ok_or_else(|| {
                    ErrorCode::invalid_argument(format!(
                        "staticIp[{w}] is not in any ip range of l3[uuid:{}]",
                        l3.uuid
                    ))
                })?;
            if used.contains(&ip) || r_gateway(range) == Some(ip) {
                return Err(ErrorCode::operation(format!(
                    "the static ip[{w}] on l3[uuid:{}] is already used",
                    l3.uuid
                )));
            }
            return Ok((ip, range.clone()));
        }
        for r in &l3.ip_ranges {
            let (Ok(s), Ok(e)) = (r.start_ip.parse::<Ipv4Addr>(), r.end_ip.parse::<Ipv4Addr>())
            else {
                continue;
            };
            for a in u32::from(s)..=u32::from(e) {
                let ip = Ipv4Addr::from(a);
                if Some(ip) != r_gateway(r) && !used.contains(&ip) {
                    return Ok((ip, r.clone()));
                }
            }
        }
        Err(ErrorCode::operation(format!(
            "no available ip on l3 network[uuid:{}, name:{}]",
            l3.uuid, l3.name
        )))
    }
}

/// The range's gateway, never handed to a NIC.
fn r_gateway(r: &IpRange) -> Option<Ipv4Addr> {
    r.gateway.parse().ok()
}
