//! The control-plane endpoint on libvirt: a VIP on the cluster's network that kube-vip (a static
//! pod on every control plane, see the bootstrap renderer) holds by ARP. libvirt has no load
//! balancer object, so kprov reserves the address as a named DHCP host entry
//! (`<host name='kprov-CLUSTER-api' ip='VIP'/>`) outside the network's DHCP range: dnsmasq never
//! leases it to a VM, a second `update` finds it again by name, and `delete` removes it (from a
//! network kprov does not own, too).

use std::net::Ipv4Addr;

use virt::network::Network as VirtNetwork;
use virt::sys;

use super::cloud::LibvirtCloud;
use super::errors::{not_found, verr};
use super::xml::attrs_of;
use super::{cluster_object_name, NetworkMode, PROVIDER};
use crate::{CloudError, CloudResult, EndpointRequest, PlanProblem, Resource, ResourceKind};

/// The only endpoint kind libvirt serves.
pub const KUBE_VIP: &str = "kube-vip";

/// Name of the DHCP host entry reserving a cluster's VIP.
pub fn vip_host_name(cluster: &str) -> String {
    format!("kprov-{cluster}-api")
}

/// What a network's XML says about its addresses.
#[derive(Debug, Default, PartialEq)]
pub(super) struct NetFacts {
    /// Network address and prefix length of the first `<ip>`.
    subnet: Option<(u32, u32)>,
    /// The host's own address on it (the gateway).
    gateway: Option<Ipv4Addr>,
    /// DHCP ranges, inclusive.
    ranges: Vec<(u32, u32)>,
    /// `<host>` entries (DHCP and DNS): name (DHCP only) and address.
    hosts: Vec<(Option<String>, Ipv4Addr)>,
}

impl NetFacts {
    /// Read them from a network's XML.
    pub(super) fn of(xml: &str) -> NetFacts {
        let ip = attrs_of(xml, "ip").into_iter().next();
        let gateway = ip
            .as_ref()
            .and_then(|a| a.get("address")?.parse::<Ipv4Addr>().ok());
        let prefix = ip
            .as_ref()
            .and_then(|a| match (a.get("prefix"), a.get("netmask")) {
                (Some(p), _) => p.parse::<u32>().ok().filter(|p| *p <= 32),
                (None, Some(m)) => Some(u32::from(m.parse::<Ipv4Addr>().ok()?).count_ones()),
                _ => Some(24),
            });
        let subnet = gateway
            .zip(prefix)
            .map(|(g, p)| (u32::from(g) & u32::MAX.checked_shl(32 - p).unwrap_or(0), p));
        let addr = |s: Option<&String>| s.and_then(|s| s.parse::<Ipv4Addr>().ok());
        let ranges = attrs_of(xml, "range")
            .iter()
            .filter_map(|r| Some((addr(r.get("start"))?.into(), addr(r.get("end"))?.into())))
            .collect();
        let hosts = attrs_of(xml, "host")
            .iter()
            .filter_map(|h| Some((h.get("name").cloned(), addr(h.get("ip"))?)))
            .collect();
        NetFacts {
            subnet,
            gateway,
            ranges,
            hosts,
        }
    }

    /// The subnet as `NET/PREFIX`.
    pub(super) fn cidr(&self) -> Option<String> {
        self.subnet
            .map(|(net, prefix)| format!("{}/{prefix}", Ipv4Addr::from(net)))
    }

    /// The address reserved under `name`, if any.
    pub(super) fn reserved(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .map(|(_, ip)| *ip)
    }

