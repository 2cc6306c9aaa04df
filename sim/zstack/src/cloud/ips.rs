//! IP address management: free addresses of an L3 and allocation for new NICs and VIPs.

use super::CloudState;
use crate::error::ErrorCode;
use crate::model::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

impl CloudState {
    /// Addresses held on `l3` by NICs (destroyed VMs keep theirs until expunged) and by VIPs:
    /// one pool, as ZStack's UsedIpVO table is.
    fn used_ips(&self, l3: &str) -> HashSet<Ipv4Addr> {
        let nics = self
            .vms
            .iter()
            .flat_map(|v| v.vm_nics.iter())
            .filter(|n| n.l3_network_uuid == l3)
            .filter_map(|n| n.ip.as_deref()?.parse().ok());
        let vips = self
            .vips
            .iter()
            .filter(|v| v.l3_network_uuid == l3)
            .filter_map(|v| v.ip.parse().ok());
        nics.chain(vips).collect()
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

    /// Allocates an address on `l3` for a NIC: `wanted` (from a `staticIp::` tag) or the first
    /// free one; `taken` holds addresses already picked for the same VM.
    pub(super) fn allocate_ip(
        &self,
        l3: &L3Network,
        wanted: Option<&str>,
        taken: &HashSet<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, IpRange), ErrorCode> {
        let wanted_ip = match wanted {
            Some(w) => Some(w.parse::<Ipv4Addr>().map_err(|_| {
                ErrorCode::invalid_argument(format!("staticIp[{w}] is not a valid IPv4 address"))
            })?),
            None => None,
        };
        self.pick_ip(l3, None, wanted_ip, taken).map_err(|e| {
            let w = wanted.unwrap_or_default();
            match e {
                IpPick::OutOfRange => ErrorCode::invalid_argument(format!(
                    "staticIp[{w}] is not in any ip range of l3[uuid:{}]",
                    l3.uuid
                )),
                IpPick::Used => ErrorCode::operation(format!(
                    "the static ip[{w}] on l3[uuid:{}] is already used",
                    l3.uuid
                )),
                IpPick::Exhausted => ErrorCode::operation(format!(
                    "no available ip on l3 network[uuid:{}, name:{}]",
                    l3.uuid, l3.name
                )),
            }
        })
    }

    /// Is `ip` held on `l3` by a NIC or a VIP, or reserved (a range's gateway)?
    pub(super) fn ip_in_use(&self, l3: &L3Network, ip: Ipv4Addr) -> bool {
        self.used_ips(&l3.uuid).contains(&ip)
            || l3.ip_ranges.iter().any(|r| r_gateway(r) == Some(ip))
    }

    /// The allocator NICs and VIPs share: `wanted`, else the first free address, from the
    /// ranges of `l3` (only range `range` when given), skipping gateways, addresses NICs and
    /// VIPs hold, and `taken`.
    pub(super) fn pick_ip(
        &self,
        l3: &L3Network,
        range: Option<&str>,
        wanted: Option<Ipv4Addr>,
        taken: &HashSet<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, IpRange), IpPick> {
        let mut used = self.used_ips(&l3.uuid);
        used.extend(taken.iter().copied());
        let ranges = l3
            .ip_ranges
            .iter()
            .filter(|r| range.is_none_or(|u| r.uuid == u));
        if let Some(ip) = wanted {
            let range = ranges
                .clone()
                .find(|r| bounds(r).is_some_and(|(s, e)| (s..=e).contains(&u32::from(ip))))
                .ok_or(IpPick::OutOfRange)?;
            if used.contains(&ip) || r_gateway(range) == Some(ip) {
                return Err(IpPick::Used);
            }
            return Ok((ip, range.clone()));
        }
        for r in ranges {
            let Some((s, e)) = bounds(r) else { continue };
            for a in s..=e {
                let ip = Ipv4Addr::from(a);
                if Some(ip) != r_gateway(r) && !used.contains(&ip) {
                    return Ok((ip, r.clone()));
                }
            }
        }
        Err(IpPick::Exhausted)
    }
}

/// Why [`CloudState::pick_ip`] found no address; each caller words it as its API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpPick {
    /// The wanted address is in no range.
    OutOfRange,
    /// The wanted address is held by a NIC or a VIP, or is a gateway.
    Used,
    /// Every address is taken.
    Exhausted,
}

/// A range's first and last address as numbers (`None` for a malformed range).
fn bounds(r: &IpRange) -> Option<(u32, u32)> {
    let s = r.start_ip.parse::<Ipv4Addr>().ok()?;
    let e = r.end_ip.parse::<Ipv4Addr>().ok()?;
    Some((u32::from(s), u32::from(e)))
}

/// The range's gateway, never handed to a NIC.
fn r_gateway(r: &IpRange) -> Option<Ipv4Addr> {
    r.gateway.parse().ok()
}
