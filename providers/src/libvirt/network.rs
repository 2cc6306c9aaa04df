//! The cluster network: QEMU user-mode networking, an existing libvirt network, or a NAT
//! network `kprov.CLUSTER` made on a free 192.168.100-199.0/24 (DHCP leases .2-.199, the rest
//! is kept for VIPs); and a network's CIDR.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::cloud::LibvirtCloud;
use super::errors::{not_found, verr};
use super::xml::*;
use super::{cluster_object_name, NetworkMode, PROVIDER};
use crate::{CloudError, CloudResult, Network, NetworkRequest};

impl LibvirtCloud {
    /// The IPv4 CIDR of a libvirt network's XML (its first `<ip>`).
    pub(super) fn network_cidr(xml: &str) -> Option<String> {
        super::endpoint::NetFacts::of(xml).cidr()
    }

    /// Find or make the cluster network ([`crate::Cloud::ensure_network`]).
    pub(super) async fn ensure_cluster_network(
        &self,
        req: &NetworkRequest,
    ) -> CloudResult<Network> {
        match &self.cfg.network {
            NetworkMode::User { .. } => Ok(Network {
                id: "user".into(),
                name: "user (QEMU user-mode, restrict=on)".into(),
                cidr: Some("10.0.2.0/24".into()),
                owned: false,
            }),
            NetworkMode::Existing(name) => {
                let name = name.clone();
                self.with_conn(move |conn| {
                    let n = conn.lookup_network_by_name(&name).map_err(|e| {
                        if not_found(&e) {
                            CloudError::fatal(
                                PROVIDER,
                                "NoNetwork",
                                format!("libvirt network {name:?} does not exist"),
                                "create it or use network: nat",
                            )
                        } else {
                            verr("looking up network", e)
                        }
                    })?;
                    if !n.is_active().unwrap_or(false) {
                        n.create()
                            .map_err(|e| verr(&format!("starting network {name}"), e))?;
                    }
                    let x = n.xml_desc(0).unwrap_or_default();
                    Ok(Network {
                        id: name.clone(),
                        cidr: Self::network_cidr(&x),
                        name,
                        owned: false,
                    })
                })
                .await
            }
            NetworkMode::Nat { cidr } => {
                let name = cluster_object_name(&req.cluster);
                let cidr = cidr.clone();
                self.with_conn(move |conn| {
                    let n = match conn.lookup_network_by_name(&name) {
                        Ok(n) => n,
                        Err(e) if not_found(&e) => {
                            let taken: BTreeSet<String> = conn
                                .list_all_networks(0)
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|n| Self::network_cidr(&n.xml_desc(0).unwrap_or_default()))
                                .collect();
                            let h = Sha256::digest(name.as_bytes());
                            let cidr = match cidr {
                                Some(c) => c,
                                None => (0..100u32)
                                    .map(|i| format!("192.168.{}.0/24", 100 + (h[0] as u32 + i) % 100))
                                    .find(|c| !taken.contains(c))
                                    .ok_or_else(|| CloudError::fatal(PROVIDER, "NoFreeCidr", "no free 192.168.100-199.0/24 for the NAT network", "remove an unused libvirt network on 192.168.100-199.0/24, set spec.controlPlane.vip (its /24 becomes the network's), or use an existing network"))?,
                            };
                            let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap_or("").parse().map_err(|_| {
                                CloudError::fatal(PROVIDER, "BadCidr", format!("NAT CIDR {cidr:?} is not an IPv4 /24"), "use e.g. 192.168.150.0/24")
                            })?;
                            let o = base.octets();
                            let at = |last: u8| std::net::Ipv4Addr::new(o[0], o[1], o[2], last).to_string();
                            let doc = NetworkXml {
                                name: name.clone(),
                                forward: Forward { mode: "nat".into() },
                                bridge: Bridge { name: format!("kp{}", &hex::encode(h)[..10]), stp: "on".into(), delay: "0".into() },
                                ip: Ip { address: at(1), netmask: "255.255.255.0".into(), dhcp: Dhcp { range: Range { start: at(2), end: at(199) } } },
                            };
                            let x = to_xml(&doc).map_err(|e| CloudError::Protocol { provider: PROVIDER, message: e.to_string() })?;
                            let n = conn.define_network_xml(&x).map_err(|e| verr(&format!("defining network {name}"), e))?;
                            let _ = n.set_autostart(true);
                            n
                        }
                        Err(e) => return Err(verr("looking up network", e)),
                    };
                    if !n.is_active().unwrap_or(false) {
                        n.create().map_err(|e| {
                            let mut err = verr(&format!("starting network {name}"), e);
                            if let CloudError::Fatal { fix, .. } = &mut err {
                                *fix = "a NAT network needs dnsmasq on the libvirt host (Debian: dnsmasq-base)".into();
                            }
                            err
                        })?;
                    }
                    let x = n.xml_desc(0).unwrap_or_default();
                    Ok(Network { id: name.clone(), cidr: Self::network_cidr(&x), name, owned: true })
                })
                .await
            }
        }
    }
}