    /// Why `ip` cannot be the VIP of `name`'s entry (`None`: it can).
    fn unusable(&self, ip: Ipv4Addr, name: &str) -> Option<String> {
        let Some((net, prefix)) = self.subnet else {
            return Some(format!(
                "{ip} cannot be checked: the network has no IPv4 address"
            ));
        };
        let size = 1u64 << (32 - prefix);
        let v = u32::from(ip);
        if (v as u64) < net as u64 || (v as u64) >= net as u64 + size {
            return Some(format!(
                "{ip} is outside the network's subnet {}/{prefix}",
                Ipv4Addr::from(net)
            ));
        }
        if v == net || v as u64 == net as u64 + size - 1 {
            return Some(format!("{ip} is the subnet's network or broadcast address"));
        }
        if Some(ip) == self.gateway {
            return Some(format!(
                "{ip} is the libvirt host's own address (the gateway)"
            ));
        }
        if let Some((s, e)) = self.ranges.iter().find(|(s, e)| (*s..=*e).contains(&v)) {
            return Some(format!(
                "{ip} is inside the DHCP range {}-{}, so a VM could lease it",
                Ipv4Addr::from(*s),
                Ipv4Addr::from(*e)
            ));
        }
        self.hosts
            .iter()
            .find(|(n, h)| *h == ip && n.as_deref() != Some(name))
            .map(|(n, _)| {
                format!(
                    "{ip} is already reserved in the network (host {})",
                    n.as_deref().unwrap_or("of a DNS entry")
                )
            })
    }

    /// The VIP for `name`: the requested one when usable, else the highest free address
    /// outside the DHCP ranges. `Err((problem, fix))` when there is none.
    pub(super) fn choose(
        &self,
        requested: Option<Ipv4Addr>,
        name: &str,
    ) -> Result<Ipv4Addr, (String, String)> {
        if let Some(ip) = requested {
            return match self.unusable(ip, name) {
                None => Ok(ip),
                Some(why) => Err((
                    format!("spec.controlPlane.vip: {why}"),
                    "choose a free address of the network's subnet outside its DHCP range (kprov's own NAT networks lease .2-.199; .200-.254 are free for VIPs), or leave vip out".into(),
                )),
            };
        }
        let Some((net, prefix)) = self.subnet else {
            return Err((
                "the network has no IPv4 address".into(),
                "use a libvirt network with an IPv4 <ip> and DHCP range, or network: nat".into(),
            ));
        };
        let last = (net as u64 + (1u64 << (32 - prefix)) - 2) as u32;
        (net + 1..=last)
            .rev()
            .map(Ipv4Addr::from)
            .find(|ip| self.unusable(*ip, name).is_none())
            .ok_or_else(|| {
                (
                    "the network's DHCP range covers its whole subnet: no address is left for the API VIP".into(),
                    "shrink the network's DHCP range (virsh net-edit) or set spec.controlPlane.vip to an address you keep free".into(),
                )
            })
    }
}

impl LibvirtCloud {
    /// The libvirt network holding the cluster's VIP; `Err((problem, fix))` for user-mode
    /// networking, where every VM is alone on its own network.
    fn vip_network_name(&self, cluster: &str) -> Result<String, (String, String)> {
        match &self.cfg.network {
            NetworkMode::Nat { .. } => Ok(cluster_object_name(cluster)),
            NetworkMode::Existing(n) => Ok(n.clone()),
            NetworkMode::User { .. } => Err((
                "QEMU user-mode networking puts every VM on a network of its own: no VIP can move between control planes".into(),
                "use network: nat (or an existing libvirt network), or set spec.controlPlane.loadBalancer: none".into(),
            )),
        }
    }

    /// [`crate::Cloud::check_control_plane_endpoint`]: a kind other than kube-vip, user-mode
    /// networking, or (the network existing already) a VIP it cannot hold.
    pub(super) async fn check_endpoint(
        &self,
        req: &EndpointRequest,
    ) -> CloudResult<Vec<PlanProblem>> {
        let problem = |(problem, fix): (String, String)| PlanProblem {
            instance_group: String::new(),
            problem,
            fix,
        };
        if req.kind != KUBE_VIP {
            return Ok(vec![problem((
                format!("libvirt cannot make a {} load balancer", req.kind),
                "use spec.controlPlane.loadBalancer: kube-vip (or none)".into(),
            ))]);
        }
        let net = match self.vip_network_name(&req.cluster) {
            Ok(n) => n,
            Err(p) => return Ok(vec![problem(p)]),
        };
        let requested = requested_vip(req)?;
        let name = vip_host_name(&req.cluster);
        let facts = match (self.network_facts(&net).await?, &self.cfg.network) {
            (Some(f), _) => f,
            // kprov's own NAT network, made by this apply: checked as it will be defined
            (None, NetworkMode::Nat { cidr: Some(cidr) }) => NetFacts::of(&nat_xml_to_be(cidr)),
            (None, NetworkMode::Nat { cidr: None }) if requested.is_some() => {
                return Ok(vec![problem((
                    "spec.controlPlane.vip is set, but the NAT network's subnet is picked when it is made, so the VIP may fall outside it".into(),
                    "report this as a kprov bug: a vip on a NAT network fixes the network's /24".into(),
                ))]);
            }
            (None, _) => return Ok(vec![]),
        };
        Ok(facts
            .choose(requested, &name)
            .err()
            .map(problem)
            .into_iter()
            .collect())
    }

    /// The facts of network `name`, `None` when it does not exist.
    async fn network_facts(&self, name: &str) -> CloudResult<Option<NetFacts>> {
        let name = name.to_string();
        self.with_conn(move |conn| match conn.lookup_network_by_name(&name) {
            Ok(n) => Ok(Some(NetFacts::of(&n.xml_desc(0).unwrap_or_default()))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(verr("looking up network", e)),
        })
        .await
    }

    /// [`crate::Cloud::ensure_control_plane_endpoint`]: reserve the VIP (once) and return
    /// `VIP:port`. The network exists: the executor ensures it first.
    pub(super) async fn ensure_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        let fatal =
            |(problem, fix): (String, String)| CloudError::fatal(PROVIDER, "NoVip", problem, fix);
        if req.kind != KUBE_VIP {
            return Err(fatal((
                format!("libvirt cannot make a {} load balancer", req.kind),
                "use spec.controlPlane.loadBalancer: kube-vip (or none)".into(),
            )));
        }
        let net = self.vip_network_name(&req.cluster).map_err(fatal)?;
        let requested = requested_vip(req)?;
        let name = vip_host_name(&req.cluster);
        let port = req.port;
        self.with_conn(move |conn| {
            let n = conn.lookup_network_by_name(&net).map_err(|e| {
                if not_found(&e) {
                    fatal((
                        format!("libvirt network {net} does not exist"),
                        "run `kprov update cluster --yes` again: it makes the network first".into(),
                    ))
                } else {
                    verr("looking up network", e)
                }
            })?;
            let facts = NetFacts::of(&n.xml_desc(0).unwrap_or_default());
            if let Some(ip) = facts.reserved(&name) {
                return Ok(format!("{ip}:{port}"));
            }
            let ip = facts.choose(requested, &name).map_err(fatal)?;
            let entry = format!("<host name='{name}' ip='{ip}'/>");
            n.update(
                sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                &entry,
                update_flags(&n),
            )
            .map_err(|e| {
                verr(
                    &format!("reserving {ip} for the API VIP in network {net}"),
                    e,
                )
            })?;
            tracing::info!(network = %net, %ip, "API VIP reserved");
            Ok(format!("{ip}:{port}"))
        })
        .await
    }

    /// [`crate::Cloud::control_plane_endpoint`]: the reserved VIP (the API server's port is
    /// the caller's).
    pub(super) async fn reserved_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        let Ok(net) = self.vip_network_name(cluster) else {
            return Ok(None);
        };
        let name = vip_host_name(cluster);
        Ok(self
            .network_facts(&net)
            .await?
            .and_then(|f| f.reserved(&name))
            .map(|ip| ip.to_string()))
    }

    /// The VIP reservation as a resource of the cluster (listed for `delete`).
    pub(super) async fn vip_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let Ok(net) = self.vip_network_name(cluster) else {
            return Ok(vec![]);
        };
        let name = vip_host_name(cluster);
        let facts = self.network_facts(&net).await?;
        Ok(facts
            .and_then(|f| f.reserved(&name))
            .map(|ip| Resource {
                kind: ResourceKind::Vip,
                id: format!("{net}/{ip}"),
                name: name.clone(),
                tags: [(crate::TAG_CLUSTER.to_string(), cluster.to_string())].into(),
            })
            .into_iter()
            .collect())
    }

    /// Remove a VIP reservation (`NETWORK/IP`, named `resource.name`); gone already is done.
    pub(super) fn delete_vip(
        conn: &virt::connect::Connect,
        resource: &Resource,
    ) -> CloudResult<()> {
        let Some((net, ip)) = resource.id.rsplit_once('/') else {
            return Ok(());
        };
        let n = match conn.lookup_network_by_name(net) {
            Ok(n) => n,
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(verr("looking up network", e)),
        };
        let facts = NetFacts::of(&n.xml_desc(0).unwrap_or_default());
        if facts
            .reserved(&resource.name)
            .map(|a| a.to_string())
            .as_deref()
            != Some(ip)
        {
            return Ok(());
        }
        let entry = format!("<host name='{}' ip='{ip}'/>", resource.name);
        n.update(
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            &entry,
            update_flags(&n),
        )
        .map_err(|e| verr(&format!("removing the API VIP {ip} from network {net}"), e))
    }
}

/// The addresses of the NAT network kprov will define on `cidr` (see `network.rs`): gateway .1,
/// DHCP .2-.199.
fn nat_xml_to_be(cidr: &str) -> String {
    let base = cidr.split('/').next().unwrap_or_default();
    let prefix = base.rsplit_once('.').map(|(p, _)| p).unwrap_or(base);
    format!(
        "<network><ip address='{prefix}.1' netmask='255.255.255.0'><dhcp>\
         <range start='{prefix}.2' end='{prefix}.199'/></dhcp></ip></network>"
    )
}

/// Change the running network and its stored definition (only the latter when it is stopped).
fn update_flags(n: &VirtNetwork) -> sys::virNetworkUpdateFlags {
    if n.is_active().unwrap_or(false) {
        sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
    } else {
        sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
    }
}

/// The request's address as IPv4 (the spec's `vip` is one already).
fn requested_vip(req: &EndpointRequest) -> CloudResult<Option<Ipv4Addr>> {
    req.address
        .as_deref()
        .map(|a| {
            a.parse::<Ipv4Addr>().map_err(|_| {
                CloudError::fatal(
                    PROVIDER,
                    "BadVip",
                    format!("{a:?} is not an IPv4 address"),
                    "set spec.controlPlane.vip to an IPv4 address",
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT: &str = "<network><name>kprov.demo</name><forward mode='nat'/>\
        <ip address='192.168.150.1' netmask='255.255.255.0'><dhcp>\
        <range start='192.168.150.2' end='192.168.150.199'/>\
        <host name='kprov-other-api' ip='192.168.150.254'/></dhcp></ip></network>";

    #[test]
    fn the_vip_is_the_highest_free_address_outside_the_dhcp_range() {
        let f = NetFacts::of(NAT);
        assert_eq!(
            f.subnet,
            Some((u32::from(Ipv4Addr::new(192, 168, 150, 0)), 24))
        );
        let name = vip_host_name("demo");
        assert_eq!(f.choose(None, &name), Ok(Ipv4Addr::new(192, 168, 150, 253)));
        let pick = |ip: [u8; 4]| f.choose(Some(Ipv4Addr::from(ip)), &name);
        assert_eq!(
            pick([192, 168, 150, 200]),
            Ok(Ipv4Addr::new(192, 168, 150, 200))
        );
        for (ip, why) in [
            (
                [192, 168, 150, 100],
                "inside the DHCP range 192.168.150.2-192.168.150.199",
            ),
            (
                [192, 168, 150, 254],
                "already reserved in the network (host kprov-other-api)",
            ),
            ([192, 168, 150, 1], "gateway"),
            ([192, 168, 150, 255], "broadcast"),
            (
                [10, 0, 0, 5],
                "outside the network's subnet 192.168.150.0/24",
            ),
        ] {
            let (problem, fix) = pick(ip).expect_err("refused");
            assert!(problem.contains(why), "{problem}");
            assert!(fix.contains("outside its DHCP range"), "{fix}");
        }
        // its own reservation is no conflict
        assert_eq!(
            f.choose(Some(Ipv4Addr::new(192, 168, 150, 254)), "kprov-other-api"),
            Ok(Ipv4Addr::new(192, 168, 150, 254))
        );
        assert_eq!(
            NetFacts::of(NAT).reserved("kprov-other-api"),
            Some(Ipv4Addr::new(192, 168, 150, 254))
        );
    }

    #[test]
    fn a_range_over_the_whole_subnet_leaves_no_vip() {
        let full = NAT.replace("192.168.150.199", "192.168.150.254");
        let (problem, fix) = NetFacts::of(&full)
            .choose(None, "kprov-demo-api")
            .expect_err("no room");
        assert!(problem.contains("whole subnet"), "{problem}");
        assert!(fix.contains("spec.controlPlane.vip"), "{fix}");
    }
}
